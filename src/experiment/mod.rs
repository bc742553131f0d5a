//! The experiment file as written: serde structs ([`spec`]), value types like `250ms` and
//! `200/s` ([`values`]), parsing with locations ([`parse`]) and semantic checks ([`validate`]).
//! Nothing is resolved here (which processes, which seed): that is `plan`.

mod entry;
pub mod gates;
mod located;
pub mod parse;
pub mod proxies;
pub mod spec;
pub mod stop;
mod validate;
pub mod values;

pub use located::Located;
pub use parse::{Diagnostic, ExperimentError, load, parse_str};
pub use spec::*;
pub use stop::{StopWhen, Sustained};
pub use values::{
    Cmp, DurationThreshold, HumanDuration, Percent, PercentThreshold, Rate, ValueError,
};

/// The JSON Schema (draft-07) of the experiment format, for editors.
pub fn json_schema() -> serde_json::Value {
    let generator = schemars::generate::SchemaSettings::draft07().into_generator();
    let schema = generator.into_root_schema_for::<Experiment>();
    serde_json::to_value(schema).unwrap_or(serde_json::Value::Null)
}
