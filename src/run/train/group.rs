//! A group of runs trained on the same batches (a sweep; a single run is a group of one):
//! their directories and configurations checked against the data and the GPU before any file
//! is written, `config.json` written, and each member started from new weights or from the
//! newest checkpoint they all share.

use std::path::PathBuf;

use anyhow::{anyhow, bail};

use super::config::TrainConfig;
use super::data::{check_same_data, init_key, Data, InitKey, InitialValues};
use super::member::{common_checkpoint, Member, Start};
use super::run_dir::{self, RunOptions};
use crate::gpu::Gpu;
use crate::sae::blocks::LatentBlocks;
use crate::sae::trainer::Feed;

/// A run directory with its configuration: the one given, or on resume the run's own.
pub struct MemberSpec {
    pub run_dir: PathBuf,
    /// `None` on resume: the run's `config.json` is read.
    pub config: Option<TrainConfig>,
}

/// The group's runs, prepared: each directory, configuration, the data it recorded (on
/// resume) and the GPU memory it needs.
pub struct Runs {
    pub dirs: Vec<PathBuf>,
    pub configs: Vec<TrainConfig>,
    recorded: Vec<Option<serde_json::Value>>,
    pub needs: Vec<u64>,
}

impl Runs {
    pub fn first(&self) -> &TrainConfig {
        &self.configs[0]
    }
}

/// Prepares every run directory and reads or takes its configuration; the runs must share
/// their data settings.
pub fn prepare_runs(specs: Vec<MemberSpec>, options: &RunOptions) -> anyhow::Result<Runs> {
    if specs.is_empty() {
        bail!("no runs to train");
    }
    let given = specs.iter().flat_map(|s| {
        s.config
            .iter()
            .flat_map(|c| c.data.inputs.iter().chain(&c.data.eval_inputs))
            .map(PathBuf::as_path)
            .chain([s.run_dir.as_path()])
    });
    run_dir::check_utf8_paths(given)?;
    let mut runs = Runs {
        dirs: Vec::new(),
        configs: Vec::new(),
        recorded: Vec::new(),
        needs: Vec::new(),
    };
    for spec in specs {
        run_dir::prepare(&spec.run_dir, options.resume, options.overwrite)?;
        let has_config = spec.run_dir.join("config.json").exists();
        let (config, recorded) = match spec.config {
            _ if options.resume && has_config => run_dir::read_config(&spec.run_dir)?,
            Some(config) => (config, None),
            None if options.resume => bail!(
                "{}: nothing to resume (no config.json)",
                spec.run_dir.display()
            ),
            None => bail!("no training configuration given"),
        };
        runs.configs.push(config);
        runs.recorded.push(recorded);
        runs.dirs.push(spec.run_dir);
    }
    for (config, dir) in runs.configs.iter().zip(&runs.dirs).skip(1) {
        if let Some(setting) = runs.configs[0].data_mismatch(config) {
            bail!(
                "{}: its {setting} differs from {}'s; runs trained on the same batches must share it",
                dir.display(),
                runs.dirs[0].display()
            );
        }
    }
    Ok(runs)
}

/// Bytes of GPU memory the trainer allocates, for a clear message before allocation fails.
pub fn gpu_bytes_needed(d_in: usize, d_sae: usize, k: usize, batch: usize, k_aux: usize) -> u64 {
    let params = (2 * d_in * d_sae + d_sae + d_in) as u64;
    let per_param = 4 * params; // weights, gradients, two moments
    let activations = (batch * (2 * d_in + d_sae + 2 * k)) as u64 + (batch * d_in) as u64;
    let aux = if k_aux > 0 {
        (batch * (4 * d_in + 3 * k_aux)) as u64
    } else {
        0
    };
    let index = (d_sae * batch.div_ceil(32) + 3 * d_sae + 2 * batch * k) as u64;
    4 * (per_param + activations + aux + index + (batch * d_sae) as u64)
}

/// Checks every run against the data (same shards on resume, valid settings) and the GPU (one
/// latent's column in a binding, the whole group in memory), naming the run that fails.
pub fn check_runs(gpu: &Gpu, runs: &mut Runs, data: &Data) -> anyhow::Result<()> {
    let (d_in, d_out) = (data.d_in, data.d_out);
    let mut named = Vec::with_capacity(runs.configs.len());
    for ((config, recorded), dir) in runs.configs.iter().zip(&runs.recorded).zip(&runs.dirs) {
        if let Some(recorded) = recorded {
            check_same_data(recorded, &data.train_infos())?;
        }
        config.validate(d_in, d_out)?;
        gpu.matmul(config.compute.matmul)?;
        let k_aux = if config.uses_auxk() {
            config.auxk.auxk_k
        } else {
            0
        };
        let model = &config.model;
        let (d_sae, batch) = (model.d_sae, config.data.batch_size);
        // A transcoder's two sides, estimated at the wider (plus W_skip and its state).
        let skip = if model.skip {
            16 * (d_in * d_out) as u64
        } else {
            0
        };
        let width = d_in.max(d_out);
        let needed = gpu_bytes_needed(width, d_sae, model.row_candidates(), batch, k_aux) + skip;
        // Per-latent tensors larger than one storage binding are split into blocks of latents;
        // this fails only when a single latent's column cannot be bound, before anything is
        // allocated.
        let suggestion = "use a smaller dictionary or --batch-size";
        LatentBlocks::plan(d_in, d_out, d_sae, batch, gpu.binding_limit()).map_err(|e| {
            anyhow!(
                "{}: {e}; the run needs about {} MiB of GPU memory in all; {suggestion}",
                dir.display(),
                needed >> 20
            )
        })?;
        let name = dir.file_name().map_or_else(
            || dir.display().to_string(),
            |n| n.to_string_lossy().to_string(),
        );
        named.push((name, needed));
    }
    let paired = runs.first().data.is_paired().then_some(d_out);
    let feed = Feed::bytes(runs.first().data.batch_size, d_in, paired);
    let total: u64 = named.iter().map(|(_, n)| n).sum::<u64>() + feed;
    tracing::info!("training needs about {} MiB of GPU memory", total >> 20);
    check_group_memory(gpu, &named, feed)?;
    runs.needs = named.into_iter().map(|(_, n)| n).collect();
    Ok(())
}

/// GPU memory of the whole group, checked up front; the message names the first run that
/// does not fit beside the ones before it.
fn check_group_memory(gpu: &Gpu, members: &[(String, u64)], feed: u64) -> anyhow::Result<()> {
    let mut total = feed;
    for (name, needed) in members {
        total += needed;
        if members.len() > 1 {
            gpu.check_memory(
                &format!("sweep member {name} (with the members before it)"),
                total,
            )?;
        } else {
            gpu.check_memory("the run", total)?;
        }
    }
    Ok(())
}

/// Writes each run's `config.json` (kept as it is when resuming a run that has one).
pub fn write_configs(gpu: &Gpu, runs: &Runs, data: &Data, resume: bool) -> anyhow::Result<()> {
    for ((config, dir), needed) in runs.configs.iter().zip(&runs.dirs).zip(&runs.needs) {
        if !resume || !dir.join("config.json").exists() {
            run_dir::write_config(dir, config, data, gpu, *needed)?;
        }
    }
    Ok(())
}

/// Opens every member: from the newest checkpoint common to the group when resuming (a group
/// without one starts over), else from new weights, b_dec and the input scale estimated on the
/// first training rows (once for runs that estimate them alike). Returns the step they start
/// at.
pub fn open_members<'g>(
    gpu: &'g Gpu,
    runs: Runs,
    data: &Data,
    options: &RunOptions,
) -> anyhow::Result<(u64, Vec<Member<'g>>)> {
    let resumed = if options.resume { resumed(&runs) } else { None };
    let start_step = resumed
        .as_ref()
        .and_then(|found| found.first())
        .map_or(0, |(_, c)| c.step);
    if let (Some(found), false) = (&resumed, options.quiet) {
        say_resuming(found, start_step, runs.first().data.steps);
    }
    let mut resumed = resumed.map(Vec::into_iter);
    let mut init_cache: Vec<(InitKey, InitialValues)> = Vec::new();
    let mut members = Vec::with_capacity(runs.configs.len());
    for ((config, run_dir), needed) in runs.configs.into_iter().zip(runs.dirs).zip(runs.needs) {
        let start = match resumed.as_mut().and_then(Iterator::next) {
            Some((_, ckpt)) => Start::from_checkpoint(ckpt),
            None => new_start(&config, data, &mut init_cache)?,
        };
        let member = Member::open(gpu, run_dir, config, start, needed, options, start_step)?;
        members.push(member);
    }
    Ok((start_step, members))
}

/// The checkpoints to resume the group from, or `None` (with a warning) to start over.
fn resumed(runs: &Runs) -> Option<Vec<(PathBuf, crate::sae::checkpoint::Checkpoint)>> {
    let found = common_checkpoint(&runs.dirs);
    if found.is_none() {
        let dirs: Vec<String> = runs.dirs.iter().map(|d| d.display().to_string()).collect();
        tracing::warn!(
            "no usable checkpoint common to {}; starting over",
            dirs.join(", ")
        );
    }
    found
}

fn say_resuming(found: &[(PathBuf, crate::sae::checkpoint::Checkpoint)], step: u64, steps: u64) {
    if let Some((path, _)) = found.first() {
        let from = if found.len() > 1 {
            format!("step {step} of {} runs", found.len())
        } else {
            path.display().to_string()
        };
        eprintln!("resuming from {from} (step {step} of {steps})");
    }
}

/// A new run's weights, with b_dec and the input scale from the data (shared between runs
/// whose estimates agree).
fn new_start(
    config: &TrainConfig,
    data: &Data,
    cache: &mut Vec<(InitKey, InitialValues)>,
) -> anyhow::Result<Start> {
    let model = &config.model;
    let spec = model.architecture.spec();
    let seed = config.init.seed;
    let mut params = match model.transcoder {
        true => spec.init_transcoder(data.d_in, data.d_out, model, seed),
        false => spec.init(data.d_in, model, seed),
    };
    let key = init_key(config);
    let init = match cache.iter().find(|(k, _)| *k == key) {
        Some((_, found)) => found.clone(),
        None => {
            let found = data.initial_values(config)?;
            cache.push((key, found.clone()));
            found
        }
    };
    params.b_dec = init.b_dec;
    if let Some(mean) = &init.input_mean {
        params.centre_pre_activations(mean);
    }
    Ok(Start {
        params,
        scale: init.scale,
        target_scale: init.target_scale,
        tokens: 0,
        fire_counts: vec![0u64; model.d_sae],
        restored: None,
    })
}
