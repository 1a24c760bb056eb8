//! The job layer, above `sae` (the model and its training step) and `analysis` (metrics,
//! histograms, plots): whole runs with their run directories, checkpoints, exports, plots and
//! progress.

pub mod frontier;
pub mod parts;
pub mod sweep;
pub mod train;
