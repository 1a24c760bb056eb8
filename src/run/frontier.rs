//! `sae frontier`: several SAEs on the same held-out shards, FVU against L0. A directory with a
//! `sweep.json` counts as its members (its `runs[].dir`, relative to it); any other directory
//! is one SAE (a `sae train` run, sparsify or SAELens). Each is evaluated exactly as `sae eval`
//! evaluates it (the same function, defaults and cap), so a point's figures are `sae eval`'s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use serde::Serialize;

use super::inputs::Targets;
use super::outputs::plots;
use super::progress;
use crate::analysis::eval::{check_targets, evaluate, EvalOptions};
use crate::data::{expand_inputs, open_shards, Shard};
use crate::gpu::{AdapterRequest, Gpu};
use crate::io::write_json_atomic;
use crate::sae::formats::load_sae_at;

/// Several SAEs, the held-out shards they are evaluated on, and where the frontier goes.
pub struct FrontierRequest {
    /// SAE, run or sweep directories.
    pub runs: Vec<PathBuf>,
    pub eval: Vec<PathBuf>,
    pub tensor: String,
    /// Transcoders' targets beside the held-out shards.
    pub targets: Option<Targets>,
    pub options: EvalOptions,
    pub out: PathBuf,
    pub quiet: bool,
    pub adapter: AdapterRequest,
}

/// One point of the frontier.
#[derive(Clone, Debug, Serialize)]
pub struct FrontierRun {
    pub dir: String,
    pub architecture: String,
    pub l0: f64,
    pub fvu: f64,
    pub dead_frac: f64,
    pub d_sae: usize,
}

/// The SAE directories `inputs` name: sweep directories expanded into their members.
pub fn expand_runs(inputs: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut runs = Vec::new();
    for dir in inputs {
        if !dir.is_dir() {
            bail!(
                "{}: not a directory (an SAE, a run or a sweep)",
                dir.display()
            );
        }
        let sweep = dir.join("sweep.json");
        if !sweep.exists() {
            runs.push(dir.clone());
            continue;
        }
        let text = std::fs::read_to_string(&sweep)
            .with_context(|| format!("{}: cannot read", sweep.display()))?;
        let value: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{}: not JSON", sweep.display()))?;
        let members = value["runs"]
            .as_array()
            .with_context(|| format!("{}: no \"runs\" list", sweep.display()))?;
        for (n, member) in members.iter().enumerate() {
            let name = member["dir"]
                .as_str()
                .with_context(|| format!("{}: runs[{n}] has no \"dir\"", sweep.display()))?;
            runs.push(dir.join(name));
        }
    }
    Ok(runs)
}

/// The architecture a `sae train` run directory was trained as (its `config.json`): a
/// BatchTopK run is exported as SAELens `jumprelu` but belongs on the frontier as `batchtopk`.
fn trained_architecture(dir: &Path) -> Option<String> {
    let text = std::fs::read_to_string(dir.join("config.json")).ok()?;
    let value: serde_json::Value = serde_json::from_str(&text).ok()?;
    let config = value.get("config")?;
    match config.get("architecture") {
        Some(name) => name.as_str().map(String::from),
        // Runs written before architectures were recorded are TopK.
        None => config.get("k").map(|_| "topk".to_string()),
    }
}

/// The `sae frontier` job: every SAE of the request evaluated on its shards, exactly as
/// `sae eval` would, into `frontier.json` and `frontier.png`.
pub fn frontier(request: &FrontierRequest) -> anyhow::Result<Vec<FrontierRun>> {
    anyhow::ensure!(
        request.options.batch_rows > 0,
        "--batch-size must be at least 1"
    );
    let runs = expand_runs(&request.runs)?;
    let paths = expand_inputs(&request.eval)?;
    let shards = open_shards(&paths, &request.tensor, None)?;
    let targets = match &request.targets {
        None => None,
        Some(t) => Some(Arc::new(t.open_beside(&paths, &shards)?.0)),
    };
    let total: u64 = shards.iter().map(|s| s.rows as u64).sum::<u64>() * runs.len() as u64;
    let gpu = Gpu::new(&request.adapter)?;
    let bar = progress::rows(total, request.quiet);
    let points = evaluate_runs(
        &gpu,
        &runs,
        (Arc::new(shards), targets),
        request.options,
        &request.out,
        |rows| bar.inc(rows),
    )?;
    bar.finish_and_clear();
    Ok(points)
}

/// Evaluates every SAE of `runs` on `data` (the shards, and transcoders' targets) and writes
/// `out/frontier.json` and `out/frontier.png`. `on_rows` sees every batch of every evaluation.
fn evaluate_runs(
    gpu: &Gpu,
    runs: &[PathBuf],
    data: (Arc<Vec<Shard>>, Option<Arc<Vec<Shard>>>),
    options: EvalOptions,
    out: &Path,
    mut on_rows: impl FnMut(u64),
) -> anyhow::Result<Vec<FrontierRun>> {
    // Every SAE is loaded (and so checked) before any evaluation.
    let mut loaded = Vec::with_capacity(runs.len());
    let (shards, targets) = data;
    for dir in runs {
        let sae = load_sae_at(dir, None)?;
        check_targets(&sae.params, targets.is_some())
            .with_context(|| format!("{}", dir.display()))?;
        loaded.push((dir, sae));
    }
    let mut points = Vec::with_capacity(loaded.len());
    for (dir, sae) in &loaded {
        let pair = (Arc::clone(&shards), targets.clone());
        let done = evaluate(gpu, &sae.params, pair.0, pair.1, options, &mut on_rows)
            .with_context(|| format!("evaluating {}", dir.display()))?;
        let summary = done.stats.summary();
        points.push(FrontierRun {
            dir: dir.display().to_string(),
            architecture: trained_architecture(dir)
                .unwrap_or_else(|| sae.provenance.architecture.to_string()),
            l0: summary.l0,
            fvu: summary.fvu,
            dead_frac: summary.dead_frac,
            d_sae: sae.params.d_sae,
        });
    }
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for p in &points {
        series
            .entry(p.architecture.clone())
            .or_default()
            .push((p.l0.max(1e-3), p.fvu));
    }
    plots::frontier(
        &out.join("frontier.png"),
        &series.into_iter().collect::<Vec<_>>(),
    )?;
    write_json_atomic(
        &out.join("frontier.json"),
        &serde_json::json!({ "runs": points }),
    )?;
    Ok(points)
}
