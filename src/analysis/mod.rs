//! Measuring SAEs on data: reconstruction metrics and feature statistics.

pub mod eval;
pub mod plots;
