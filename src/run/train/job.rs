//! A group of runs trained on the same batches, from set-up to finish; a single run is a
//! group of one.

use super::config::TrainConfig;
use super::data::Data;
use super::group::{self, MemberSpec};
use super::report::TrainReport;
use super::run_dir::RunOptions;
use super::train_loop;
use crate::gpu::Gpu;

/// Runs (or resumes) training. `config` is ignored on resume: the run's own `config.json` wins.
pub fn train(
    gpu: &Gpu,
    config: Option<TrainConfig>,
    options: &RunOptions,
) -> anyhow::Result<TrainReport> {
    let spec = MemberSpec {
        run_dir: options.run_dir.clone(),
        config,
    };
    let mut reports = train_group(gpu, vec![spec], options, &mut || Ok(()))?;
    reports
        .pop()
        .ok_or_else(|| anyhow::anyhow!("training produced no report"))
}

/// Trains several runs on the same batches: every batch is read, shuffled and uploaded once
/// and each run steps on it, in one submission. Each run is an ordinary run directory; a
/// run ends bit-identical to the same configuration trained alone. `options.run_dir` is
/// ignored (each spec names its own); the other options apply to every run. `checked` runs
/// once every run is checked against the data and the GPU, before any run's files are written.
///
/// On resume a run without `config.json` (a sweep member killed before it was written) starts
/// from its given configuration, and so does the whole group: the group resumes from the
/// newest step at which every run has a checkpoint.
pub fn train_group(
    gpu: &Gpu,
    specs: Vec<MemberSpec>,
    options: &RunOptions,
    checked: &mut dyn FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<Vec<TrainReport>> {
    let mut runs = group::prepare_runs(specs, options)?;
    let data = Data::open(runs.first())?;
    group::check_runs(gpu, &mut runs, &data)?;
    checked()?;
    group::write_configs(gpu, &runs, &data, options.resume)?;
    let (start_step, members) = group::open_members(gpu, runs, &data, options)?;
    train_loop::train_members(gpu, members, &data, options, start_step)
}
