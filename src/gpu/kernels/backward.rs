//! Backward pass of the TopK reconstruction loss without float atomics: a reverse index
//! (which entries chose each latent, in row order) followed by segmented reductions.

use super::{check_len, dim, LatentRange};
use crate::gpu::bindings::backward::*;
use crate::gpu::dispatch::{tiles, Grid};
use crate::gpu::error::GpuResult;
use crate::gpu::params::BackwardParams;
use crate::gpu::{Gpu, GpuBuffer, PipelineKey, Recorder, Shader};

const WG: u32 = 64;

/// Dot products of at most this length take `code_grad_narrow` (one invocation per entry).
pub const NARROW_D_IN: usize = 256;
/// `scale_slot` value meaning "no multiplier" (NO_SLOT in the shader).
const NO_SLOT: u32 = u32::MAX;

/// The shape of one batch through a TopK SAE (or transcoder, whose decoder writes d_out).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BackwardShape {
    pub rows: usize,
    pub d_in: usize,
    pub d_out: usize,
    pub d_sae: usize,
    pub k: usize,
}

impl BackwardShape {
    pub fn entries(&self) -> usize {
        self.rows * self.k
    }

    /// u32 words in each latent's bitmask of rows.
    pub fn words_per_latent(&self) -> usize {
        self.rows.div_ceil(32)
    }

    fn params(&self, kernel: &'static str) -> GpuResult<BackwardParams> {
        Ok(BackwardParams {
            rows: dim(kernel, "rows", self.rows)?,
            d_in: dim(kernel, "d_in", self.d_in)?,
            d_sae: dim(kernel, "d_sae", self.d_sae)?,
            k: dim(kernel, "k", self.k)?,
            entries: dim(kernel, "rows × k", self.entries())?,
            words_per_latent: dim(kernel, "row words", self.words_per_latent())?,
            col_tiles: tiles(self.d_in, WG),
            stat_slot: 0,
            scale: 0.0,
            scale_slot: NO_SLOT,
            accumulate: 0,
            latent_start: 0,
            block_len: dim(kernel, "d_sae", self.d_sae)?,
            d_out: dim(kernel, "d_out", self.d_out)?,
            centred: 1,
            _pad: 0,
        })
    }

    /// Parameters for the latents of one block of a split dictionary.
    fn block_params(&self, kernel: &'static str, block: LatentRange) -> GpuResult<BackwardParams> {
        crate::gpu::error::ensure(block.end() <= self.d_sae, kernel, || {
            format!(
                "latent block {}..{} exceeds d_sae = {}",
                block.start,
                block.end(),
                self.d_sae
            )
        })?;
        Ok(BackwardParams {
            latent_start: dim(kernel, "first latent", block.start)?,
            block_len: dim(kernel, "block latents", block.len)?,
            ..self.params(kernel)?
        })
    }
}

fn key(entry: &'static str) -> PipelineKey {
    PipelineKey::new(Shader::Backward, entry).define("WG", WG)
}

fn grid(rec: &Recorder<'_>, workgroups: usize) -> Grid {
    Grid::linear(
        workgroups as u64,
        rec.gpu().limits.max_compute_workgroups_per_dimension,
    )
}

/// Scratch buffers of the reverse index, allocated once per batch shape.
pub struct ReverseIndex {
    pub shape: BackwardShape,
    /// [d_sae, words_per_latent] u32: bit r of latent i is set when row r chose i.
    pub row_bits: GpuBuffer,
    /// [d_sae] u32: how many rows chose each latent.
    pub counts: GpuBuffer,
    /// [d_sae + 1] u32: start of each latent's segment in `entries`.
    pub offsets: GpuBuffer,
    /// [rows · k] u32: entry ids grouped by latent, in row order within a latent.
    pub entries: GpuBuffer,
}

impl ReverseIndex {
    pub fn new(gpu: &Gpu, shape: BackwardShape) -> GpuResult<Self> {
        Ok(ReverseIndex {
            shape,
            row_bits: gpu.storage::<u32>("row_bits", shape.d_sae * shape.words_per_latent())?,
            counts: gpu.storage::<u32>("latent_counts", shape.d_sae)?,
            offsets: gpu.storage::<u32>("latent_offsets", shape.d_sae + 1)?,
            entries: gpu.storage::<u32>("reverse_index", shape.entries())?,
        })
    }
}

/// Where the loss gradient's scale comes from: a constant, optionally times a value the GPU
/// computed earlier in the step (AuxK's dead-latent factor).
#[derive(Clone, Copy, Debug)]
pub struct LossScale {
    pub constant: f32,
    /// Denominator: `stats[variance_slot]`.
    pub variance_slot: usize,
    /// Extra factor `stats[slot]`, if any.
    pub factor_slot: Option<usize>,
}

impl LossScale {
    /// d FVU / d x̂ = 2 (x̂ − x) / Σ‖x − x̄‖².
    pub fn fvu(variance_slot: usize) -> Self {
        LossScale {
            constant: 2.0,
            variance_slot,
            factor_slot: None,
        }
    }
}

/// `grad_out = scale.constant · (x̂ − x) / stats[variance_slot] · stats[factor_slot]`.
#[allow(clippy::too_many_arguments)]
pub fn launch_loss_grad(
    rec: &mut Recorder<'_>,
    x_hat: &GpuBuffer,
    x: &GpuBuffer,
    stats: &GpuBuffer,
    scale: LossScale,
    grad_out: &GpuBuffer,
    shape: BackwardShape,
) -> GpuResult<()> {
    launch_loss_grad_into(rec, x_hat, x, stats, scale, grad_out, shape, false)
}

/// [`launch_loss_grad`]; with `accumulate`, added to what `grad_out` holds (Matryoshka's
/// prefix losses all reach b_dec).
#[allow(clippy::too_many_arguments)]
pub fn launch_loss_grad_into(
    rec: &mut Recorder<'_>,
    x_hat: &GpuBuffer,
    x: &GpuBuffer,
    stats: &GpuBuffer,
    scale: LossScale,
    grad_out: &GpuBuffer,
    shape: BackwardShape,
    accumulate: bool,
) -> GpuResult<()> {
    const KERNEL: &str = "loss_grad";
    let n = shape.rows * shape.d_out;
    check_len(KERNEL, x_hat, n)?;
    check_len(KERNEL, x, n)?;
    check_len(
        KERNEL,
        stats,
        scale.variance_slot.max(scale.factor_slot.unwrap_or(0)) + 1,
    )?;
    check_len(KERNEL, grad_out, n)?;
    let mut params = shape.params(KERNEL)?;
    params.accumulate = u32::from(accumulate);
    params.stat_slot = dim(KERNEL, "stat slot", scale.variance_slot)?;
    params.scale = scale.constant;
    if let Some(slot) = scale.factor_slot {
        params.scale_slot = dim(KERNEL, "stat slot", slot)?;
    }
    let grid = rec.threads_grid(n, WG);
    rec.launch(
        &key(KERNEL),
        &params,
        &[(X_HAT, x_hat), (X, x), (STATS, stats), (GRAD_OUT, grad_out)],
        grid,
    )
}

/// `aux_diff = e_hat − (x − x̂)`: the AuxK reconstruction error of the residual.
pub fn launch_aux_residual(
    rec: &mut Recorder<'_>,
    e_hat: &GpuBuffer,
    x: &GpuBuffer,
    x_hat: &GpuBuffer,
    aux_diff: &GpuBuffer,
    shape: BackwardShape,
) -> GpuResult<()> {
    const KERNEL: &str = "aux_residual";
    let n = shape.rows * shape.d_out;
    for buffer in [e_hat, x, x_hat, aux_diff] {
        check_len(KERNEL, buffer, n)?;
    }
    let params = shape.params(KERNEL)?;
    let grid = rec.threads_grid(n, WG);
    rec.launch(
        &key(KERNEL),
        &params,
        &[(X_HAT, x_hat), (X, x), (E_HAT, e_hat), (AUX_DIFF, aux_diff)],
        grid,
    )
}

/// `code_grad[e] = ⟨grad_out[row], W_dec[latent]⟩` where the latent fired, else 0.
pub fn launch_code_grad(
    rec: &mut Recorder<'_>,
    grad_out: &GpuBuffer,
    top_idx: &GpuBuffer,
    top_val: &GpuBuffer,
    w_dec: &GpuBuffer,
    code_grad: &GpuBuffer,
    shape: BackwardShape,
) -> GpuResult<()> {
    let block = LatentRange::whole(shape.d_sae);
    launch_code_grad_block(
        rec, grad_out, top_idx, top_val, w_dec, block, code_grad, shape, false,
    )
}

/// [`launch_code_grad`] for the entries whose latent lies in `block` (`w_dec` holds the
/// block's rows, or starts with them); other entries are left as they are. With
/// `accumulate`, added to what `code_grad` holds.
#[allow(clippy::too_many_arguments)]
pub fn launch_code_grad_block(
    rec: &mut Recorder<'_>,
    grad_out: &GpuBuffer,
    top_idx: &GpuBuffer,
    top_val: &GpuBuffer,
    w_dec: &GpuBuffer,
    block: LatentRange,
    code_grad: &GpuBuffer,
    shape: BackwardShape,
    accumulate: bool,
) -> GpuResult<()> {
    const KERNEL: &str = "code_grad";
    check_len(KERNEL, grad_out, shape.rows * shape.d_out)?;
    check_len(KERNEL, top_idx, shape.entries())?;
    check_len(KERNEL, top_val, shape.entries())?;
    check_len(KERNEL, w_dec, block.len * shape.d_out)?;
    check_len(KERNEL, code_grad, shape.entries())?;
    let mut params = shape.block_params(KERNEL, block)?;
    params.accumulate = u32::from(accumulate);
    let (entry, grid) = if shape.d_out <= NARROW_D_IN {
        ("code_grad_narrow", rec.threads_grid(shape.entries(), WG))
    } else {
        (KERNEL, grid(rec, shape.entries()))
    };
    rec.launch(
        &key(entry),
        &params,
        &[
            (GRAD_OUT, grad_out),
            (TOP_IDX, top_idx),
            (TOP_VAL, top_val),
            (W_DEC, w_dec),
            (CODE_GRAD_OUT, code_grad),
        ],
        grid,
    )
}

/// Builds the reverse index from `top_idx`: clear, mark rows per latent, prefix-sum the
/// counts, scatter each entry to its stable position.
pub fn launch_reverse_index(
    rec: &mut Recorder<'_>,
    top_idx: &GpuBuffer,
    index: &ReverseIndex,
) -> GpuResult<()> {
    let shape = index.shape;
    check_len("mark_latents", top_idx, shape.entries())?;
    let params = shape.params("mark_latents")?;
    rec.clear(&index.row_bits);
    rec.clear(&index.counts);
    let per_entry = rec.threads_grid(shape.entries(), WG);
    rec.launch(
        &key("mark_latents"),
        &params,
        &[
            (TOP_IDX, top_idx),
            (ROW_BITS, &index.row_bits),
            (COUNTS, &index.counts),
        ],
        per_entry,
    )?;
    rec.launch(
        &key("scan_counts"),
        &params,
        &[(COUNTS, &index.counts), (OFFSETS, &index.offsets)],
        Grid::new(1, 1, 1),
    )?;
    rec.launch(
        &key("scatter_entries"),
        &params,
        &[
            (TOP_IDX, top_idx),
            (ROW_BITS, &index.row_bits),
            (OFFSETS, &index.offsets),
            (REVERSE_INDEX, &index.entries),
        ],
        per_entry,
    )
}

/// `grad_w_dec[i, c] = Σ_{entries e of latent i} top_val[e] · grad_out[row(e), c]` (zero rows
/// for latents nobody chose); with `accumulate`, added to what `grad_w_dec` holds.
pub fn launch_decoder_weight_grad(
    rec: &mut Recorder<'_>,
    index: &ReverseIndex,
    top_val: &GpuBuffer,
    grad_out: &GpuBuffer,
    grad_w_dec: &GpuBuffer,
    accumulate: bool,
) -> GpuResult<()> {
    let block = LatentRange::whole(index.shape.d_sae);
    launch_decoder_weight_grad_block(rec, index, top_val, grad_out, grad_w_dec, block, accumulate)
}

/// [`launch_decoder_weight_grad`] for the latents of `block` (`grad_w_dec` [block.len, d_out]).
pub fn launch_decoder_weight_grad_block(
    rec: &mut Recorder<'_>,
    index: &ReverseIndex,
    top_val: &GpuBuffer,
    grad_out: &GpuBuffer,
    grad_w_dec: &GpuBuffer,
    block: LatentRange,
    accumulate: bool,
) -> GpuResult<()> {
    const KERNEL: &str = "decoder_weight_grad";
    let shape = index.shape;
    check_len(KERNEL, top_val, shape.entries())?;
    check_len(KERNEL, grad_out, shape.rows * shape.d_out)?;
    check_len(KERNEL, grad_w_dec, block.len * shape.d_out)?;
    let mut params = shape.block_params(KERNEL, block)?;
    params.accumulate = u32::from(accumulate);
    params.col_tiles = tiles(shape.d_out, WG);
    let grid = grid(rec, block.len * params.col_tiles as usize);
    rec.launch(
        &key(KERNEL),
        &params,
        &[
            (GRAD_OUT, grad_out),
            (TOP_VAL, top_val),
            (OFFSETS, &index.offsets),
            (REVERSE_INDEX, &index.entries),
            (GRAD_W_DEC, grad_w_dec),
        ],
        grid,
    )
}

/// `grad_w_enc[c, i] = Σ_e code_grad[e] · (x[row(e), c] − b_dec[c])`, `grad_b_enc[i] = Σ_e code_grad[e]`;
/// with `accumulate`, added to what the outputs hold.
#[allow(clippy::too_many_arguments)]
pub fn launch_encoder_weight_grad(
    rec: &mut Recorder<'_>,
    index: &ReverseIndex,
    code_grad: &GpuBuffer,
    x: &GpuBuffer,
    b_dec: &GpuBuffer,
    grad_w_enc: &GpuBuffer,
    grad_b_enc: &GpuBuffer,
    accumulate: bool,
) -> GpuResult<()> {
    let block = LatentRange::whole(index.shape.d_sae);
    let grads = (grad_w_enc, grad_b_enc);
    launch_encoder_weight_grad_block(rec, index, code_grad, x, b_dec, grads, block, accumulate)
}

/// [`launch_encoder_weight_grad`] for the latents of `block`: `grads` are the block's
/// ∂W_enc [d_in, block.len] and ∂b_enc [block.len].
#[allow(clippy::too_many_arguments)]
pub fn launch_encoder_weight_grad_block(
    rec: &mut Recorder<'_>,
    index: &ReverseIndex,
    code_grad: &GpuBuffer,
    x: &GpuBuffer,
    b_dec: &GpuBuffer,
    grads: (&GpuBuffer, &GpuBuffer),
    block: LatentRange,
    accumulate: bool,
) -> GpuResult<()> {
    const KERNEL: &str = "encoder_weight_grad";
    let (grad_w_enc, grad_b_enc) = grads;
    let shape = index.shape;
    check_len(KERNEL, code_grad, shape.entries())?;
    check_len(KERNEL, x, shape.rows * shape.d_in)?;
    check_len(KERNEL, b_dec, shape.d_in)?;
    check_len(KERNEL, grad_w_enc, shape.d_in * block.len)?;
    check_len(KERNEL, grad_b_enc, block.len)?;
    let mut params = shape.block_params(KERNEL, block)?;
    params.accumulate = u32::from(accumulate);
    let grid = grid(rec, block.len * params.col_tiles as usize);
    rec.launch(
        &key(KERNEL),
        &params,
        &[
            (X, x),
            (CODE_GRAD_OUT, code_grad),
            (OFFSETS, &index.offsets),
            (REVERSE_INDEX, &index.entries),
            (B_DEC, b_dec),
            (GRAD_W_ENC, grad_w_enc),
            (GRAD_B_ENC, grad_b_enc),
        ],
        grid,
    )
}

/// `grad_b_dec[c] = Σ_r grad_out[r, c] − Σ_i W_enc[c, i] · grad_b_enc[i]`.
pub fn launch_bias_dec_grad(
    rec: &mut Recorder<'_>,
    grad_out: &GpuBuffer,
    w_enc: &GpuBuffer,
    grad_b_enc: &GpuBuffer,
    grad_b_dec: &GpuBuffer,
    shape: BackwardShape,
) -> GpuResult<()> {
    let block = LatentRange::whole(shape.d_sae);
    launch_bias_dec_grad_block(
        rec, grad_out, w_enc, grad_b_enc, block, grad_b_dec, shape, true,
    )
}

/// [`launch_bias_dec_grad`] with one block's W_enc [d_in, block.len] and ∂b_enc: the block
/// starting at latent 0 writes `Σ_r g − its part`, later blocks subtract theirs. Without
/// `centred` (a transcoder, whose b_dec is the output's only) it is `Σ_r g`, which the first
/// block writes and later blocks leave.
#[allow(clippy::too_many_arguments)]
pub fn launch_bias_dec_grad_block(
    rec: &mut Recorder<'_>,
    grad_out: &GpuBuffer,
    w_enc: &GpuBuffer,
    grad_b_enc: &GpuBuffer,
    block: LatentRange,
    grad_b_dec: &GpuBuffer,
    shape: BackwardShape,
    centred: bool,
) -> GpuResult<()> {
    const KERNEL: &str = "bias_dec_grad";
    if !centred && block.start > 0 {
        return Ok(());
    }
    crate::gpu::error::ensure(!centred || shape.d_in == shape.d_out, KERNEL, || {
        format!(
            "b_dec centres the input only when d_in = d_out (here {} and {})",
            shape.d_in, shape.d_out
        )
    })?;
    check_len(KERNEL, grad_out, shape.rows * shape.d_out)?;
    check_len(KERNEL, w_enc, shape.d_in * block.len)?;
    check_len(KERNEL, grad_b_enc, block.len)?;
    check_len(KERNEL, grad_b_dec, shape.d_out)?;
    let mut params = shape.block_params(KERNEL, block)?;
    params.accumulate = u32::from(block.start > 0);
    params.centred = u32::from(centred);
    let grid = grid(rec, shape.d_out);
    rec.launch(
        &key(KERNEL),
        &params,
        &[
            (GRAD_OUT, grad_out),
            (GRAD_B_ENC, grad_b_enc),
            (W_ENC, w_enc),
            (GRAD_B_DEC, grad_b_dec),
        ],
        grid,
    )
}
