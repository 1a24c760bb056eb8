//! The ReLU family's sparsity penalties (shaders/penalty.wgsl): decoder row norms, the
//! gradients of the decoder-norm weighted L1 (ReLU) and tanh (JumpReLU) penalties, and
//! gradient-norm clipping.

use super::backward::ReverseIndex;
use super::{check_len, dim, LatentRange};
use crate::gpu::bindings::penalty::*;
use crate::gpu::dispatch::{tiles, Grid};
use crate::gpu::error::GpuResult;
use crate::gpu::params::PenaltyParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const WG: u32 = 256;

/// A penalty on the codes f weighted by their decoder norms n: λ·mean_b Σᵢ fᵢ·nᵢ (L1) or
/// λ·mean_b Σᵢ tanh(scale·fᵢ·nᵢ) (Anthropic's JumpReLU recipe, scale 4).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CodePenalty {
    L1,
    Tanh { scale: f32 },
}

impl CodePenalty {
    fn tanh_scale(self) -> f32 {
        match self {
            CodePenalty::L1 => 0.0,
            CodePenalty::Tanh { scale } => scale,
        }
    }
}

fn key(entry: &'static str) -> PipelineKey {
    PipelineKey::new(Shader::Penalty, entry).define("WG", WG)
}

fn workgroups(rec: &Recorder<'_>, n: usize) -> Grid {
    Grid::linear(
        n as u64,
        rec.gpu().limits.max_compute_workgroups_per_dimension,
    )
}

fn block_params(kernel: &'static str, block: LatentRange, d_in: usize) -> GpuResult<PenaltyParams> {
    Ok(PenaltyParams {
        d_in: dim(kernel, "d_in", d_in)?,
        latent_start: dim(kernel, "first latent", block.start)?,
        block_len: dim(kernel, "block latents", block.len)?,
        col_tiles: tiles(d_in, WG),
        ..PenaltyParams::default()
    })
}

/// `norms[block.start + i] = ‖w_dec[i]‖` for the block's rows (`w_dec` holds the block).
pub fn launch_row_norms(
    rec: &mut Recorder<'_>,
    w_dec: &GpuBuffer,
    block: LatentRange,
    d_in: usize,
    norms: &GpuBuffer,
) -> GpuResult<()> {
    const KERNEL: &str = "row_norms";
    check_len(KERNEL, w_dec, block.len * d_in)?;
    check_len(KERNEL, norms, block.end())?;
    let params = block_params(KERNEL, block, d_in)?;
    let grid = workgroups(rec, block.len);
    rec.launch(
        &key(KERNEL),
        &params,
        &[(W_DEC, w_dec), (NORMS, norms)],
        grid,
    )
}

/// `code_grad[e] += coeff · ∂penalty/∂f` for the `entries` entries of the block's latents that
/// fired (L1: the latent's decoder norm): the penalty's gradient on the codes.
#[allow(clippy::too_many_arguments)]
pub fn launch_penalty_code_grad(
    rec: &mut Recorder<'_>,
    top_idx: &GpuBuffer,
    top_val: &GpuBuffer,
    norms: &GpuBuffer,
    block: LatentRange,
    entries: usize,
    penalty: CodePenalty,
    coeff: f32,
    code_grad: &GpuBuffer,
) -> GpuResult<()> {
    const KERNEL: &str = "penalty_code_grad";
    check_len(KERNEL, top_idx, entries)?;
    check_len(KERNEL, top_val, entries)?;
    check_len(KERNEL, code_grad, entries)?;
    check_len(KERNEL, norms, block.end())?;
    let params = PenaltyParams {
        n: dim(KERNEL, "entries", entries)?,
        coeff,
        tanh_scale: penalty.tanh_scale(),
        ..block_params(KERNEL, block, 0)?
    };
    let grid = rec.threads_grid(entries, WG);
    rec.launch(
        &key(KERNEL),
        &params,
        &[
            (NORMS, norms),
            (TOP_IDX, top_idx),
            (TOP_VAL, top_val),
            (CODE_GRAD, code_grad),
        ],
        grid,
    )
}

/// `grad_w_dec[i] += coeff · (Σ over latent i's codes of ∂penalty/∂n) · w_dec[i] / ‖w_dec[i]‖` for
/// the block's latents (L1: the sum of its codes): the penalty's gradient on the decoder rows.
#[allow(clippy::too_many_arguments)]
pub fn launch_penalty_decoder_grad(
    rec: &mut Recorder<'_>,
    index: &ReverseIndex,
    top_val: &GpuBuffer,
    w_dec: &GpuBuffer,
    norms: &GpuBuffer,
    block: LatentRange,
    penalty: CodePenalty,
    coeff: f32,
    grad_w_dec: &GpuBuffer,
) -> GpuResult<()> {
    const KERNEL: &str = "penalty_decoder_grad";
    let shape = index.shape;
    check_len(KERNEL, top_val, shape.entries())?;
    check_len(KERNEL, w_dec, block.len * shape.d_out)?;
    check_len(KERNEL, grad_w_dec, block.len * shape.d_out)?;
    check_len(KERNEL, norms, block.end())?;
    let params = PenaltyParams {
        coeff,
        tanh_scale: penalty.tanh_scale(),
        ..block_params(KERNEL, block, shape.d_out)?
    };
    let grid = workgroups(rec, block.len * params.col_tiles as usize);
    rec.launch(
        &key(KERNEL),
        &params,
        &[
            (W_DEC, w_dec),
            (NORMS, norms),
            (TOP_VAL, top_val),
            (OFFSETS, &index.offsets),
            (REVERSE_INDEX, &index.entries),
            (GRAD_W_DEC, grad_w_dec),
        ],
        grid,
    )
}

/// `stats[out_slot] = min(1, clip / √Σ stats[first_slot .. first_slot + count])`: the factor
/// that clips the gradient's global norm to `clip`.
pub fn launch_clip_factor(
    rec: &mut Recorder<'_>,
    stats: &GpuBuffer,
    first_slot: usize,
    count: usize,
    out_slot: usize,
    clip: f32,
) -> GpuResult<()> {
    const KERNEL: &str = "clip_factor";
    check_len(KERNEL, stats, (first_slot + count).max(out_slot + 1))?;
    let params = PenaltyParams {
        first_slot: dim(KERNEL, "slot", first_slot)?,
        count: dim(KERNEL, "slots", count)?,
        out_slot: dim(KERNEL, "slot", out_slot)?,
        clip,
        ..PenaltyParams::default()
    };
    rec.launch(&key(KERNEL), &params, &[(STATS, stats)], Grid::new(1, 1, 1))
}

/// `a[i] *= stats[slot]` for the first `n` elements.
pub fn launch_scale_by_slot(
    rec: &mut Recorder<'_>,
    a: &GpuBuffer,
    n: usize,
    stats: &GpuBuffer,
    slot: usize,
) -> GpuResult<()> {
    const KERNEL: &str = "scale_by_slot";
    check_len(KERNEL, a, n)?;
    check_len(KERNEL, stats, slot + 1)?;
    let params = PenaltyParams {
        n: dim(KERNEL, "elements", n)?,
        out_slot: dim(KERNEL, "slot", slot)?,
        ..PenaltyParams::default()
    };
    let grid = rec.threads_grid(n, WG);
    rec.launch(&key(KERNEL), &params, &[(STATS, stats), (A, a)], grid)
}
