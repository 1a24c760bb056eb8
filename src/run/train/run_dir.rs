//! A run directory: made (or cleared with --overwrite) and checked writable before anything
//! trains, its `config.json` written and read back, and its metrics log cut back on resume.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::json;

use super::config::TrainConfig;
use super::data::Data;
use crate::gpu::Gpu;
use crate::io::write_json_atomic;

/// How the user asked to run.
pub struct RunOptions {
    pub run_dir: PathBuf,
    pub resume: bool,
    pub overwrite: bool,
    pub quiet: bool,
    /// Write a checkpoint and stop after this many steps, as an interrupted run would
    /// (for testing resume; the run's exports are not written).
    pub stop_after: Option<u64>,
    /// Time the encoder GEMM's tile shapes for this adapter and shape when none are cached
    /// (gpu::tune); otherwise the cached choice or the default. Never changes results.
    pub tune: bool,
}

/// Everything a run writes into its directory (removed by --overwrite).
const RUN_FILES: [&str; 9] = [
    "config.json",
    "metrics.jsonl",
    "summary.json",
    "sparsity.safetensors",
    "checkpoints",
    "sparsify",
    "saelens",
    "loss.png",
    "density.png",
];

/// Refuses a directory that already holds a run unless the user resumes or overwrites it.
pub fn refuse_existing_run(dir: &Path, resume: bool, overwrite: bool) -> anyhow::Result<()> {
    if dir.join("config.json").exists() && !resume && !overwrite {
        bail!(
            "{}: already holds a run; pass --resume {} to continue it or --overwrite to replace it",
            dir.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Makes `dir` ready for a run: refused if it holds one (unless resuming or overwriting),
/// cleared with --overwrite, created, and checked writable.
pub fn prepare(dir: &Path, resume: bool, overwrite: bool) -> anyhow::Result<()> {
    refuse_existing_run(dir, resume, overwrite)?;
    if overwrite && dir.join("config.json").exists() {
        for name in RUN_FILES {
            let path = dir.join(name);
            if path.is_dir() {
                std::fs::remove_dir_all(&path)
                    .with_context(|| format!("{}: cannot remove", path.display()))?;
            } else if path.exists() {
                std::fs::remove_file(&path)
                    .with_context(|| format!("{}: cannot remove", path.display()))?;
            }
        }
    }
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the run directory", dir.display()))?;
    // Fail now, not after hours of training, if the directory is not writable.
    let probe = dir.join(".write-test");
    std::fs::write(&probe, b"ok")
        .with_context(|| format!("{}: run directory is not writable", dir.display()))?;
    let _ = std::fs::remove_file(probe);
    Ok(())
}

/// `config.json` records paths as text (so `--resume` can find the data again): a path that
/// is not valid UTF-8 is refused up front.
pub fn check_utf8_paths<'a>(paths: impl IntoIterator<Item = &'a Path>) -> anyhow::Result<()> {
    for path in paths {
        if path.to_str().is_none() {
            bail!(
                "{}: path is not valid UTF-8; config.json records paths as text, so rename it",
                path.display()
            );
        }
    }
    Ok(())
}

/// Reads a run's `config.json`: its configuration and the shards it was trained on.
pub fn read_config(run_dir: &Path) -> anyhow::Result<(TrainConfig, Option<serde_json::Value>)> {
    let config_path = run_dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("{}: cannot read", config_path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", config_path.display()))?;
    let config = serde_json::from_value(value["config"].clone())
        .with_context(|| format!("{}: bad \"config\"", config_path.display()))?;
    Ok((config, value.get("data").cloned()))
}

/// Writes `config.json`: the configuration, the data with its sizes, the adapter, the
/// version, and the GPU memory the run was estimated to need.
pub fn write_config(
    run_dir: &Path,
    config: &TrainConfig,
    data: &Data,
    gpu: &Gpu,
    estimated_gpu_bytes: u64,
) -> anyhow::Result<()> {
    let config_value = serde_json::to_value(config).context("recording the configuration")?;
    let matmul = gpu.matmul(config.compute.matmul)?;
    write_json_atomic(
        &run_dir.join("config.json"),
        &json!({
            "config": config_value,
            "d_in": data.d_in,
            "data": data.train_infos(),
            "eval_data": data.eval_infos(),
            "adapter": gpu.summary,
            "matmul": matmul.name(),
            "matmul_tile": matmul.tile(),
            "sae_wgpu_version": env!("CARGO_PKG_VERSION"),
            "estimated_gpu_bytes": estimated_gpu_bytes,
        }),
    )
}

/// Keeps the metrics lines of steps up to `step` (used when resuming).
pub fn truncate_metrics(path: &Path, step: u64) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("step").and_then(|s| s.as_u64()))
                .is_some_and(|s| s <= step)
        })
        .map(|line| format!("{line}\n"))
        .collect();
    crate::io::write_atomic(path, kept.as_bytes())
}
