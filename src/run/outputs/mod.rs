//! The files jobs write besides their main results: plots, `sae hist`'s files and top
//! contexts, and the `sae categories` report.

pub mod attribution_parts;
pub mod attribution_report;
pub mod categories_report;
pub mod hist_files;
pub mod plots;
pub mod top_examples;
