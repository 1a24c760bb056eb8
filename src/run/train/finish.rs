//! A run's end: its held-out figures (of the SAE as it is used after training), the feature
//! density over the training tokens, the exports in sparsify's and SAELens' layouts, the
//! summary and the plots.

use serde_json::json;

use super::data::Data;
use super::member::Member;
use super::report::TrainReport;
use crate::analysis::eval::{evaluate_stream, EvalSummary};
use crate::analysis::scan::Scales;
use crate::data::DEFAULT_TENSOR;
use crate::gpu::Gpu;
use crate::io::{write_json_atomic, write_safetensors, TensorOut};
use crate::run::outputs::plots;
use crate::sae::formats::{save_saelens, save_sparsify};
use crate::sae::params::SaeParams;
use crate::sae::GpuSae;

/// Held-out figures of a run, or `None` without held-out data: of the SAE as it is used after
/// training, as `sae eval` computes them.
pub fn evaluate(
    gpu: &Gpu,
    member: &Member<'_>,
    data: &Data,
) -> anyhow::Result<Option<EvalSummary>> {
    if data.eval.is_empty() {
        return Ok(None);
    }
    let config = &member.config;
    let batch_rows = config.data.batch_size;
    // The trainer's own SAE when it is used as trained (TopK), else its inference form.
    let uploaded;
    let sae = match member.trainer.inference_activation()? {
        None => &member.trainer.sae,
        Some(_) => {
            uploaded = {
                let mut sae = GpuSae::upload(gpu, &member.inference_params()?, batch_rows)?;
                sae.set_matmul(gpu, member.trainer.sae.matmul())?;
                sae
            };
            &uploaded
        }
    };
    let stream = data.eval_stream(config)?;
    let scales = Scales {
        input: member.scale,
        target: member.target_scale,
    };
    let acc = evaluate_stream(gpu, sae, batch_rows, stream, scales, |_| {})?;
    Ok(Some(acc.summary()))
}

/// A finished run's held-out figures, density, exports, summary and plots.
pub fn finish_member(
    gpu: &Gpu,
    member: &Member<'_>,
    data: &Data,
    step: u64,
    start_step: u64,
    seconds: f64,
) -> anyhow::Result<TrainReport> {
    let (config, run_dir, tokens) = (&member.config, &member.run_dir, member.tokens);
    let heldout = evaluate(gpu, member, data)?;
    let mut params = member.inference_params()?;
    params.fold_scales(member.scale, member.target_scale);
    let log10_density = crate::analysis::hist::log10_density(&member.fire_counts, tokens);
    write_safetensors(
        &run_dir.join("sparsity.safetensors"),
        &[TensorOut::f32(
            "sparsity",
            &[config.model.d_sae],
            &log10_density,
        )],
        None,
    )?;
    export(member, &params, &log10_density)?;
    let trained = step.saturating_sub(start_step) * config.data.batch_size as u64;
    let report = TrainReport {
        steps: step,
        tokens,
        seconds,
        tokens_per_s: trained as f64 / seconds.max(1e-9),
        heldout,
        run_dir: run_dir.clone(),
        peak_gpu_bytes: gpu.allocations.counts().peak_bytes,
        matmul: member.trainer.sae.matmul().name(),
        f16_overflow: match member.trainer.sae.coop {
            Some(_) => Some(member.trainer.sae.f16_overflow(gpu)?),
            None => None,
        },
    };
    write_json_atomic(&run_dir.join("summary.json"), &report)?;
    let metrics = run_dir.join("metrics.jsonl");
    if let Err(error) = plots::training_plots(run_dir, &metrics, &log10_density) {
        tracing::warn!("could not draw the plots: {error:#}");
    }
    Ok(report)
}

/// The trained SAE in the layouts the run asked for.
fn export(member: &Member<'_>, params: &SaeParams, log10_density: &[f32]) -> anyhow::Result<()> {
    let (format, run_dir) = (member.config.output.format, &member.run_dir);
    if format.sparsify() {
        save_sparsify(&run_dir.join("sparsify"), params)?;
    }
    if format.saelens() {
        // The tensors read stand for hook points when they are named (not the default name).
        let data = &member.config.data;
        let hook = match data.tensor.as_str() {
            DEFAULT_TENSOR => "unknown",
            name => name,
        };
        let mut metadata = json!({
            "sae_lens_version": "6.0.0",
            "sae_wgpu_version": env!("CARGO_PKG_VERSION"),
            "model_name": "unknown",
            "hook_name": hook,
            "context_size": 0,
            "training_tokens": member.tokens,
        });
        if data.is_paired() {
            metadata["hook_name_out"] = json!(data.target_tensor());
        }
        let dir = run_dir.join("saelens");
        save_saelens(&dir, params, Some(log10_density), metadata)?;
    }
    Ok(())
}
