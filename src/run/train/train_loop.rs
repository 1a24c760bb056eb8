//! The training loop: every batch read, shuffled and uploaded once and each member stepping
//! on it in one submission; metrics written as the GPU's figures come back; checkpoints and
//! held-out evaluations at their steps (the loop's only synchronisation points).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::anyhow;
use indicatif::ProgressBar;

use super::data::Data;
use super::finish::{evaluate, finish_member};
use super::member::{interrupted, Member};
use super::metrics_log::LogContext;
use super::report::TrainReport;
use super::run_dir::RunOptions;
use crate::data::Batch;
use crate::gpu::{Gpu, InjectedFault};
use crate::run::progress;
use crate::sae::schedule::lr_at;
use crate::sae::trainer::{Feed, MemberStep};

/// Trains `members` from `start_step` to the end (or to `options.stop_after`), then finishes
/// each: held-out figures, exports, summary and plots.
pub fn train_members<'g>(
    gpu: &'g Gpu,
    mut members: Vec<Member<'g>>,
    data: &Data,
    options: &RunOptions,
    start_step: u64,
) -> anyhow::Result<Vec<TrainReport>> {
    let first = members[0].config.clone();
    let steps = first.data.steps;
    let batch = first.data.batch_size;
    let mut feed = match data.train_targets {
        Some(_) => Feed::paired(gpu, batch, data.d_in, data.d_out)?,
        None => Feed::new(gpu, batch, data.d_in)?,
    };
    let max_rows = steps * first.data.batch_size as u64;
    let stream = data.train_stream(&first, max_rows, start_step)?;
    let bar = progress::steps(steps, start_step, options.quiet);
    let started = Instant::now();
    let mut rate = Rate::new();
    let mut step = start_step;
    let fault = injected_fault()?;
    for batch in stream {
        if step >= steps {
            break;
        }
        if let Some((fault, at)) = fault {
            if at == step + 1 {
                gpu.inject_fault(fault);
            }
        }
        let batch = batch?;
        step_members(&mut feed, &mut members, &batch, step, &mut rate, &bar)?;
        step += 1;
        bar.set_position(step);
        // Checkpoints and held-out evaluation are the synchronisation points.
        if options.stop_after == Some(step) && step < steps {
            return stop(&mut members, step, started, &bar);
        }
        let every = |n: u64| n > 0 && step.is_multiple_of(n) && step < steps;
        if every(first.output.checkpoint_every) {
            checkpoint_all(&mut members, step, &bar)?;
        }
        if every(first.output.eval_every) {
            evaluate_all(gpu, &mut members, data, step, &bar)?;
        }
    }
    for member in &mut members {
        member.drain_metrics(true, step, &bar)?;
    }
    bar.finish_and_clear();
    if step < steps {
        tracing::warn!("the data ran out after {step} of {steps} steps");
    }
    let mut finals = Vec::with_capacity(members.len());
    for member in &mut members {
        finals.push(member.save_checkpoint(step)?);
    }
    for path in &finals {
        tracing::info!("final checkpoint {}", path.display());
    }
    let seconds = started.elapsed().as_secs_f64();
    members
        .iter()
        .map(|m| finish_member(gpu, m, data, step, start_step, seconds))
        .collect()
}

/// Throughput over the steps since the last logged one.
struct Rate {
    since: Instant,
    tokens: u64,
}

impl Rate {
    fn new() -> Rate {
        Rate {
            since: Instant::now(),
            tokens: 0,
        }
    }

    /// Adds a batch; on a logged step, the tokens per second since the last one (else 0).
    fn add(&mut self, rows: usize, logged: bool) -> f64 {
        self.tokens += rows as u64;
        if !logged {
            return 0.0;
        }
        let rate = self.tokens as f64 / self.since.elapsed().as_secs_f64().max(1e-9);
        *self = Rate::new();
        rate
    }
}

/// One step of every member on `batch` (0-based `step`), in one submission; queues the
/// logged step's context and writes the metrics that came back.
fn step_members<'g>(
    feed: &mut Feed<'g>,
    members: &mut [Member<'g>],
    batch: &Batch,
    step: u64,
    rate: &mut Rate,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let first = &members[0].config;
    let total = first.data.steps;
    let logged = (step + 1).is_multiple_of(first.output.log_every.max(1)) || step + 1 == total;
    let args: Vec<MemberStep> = members
        .iter()
        .map(|m| {
            let (c, spec) = (&m.config, m.config.model.architecture.spec());
            MemberStep {
                scale: m.scale,
                target_scale: m.target_scale,
                lr: lr_at(c.optim.lr, step, c.optim.schedule(), c.data.steps),
                step: step + 1,
                with_metrics: logged,
                penalty: spec.penalty_at(&c.model.settings, step),
            }
        })
        .collect();
    // A GPU failure names the checkpoint to resume from (the group's oldest last one).
    let last: Option<PathBuf> = members.first().and_then(|m| m.last_checkpoint.clone());
    let trainers = members.iter_mut().map(|m| &mut m.trainer);
    feed.step(batch, trainers.zip(args.iter().copied()))
        .map_err(|e| interrupted(e.into(), step + 1, last.as_deref()))?;
    let tokens_per_s = rate.add(batch.rows, logged);
    for (member, args) in members.iter_mut().zip(&args) {
        member.tokens += batch.rows as u64;
        if logged {
            member.log.pending.push_back(LogContext {
                step: step + 1,
                tokens: member.tokens,
                lr: args.lr,
                tokens_per_s,
                skipped_nonfinite: batch.skipped_nonfinite,
            });
        }
        // Figures of earlier steps, as the GPU finishes them; never waits.
        member.drain_metrics(false, step + 1, bar)?;
    }
    Ok(())
}

/// `--stop-after`: a checkpoint of every member, as an interrupted run leaves, and no exports.
fn stop(
    members: &mut [Member<'_>],
    step: u64,
    started: Instant,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<TrainReport>> {
    bar.finish_and_clear();
    let mut reports = Vec::with_capacity(members.len());
    for member in members {
        member.drain_metrics(true, step, bar)?;
        member.save_checkpoint(step)?;
        reports.push(TrainReport {
            steps: step,
            tokens: member.tokens,
            seconds: started.elapsed().as_secs_f64(),
            tokens_per_s: 0.0,
            heldout: None,
            run_dir: member.run_dir.clone(),
            peak_gpu_bytes: 0,
            matmul: member.trainer.sae.matmul().name(),
            f16_overflow: None,
        });
    }
    Ok(reports)
}

/// Every member's checkpoint of `step`, written before any is recorded as the last: a
/// failure names a step that every run can resume from.
fn checkpoint_all(members: &mut [Member<'_>], step: u64, bar: &ProgressBar) -> anyhow::Result<()> {
    for member in members.iter_mut() {
        member.drain_metrics(true, step, bar)?;
    }
    let mut saved = Vec::with_capacity(members.len());
    for member in members.iter_mut() {
        let last = member.last_checkpoint.clone();
        let path = member
            .save_checkpoint(step)
            .map_err(|e| interrupted(e, step, last.as_deref()))?;
        saved.push(path);
    }
    for (member, path) in members.iter_mut().zip(saved) {
        member.last_checkpoint = Some(path);
    }
    Ok(())
}

/// `--eval-every`: each member's held-out figures, as a line of its metrics log.
fn evaluate_all(
    gpu: &Gpu,
    members: &mut [Member<'_>],
    data: &Data,
    step: u64,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    for member in members {
        member.drain_metrics(true, step, bar)?;
        if let Some(summary) = evaluate(gpu, member, data)? {
            member.log.write_eval(step, member.tokens, &summary)?;
        }
    }
    Ok(())
}

/// `SAE_INJECT_FAULT=device-lost@STEP` or `out-of-memory@STEP`: make the device fail before
/// that step, so tests can check what a run does when a real GPU faults.
fn injected_fault() -> anyhow::Result<Option<(InjectedFault, u64)>> {
    match std::env::var("SAE_INJECT_FAULT") {
        Ok(text) => InjectedFault::parse(&text).map(Some).ok_or_else(|| {
            anyhow!("SAE_INJECT_FAULT={text}: expected device-lost@STEP or out-of-memory@STEP")
        }),
        Err(_) => Ok(None),
    }
}
