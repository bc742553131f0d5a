//! The experiment file as written. Nothing is resolved here (which processes, which seed): that
//! is `plan`.
//!
//! Loading is [`load`] (`load.rs`): [`parse`] reads the text (syntax and shape, with
//! locations), then `validate` checks its meaning; both report [`Diagnostic`]s (`diagnostic.rs`).
//! The file's types are in [`spec`], with their own files for the sections that carry their own
//! checks ([`gates`], [`proxies`], [`stop`]) and for fault entries (`entry.rs`), which are read
//! by kind key; value types like `250ms` and `200/s` are in [`values`], URLs in [`url`]. Each
//! file imports only files below it.

mod diagnostic;
pub(crate) mod entry;
pub mod gates;
mod load;
mod located;
pub mod parse;
pub mod prometheus;
pub mod proxies;
pub mod spec;
pub mod stop;
mod tolerant;
pub mod url;
mod validate;
pub mod values;
pub mod vars;

pub use diagnostic::{Diagnostic, ExperimentError};
pub use load::{load, load_with, parse_str, parse_str_with};
pub use located::Located;
pub use spec::*;
pub use stop::{StopWhen, Sustained};
pub use values::{
    Cmp, DurationThreshold, HumanDuration, Percent, PercentThreshold, Rate, ValueError,
};
pub use vars::{Vars, VarsError};

/// The JSON Schema (draft-07) of the experiment format, for editors.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<Experiment>();
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}
