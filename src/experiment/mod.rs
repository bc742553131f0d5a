//! The experiment file as written. (Parsing being written.)
mod entry;
mod located;
pub mod spec;
pub mod values;

pub use located::Located;
pub use spec::*;
pub use values::{
    Cmp, DurationThreshold, HumanDuration, Percent, PercentThreshold, Rate, ValueError,
};
