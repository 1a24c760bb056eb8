//! The `sae hist` job: per-feature statistics over shards (or one part of them) into
//! `hist.safetensors`, `summary.json`, the density plots and, with a tokenizer, the decoded
//! top contexts; and `sae hist merge`: parts into exactly what one pass gives.

use std::path::PathBuf;

use anyhow::bail;

use super::inputs::SaeInputs;
use super::merge::merge_hist;
use super::outputs::{hist_files, top_examples};
use super::progress;
use crate::analysis::hist::{compute, HistConfig, Histograms};

pub struct HistRequest {
    pub inputs: SaeInputs,
    pub out: PathBuf,
    pub config: HistConfig,
    /// Thresholded SAEs: latents kept per row.
    pub cap: usize,
    /// tokenizer.json, for top_examples.jsonl, and the tokens of context either side.
    pub tokenizer: Option<PathBuf>,
    pub context: usize,
    pub quiet: bool,
}

pub fn hist(request: &HistRequest) -> anyhow::Result<Histograms> {
    let (inputs, config) = (&request.inputs, request.config);
    if inputs.shards.is_empty() {
        bail!("no input shards given");
    }
    let tokenizer = request
        .tokenizer
        .as_deref()
        .map(top_examples::load_tokenizer)
        .transpose()?;
    if inputs.part.is_some() {
        if config.range.is_none() {
            bail!("--part needs --range LO,HI: every part must bin its activations the same way");
        }
        if config.cooccurrence > 0 {
            bail!("--part cannot count --cooccurrence: the tracked features come from the whole data's fire counts");
        }
    }
    let opened = inputs.open()?;
    let passes: u64 = if config.cooccurrence > 0 { 2 } else { 1 };
    let total = passes * opened.rows();
    let gpu = inputs.gpu()?;
    let sae = inputs.upload(&gpu, &opened, request.cap, config.batch_size)?;
    let bar = progress::rows(total, request.quiet);
    let mut hist = compute(&gpu, &sae, opened.shards, config, |rows| bar.inc(rows))?;
    hist.part = opened.part;
    bar.finish_and_clear();
    let out = &request.out;
    if let Some(tokenizer) = &tokenizer {
        top_examples::write_top_examples(out, &hist, &inputs.tensor, tokenizer, request.context)?;
    }
    let provenance = serde_json::to_value(&opened.loaded.provenance)?;
    let sae_dir = opened.loaded.dir.display().to_string();
    hist_files::save(&hist, &sae_dir, Some(&provenance), out)?;
    Ok(hist)
}

pub struct HistMergeRequest {
    pub parts: Vec<PathBuf>,
    pub out: PathBuf,
    pub tokenizer: Option<PathBuf>,
    pub context: usize,
    pub tensor: String,
}

pub fn merge(request: &HistMergeRequest) -> anyhow::Result<Histograms> {
    let tokenizer = request
        .tokenizer
        .as_deref()
        .map(top_examples::load_tokenizer)
        .transpose()?;
    let (merged, sae) = merge_hist(&request.parts)?;
    if let Some(tokenizer) = &tokenizer {
        let (out, tensor) = (&request.out, &request.tensor);
        top_examples::write_top_examples(out, &merged, tensor, tokenizer, request.context)?;
    }
    hist_files::save(&merged, &sae.0, sae.1.as_ref(), &request.out)?;
    Ok(merged)
}
