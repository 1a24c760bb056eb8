//! One run of a group trained on the same batches (a sweep, or a single run as a group of
//! one): its directory, configuration, trainer, metrics log and checkpoints.

use std::path::{Path, PathBuf};

use anyhow::anyhow;
use indicatif::ProgressBar;

use super::config::TrainConfig;
use super::metrics_log::MetricsLog;
use super::run_dir::RunOptions;
use crate::gpu::kernels::encoder::EncoderShape;
use crate::gpu::tune::tiles_for;
use crate::gpu::{Gpu, GpuError};
use crate::sae::arch::{build_trainer, ArchResume, AttachError, TrainerOptions};
use crate::sae::checkpoint::{self, Checkpoint};
use crate::sae::params::SaeParams;
use crate::sae::trainer::Trainer;

pub struct Member<'g> {
    pub run_dir: PathBuf,
    pub config: TrainConfig,
    pub trainer: Trainer<'g>,
    /// The factor inputs are divided by (1 when not scaling).
    pub scale: f32,
    /// The factor a transcoder's targets are divided by (`scale` for an SAE).
    pub target_scale: f32,
    pub tokens: u64,
    /// Fires per latent over all training tokens so far.
    pub fire_counts: Vec<u64>,
    pub log: MetricsLog,
    pub last_checkpoint: Option<PathBuf>,
}

/// Where a member starts: new weights, or a checkpoint's state.
pub struct Start {
    pub params: SaeParams,
    pub scale: f32,
    pub target_scale: f32,
    pub tokens: u64,
    pub fire_counts: Vec<u64>,
    /// On resume: the optimiser moments, dead-latent counters and the architecture's state.
    pub restored: Option<Restored>,
}

/// What a checkpoint restores beyond the weights.
pub struct Restored {
    pub moments: Vec<(Vec<f32>, Vec<f32>)>,
    pub since_fired: Vec<u32>,
    pub skip_moments: Option<(Vec<f32>, Vec<f32>)>,
    pub arch: ArchResume,
}

impl Start {
    /// The state a checkpoint holds.
    pub fn from_checkpoint(ckpt: Checkpoint) -> Start {
        let snapshot = ckpt.snapshot;
        Start {
            params: snapshot.params,
            scale: ckpt.input_scale,
            target_scale: ckpt.target_scale,
            tokens: ckpt.tokens,
            fire_counts: ckpt.fire_counts,
            restored: Some(Restored {
                moments: snapshot.moments,
                since_fired: snapshot.since_fired,
                skip_moments: snapshot.skip_moments,
                arch: ArchResume {
                    theta: snapshot.theta,
                    threshold_param: snapshot.threshold_param,
                },
            }),
        }
    }
}

impl<'g> Member<'g> {
    /// The run's trainer on the GPU, with its state restored on resume and its metrics log
    /// open. `needed_bytes` is what the run was estimated to need, for an out-of-memory error.
    pub fn open(
        gpu: &'g Gpu,
        run_dir: PathBuf,
        config: TrainConfig,
        start: Start,
        needed_bytes: u64,
        options: &RunOptions,
        start_step: u64,
    ) -> anyhow::Result<Member<'g>> {
        let trainer_options = TrainerOptions {
            batch_rows: config.data.batch_size,
            adam: config.adam(),
            dead_tokens: config.auxk.dead_tokens,
            auxk: config.auxk(),
            matmul: gpu.matmul(config.compute.matmul)?,
        };
        let resume = start.restored.as_ref().map(|r| &r.arch);
        let mut trainer =
            build_trainer(gpu, &start.params, &config.model, &trainer_options, resume)
                .map_err(|e| attach_error(e, &run_dir, needed_bytes))?;
        if let Some(restored) = &start.restored {
            let skip = restored.skip_moments.as_ref();
            trainer.restore(&restored.moments, &restored.since_fired, skip)?;
        }
        let gemm = EncoderShape {
            rows: config.data.batch_size,
            d_in: start.params.d_in,
            d_sae: trainer.sae.blocks[0].range.len,
        };
        let quiet = options.quiet;
        trainer.sae.gemm_tiles = tiles_for(gpu, gemm, options.tune, || {
            if !quiet {
                eprintln!(
                    "timing the encoder GEMM's tile shapes on this adapter (once per adapter and shape; --no-tune skips)"
                );
            }
        })?;
        let alpha = config.auxk.auxk_alpha;
        let log = MetricsLog::open(
            &run_dir,
            options.resume,
            start_step,
            alpha,
            config.model.d_sae,
        )?;
        Ok(Member {
            run_dir,
            config,
            trainer,
            scale: start.scale,
            target_scale: start.target_scale,
            tokens: start.tokens,
            fire_counts: start.fire_counts,
            log,
            last_checkpoint: None,
        })
    }

    /// Writes the metrics lines of the steps whose figures came back (with `wait`, of every
    /// step submitted); `step` names where a failure happened.
    pub fn drain_metrics(
        &mut self,
        wait: bool,
        step: u64,
        bar: &ProgressBar,
    ) -> anyhow::Result<()> {
        let last = self.last_checkpoint.as_deref();
        let ready = self
            .trainer
            .ready_metrics(wait)
            .map_err(|e| interrupted(e.into(), step, last))?;
        self.log.write(ready, bar, last)
    }

    /// Adds the fire counts since the last checkpoint to the totals and writes a checkpoint.
    pub fn save_checkpoint(&mut self, step: u64) -> anyhow::Result<PathBuf> {
        for (total, c) in self
            .fire_counts
            .iter_mut()
            .zip(self.trainer.take_fire_counts()?)
        {
            *total += u64::from(c);
        }
        checkpoint::save(
            &self.run_dir.join("checkpoints"),
            &Checkpoint {
                step,
                tokens: self.tokens,
                input_scale: self.scale,
                target_scale: self.target_scale,
                snapshot: self.trainer.snapshot()?,
                fire_counts: self.fire_counts.clone(),
            },
        )
    }

    /// The SAE as it is used after training (and exported), on the trainer's input scale.
    pub fn inference_params(&self) -> anyhow::Result<SaeParams> {
        Ok(self.trainer.inference_params()?)
    }
}

/// An architecture that could not be attached: the run named, and for a GPU that ran out of
/// memory, how much the run needs.
fn attach_error(error: AttachError, run_dir: &Path, needed_bytes: u64) -> anyhow::Error {
    match error {
        AttachError::Gpu(e @ GpuError::Shape { .. }) => anyhow!("{}: {e}", run_dir.display()),
        AttachError::Gpu(e) => anyhow!(
            "{}: {e} (the run needs about {} MiB of GPU memory)",
            run_dir.display(),
            needed_bytes >> 20
        ),
        AttachError::Invalid(message) => anyhow!("{}: {message}", run_dir.display()),
    }
}

/// A GPU failure mid-run (device lost, out of memory): say where, and what to resume from.
pub fn interrupted(
    error: anyhow::Error,
    step: u64,
    last_checkpoint: Option<&Path>,
) -> anyhow::Error {
    match last_checkpoint {
        Some(path) => error.context(format!(
            "training stopped at step {step}; the last checkpoint is {} (continue with --resume)",
            path.display()
        )),
        None => error.context(format!(
            "training stopped at step {step}, before the first checkpoint"
        )),
    }
}

/// The newest step at which every run of the group has a checkpoint that loads, and those
/// checkpoints. A group killed while writing one step's checkpoints resumes from the step
/// before, which every run still keeps.
pub fn common_checkpoint(run_dirs: &[PathBuf]) -> Option<Vec<(PathBuf, Checkpoint)>> {
    let first = run_dirs.first()?;
    let steps: Vec<u64> = checkpoint::steps_in(&first.join("checkpoints"))
        .into_iter()
        .map(|(step, _)| step)
        .collect();
    'steps: for &step in steps.iter().rev() {
        let mut found = Vec::with_capacity(run_dirs.len());
        for dir in run_dirs {
            let path = checkpoint::path_for(&dir.join("checkpoints"), step);
            if !path.exists() {
                continue 'steps;
            }
            match checkpoint::load(&path) {
                Ok(ckpt) => found.push((path, ckpt)),
                Err(error) => {
                    tracing::warn!("skipping unreadable checkpoint: {error:#}");
                    continue 'steps;
                }
            }
        }
        return Some(found);
    }
    None
}
