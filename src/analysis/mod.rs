//! Measuring SAEs on data: reconstruction metrics and feature statistics.

pub mod attribute;
pub mod categories;
pub mod encode;
pub mod eval;
pub mod hist;
pub mod scan;
