//! `metrics.jsonl`: a line per logged step, written when the GPU's figures for it come back
//! (a few steps later), with what the host knew when it submitted the step.

use std::collections::VecDeque;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use indicatif::ProgressBar;
use serde_json::json;

use crate::sae::trainer::StepMetrics;

/// What the host knows of a logged step when it submits it; the GPU's figures join it later.
pub struct LogContext {
    pub step: u64,
    pub tokens: u64,
    pub lr: f64,
    pub tokens_per_s: f64,
    pub skipped_nonfinite: u64,
}

/// `metrics.jsonl` and the logged steps whose figures have not come back yet.
pub struct MetricsLog {
    pub file: std::fs::File,
    pub path: PathBuf,
    pub pending: VecDeque<LogContext>,
    pub auxk_alpha: f32,
    pub d_sae: usize,
}

impl MetricsLog {
    /// Opens `run_dir/metrics.jsonl` for appending: cut back to `start_step` on resume,
    /// started afresh otherwise.
    pub fn open(
        run_dir: &Path,
        resume: bool,
        start_step: u64,
        auxk_alpha: f32,
        d_sae: usize,
    ) -> anyhow::Result<MetricsLog> {
        let path = run_dir.join("metrics.jsonl");
        if resume {
            super::run_dir::truncate_metrics(&path, start_step)?;
        } else {
            let _ = std::fs::remove_file(&path);
        }
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("{}: cannot open", path.display()))?;
        Ok(MetricsLog {
            file,
            path,
            pending: VecDeque::new(),
            auxk_alpha,
            d_sae,
        })
    }

    /// A held-out evaluation's line.
    pub fn write_eval(
        &mut self,
        step: u64,
        tokens: u64,
        eval: &impl serde::Serialize,
    ) -> anyhow::Result<()> {
        let line = json!({"step": step, "tokens": tokens, "eval": eval});
        writeln!(self.file, "{line}")
            .with_context(|| format!("{}: cannot write", self.path.display()))
    }

    /// Writes a line per step whose figures came back; a non-finite loss ends the run.
    pub fn write(
        &mut self,
        ready: Vec<(u64, StepMetrics)>,
        bar: &ProgressBar,
        last_checkpoint: Option<&Path>,
    ) -> anyhow::Result<()> {
        for (step, m) in ready {
            let Some(at) = self.pending.iter().position(|c| c.step == step) else {
                continue;
            };
            let Some(context) = self.pending.remove(at) else {
                continue;
            };
            let loss = m.fvu + f64::from(self.auxk_alpha) * m.auxk_loss;
            if !loss.is_finite() {
                bail!(
                    "training diverged: the loss is {loss} at step {step}; last good checkpoint: {}",
                    last_checkpoint.map_or("none".to_string(), |p| p.display().to_string())
                );
            }
            let dead_frac = f64::from(m.dead) / self.d_sae as f64;
            let line = json!({
                "step": step, "tokens": context.tokens, "loss": loss, "fvu": m.fvu, "l0": m.l0,
                "dead_frac": dead_frac, "auxk_loss": m.auxk_loss, "lr": context.lr,
                "tokens_per_s": context.tokens_per_s,
                "skipped_nonfinite": context.skipped_nonfinite,
            });
            writeln!(self.file, "{line}")
                .with_context(|| format!("{}: cannot write", self.path.display()))?;
            bar.set_message(format!(
                "FVU {:.4}  L0 {:.1}  dead {:.1}%  {:.0} tok/s",
                m.fvu,
                m.l0,
                100.0 * dead_frac,
                context.tokens_per_s
            ));
        }
        Ok(())
    }
}
