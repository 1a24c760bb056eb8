//! The job layer, above `sae` (the model and its training step) and `analysis` (what is
//! computed from SAEs and data): one job per command, each taking a typed request whose
//! defaults it resolves against the data, and returning a report; the files each job writes
//! (`outputs/`), merges of split jobs (`merge.rs`) and progress bars.

pub mod attribute;
pub mod categories;
pub mod encode;
pub mod eval;
pub mod frontier;
pub mod hist;
pub mod inputs;
pub mod merge;
pub mod outputs;
pub mod progress;
pub mod synth_components;
pub mod train;
