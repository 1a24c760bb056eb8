//! The `sae eval` job: reconstruction metrics of any SAE over shards (or one part of them),
//! with the sums a merge of the parts needs.

use serde_json::json;

use super::inputs::SaeInputs;
use super::progress;
use crate::analysis::eval::{check_targets, evaluate, EvalAccumulator, EvalOptions, EvalSummary};
use crate::data::parts::PartInfo;
use crate::gpu::{F16Overflow, Matmul};
use crate::sae::formats::Provenance;

pub struct EvalRequest {
    pub inputs: SaeInputs,
    pub options: EvalOptions,
    /// No progress bar.
    pub quiet: bool,
}

pub struct EvalReport {
    pub summary: EvalSummary,
    /// The sums behind every figure (what `sae eval merge` adds).
    pub stats: EvalAccumulator,
    /// Latents kept per row of a thresholded SAE.
    pub cap: usize,
    pub matmul: Matmul,
    /// With f16 operands: rows that were not finite and weights clamped to f16's range.
    pub f16_overflow: F16Overflow,
    pub provenance: Provenance,
    pub part: Option<PartInfo>,
}

impl EvalReport {
    /// `sae eval --json`: the figures, the SAE, the cap, the sums and the part.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        let mut value = serde_json::to_value(&self.summary)?;
        value["sae"] = serde_json::to_value(&self.provenance)?;
        value["cap"] = json!(self.cap);
        value["matmul"] = json!(self.matmul.name());
        if let Matmul::F16(tile) = self.matmul {
            value["matmul_tile"] = serde_json::to_value(tile)?;
            value["f16_overflow"] = serde_json::to_value(self.f16_overflow)?;
        }
        value["stats"] = serde_json::to_value(&self.stats)?;
        if let Some(info) = &self.part {
            value["part"] = serde_json::to_value(info)?;
        }
        Ok(value)
    }
}

pub fn eval(request: &EvalRequest) -> anyhow::Result<EvalReport> {
    anyhow::ensure!(!request.inputs.shards.is_empty(), "no input shards given");
    anyhow::ensure!(
        request.options.batch_rows > 0,
        "--batch-size must be at least 1"
    );
    let opened = request.inputs.open()?;
    let params = &opened.loaded.params;
    check_targets(params, opened.targets.is_some())?;
    let gpu = request.inputs.gpu()?;
    let bar = progress::rows(opened.rows(), request.quiet);
    let shards = std::sync::Arc::new(opened.shards);
    let targets = opened.targets.map(std::sync::Arc::new);
    let options = request.options;
    let done = evaluate(&gpu, params, shards, targets, options, |rows| bar.inc(rows))?;
    bar.finish_and_clear();
    Ok(EvalReport {
        summary: done.stats.summary(),
        stats: done.stats,
        cap: done.cap,
        matmul: done.matmul,
        f16_overflow: done.f16_overflow,
        provenance: opened.loaded.provenance,
        part: opened.part,
    })
}
