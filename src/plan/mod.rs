//! The experiment resolved. (Being written.)
pub mod select;
