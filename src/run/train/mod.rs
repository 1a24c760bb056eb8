//! The `sae train` job: streams shards through the GPU trainers of one or several runs, logs
//! metrics, checkpoints atomically, evaluates on held-out data and exports sparsify and
//! SAELens checkpoints.
//!
//! - `request.rs`: what the user asked, resolved against the data once into a plan.
//! - `config.rs`: a run's configuration (`config.json`). `run_dir.rs`: its directory.
//! - `data.rs`: the shards, the training stream, b_dec's sample.
//! - `group.rs`: the runs of a group checked, written and started (new or resumed).
//! - `member.rs`: one run's trainer, log and checkpoints. `metrics_log.rs`: `metrics.jsonl`.
//! - `job.rs`: a group of runs trained on the same batches, from set-up to finish.
//! - `train_loop.rs`: the loop. `finish.rs`: held-out figures, exports, summary, plots.
//! - `sweep.rs`: sweeps, their members and `sweep.json`.

mod config;
mod data;
mod finish;
mod group;
mod job;
mod member;
mod metrics_log;
mod report;
mod request;
mod run_dir;
mod sweep;
mod train_loop;

pub use config::{
    default_format, AuxKSettings, BDecInit, ComputeConfig, DataConfig, ExportFormat, InitConfig,
    OptimConfig, OutputConfig, TrainConfig,
};
pub use group::{gpu_bytes_needed, MemberSpec};
pub use job::{train, train_group};
pub use report::TrainReport;
pub use request::{resolve, TrainOutcome, TrainPlan, TrainRequest};
pub use run_dir::{refuse_existing_run, RunOptions};
pub use sweep::{
    part_members, plan, read_sweep, train_sweep, SweepAxes, SweepFile, SweepReport, SweepRun,
};
