//! Host mirrors of the WGSL `Params` structs. Each is `#[repr(C)]` + Pod, padded to a multiple
//! of 16 bytes, and must list the same fields in the same order as the struct at the top of
//! its shader (the size assertions below catch a field added on one side only).

use bytemuck::{Pod, Zeroable};

/// shaders/encoder_gemm.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct GemmParams {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    /// 1 when k and n are multiples of 4: tiles load vec4s.
    pub aligned: u32,
}

/// shaders/topk.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct TopKParams {
    pub rows: u32,
    pub cols: u32,
    pub k: u32,
    pub sort_n: u32,
    pub masked: u32,
    pub thresholded: u32,
    /// Latent id of column 0 (a block of a split dictionary); indexes `eligible`/`threshold`.
    pub col_offset: u32,
    /// Row stride and first column of the output (candidate slots of one block).
    pub out_stride: u32,
    pub out_offset: u32,
    /// 1: `h` holds candidates; output ids come from `cand_idx` (the merge over blocks).
    pub remap: u32,
    /// 1: `count_active` adds to what the output holds.
    pub accumulate: u32,
    pub _pad: u32,
}

/// shaders/decoder.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct DecoderParams {
    pub rows: u32,
    /// The output's width (d_out).
    pub d_out: u32,
    pub k: u32,
    pub col_tiles: u32,
    /// Latents [latent_start, latent_start + block_len) live in this `w_dec` block.
    pub latent_start: u32,
    pub block_len: u32,
    /// 1: add to `x_hat` instead of writing `base + Σ`.
    pub accumulate: u32,
    /// 1: `base` holds a row per output row ([rows, d_out]); 0: one bias row ([d_out]).
    pub base_rows: u32,
}

/// shaders/backward.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct BackwardParams {
    pub rows: u32,
    pub d_in: u32,
    pub d_sae: u32,
    pub k: u32,
    pub entries: u32,
    pub words_per_latent: u32,
    pub col_tiles: u32,
    pub stat_slot: u32,
    pub scale: f32,
    pub scale_slot: u32,
    pub accumulate: u32,
    /// Latents [latent_start, latent_start + block_len) are the block's weights and gradients.
    pub latent_start: u32,
    pub block_len: u32,
    /// The decoder's width (d_in for an SAE).
    pub d_out: u32,
    /// 1 when b_dec is subtracted from the input too (an SAE; 0 for a transcoder).
    pub centred: u32,
    pub _pad: u32,
}

/// shaders/optim.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct OptimParams {
    pub n: u32,
    pub rows: u32,
    pub cols: u32,
    pub _pad0: u32,
    pub beta1: f32,
    pub beta2: f32,
    pub eps: f32,
    pub step_size: f32,
    pub bias2_sqrt: f32,
    pub norm_eps: f32,
    pub one_minus_beta1: f32,
    pub one_minus_beta2: f32,
}

/// shaders/reduce.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct ReduceParams {
    pub n: u32,
    pub rows: u32,
    pub cols: u32,
    pub k: u32,
    pub slot: u32,
    pub partials: u32,
    pub threshold: u32,
    pub _pad: u32,
}

/// shaders/hist.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct HistParams {
    pub d_sae: u32,
    pub k: u32,
    pub entries: u32,
    pub bins: u32,
    pub log_lo: f32,
    pub log_span: f32,
    pub rows: u32,
    pub tracked: u32,
}

/// shaders/cooccurrence_pairs.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PairCountParams {
    pub entries: u32,
    pub block_lo: u32,
    pub block_rows: u32,
    pub d_sae: u32,
    pub measure: u32,
    pub min_joint: u32,
    pub units: f32,
    pub _pad: u32,
}

/// shaders/input_norm.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct InputNormParams {
    pub rows: u32,
    pub d_in: u32,
    /// 1: constant_norm_rescale, 2: layer_norm.
    pub mode: u32,
    pub _pad: u32,
}

/// shaders/skip.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct SkipParams {
    pub rows: u32,
    pub d_in: u32,
    pub d_out: u32,
    pub accumulate: u32,
}

/// shaders/gated.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct GatedParams {
    pub rows: u32,
    pub cols: u32,
    pub _pad: [u32; 2],
}

/// shaders/widen.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct WidenParams {
    pub n: u32,
    /// 0: f32, 1: f16, 2: bf16.
    pub mode: u32,
    pub scale: f32,
    pub _pad: u32,
}

/// shaders/pair_dot.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PairDotParams {
    pub rows: u32,
    pub ka: u32,
    pub kb: u32,
    pub dim: u32,
    pub y_step: u32,
    pub nx: u32,
    pub ny: u32,
    pub _pad: u32,
}

/// shaders/batch_topk.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct BatchTopKParams {
    /// Candidate entries (rows × cap).
    pub n: u32,
    /// Entries kept over the batch (k × rows).
    pub keep: u32,
    /// θ's moving-average weight.
    pub beta: f32,
    pub _pad: u32,
}

/// shaders/penalty.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct PenaltyParams {
    pub n: u32,
    pub d_in: u32,
    pub latent_start: u32,
    pub block_len: u32,
    pub col_tiles: u32,
    pub first_slot: u32,
    pub count: u32,
    pub out_slot: u32,
    /// The penalty's weight this step over the rows (λ / rows).
    pub coeff: f32,
    /// The gradient's largest global norm.
    pub clip: f32,
    /// 0: the L1 penalty coeff·fᵢ·nᵢ; s > 0: the tanh penalty coeff·tanh(s·fᵢ·nᵢ).
    pub tanh_scale: f32,
    pub _pad: u32,
}

/// shaders/jumprelu.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct JumpReluParams {
    pub rows: u32,
    pub d_in: u32,
    pub latent_start: u32,
    pub block_len: u32,
    /// ε of the rectangle kernel K(u) = 1{|u| < ½} over u = (h − θ)/ε.
    pub bandwidth: f32,
    /// The L0 penalty's weight this step over the rows (λ / rows).
    pub coeff: f32,
    /// 0: the step penalty coeff·H(h − θ); s > 0: the tanh penalty coeff·tanh(s·f·n).
    pub tanh_scale: f32,
    /// 1: the trained parameter is log θ; 0: θ itself.
    pub log_param: u32,
    pub n: u32,
    pub _pad: [u32; 3],
}

/// shaders/encoder_coop.wgsl
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, Pod, Zeroable)]
pub struct CoopParams {
    pub rows: u32,
    pub k: u32,
    pub n: u32,
    /// Workgroups of `encode` along n.
    pub blocks_n: u32,
}

const _: () = {
    assert!(std::mem::size_of::<CoopParams>() == 16);
    assert!(std::mem::size_of::<PenaltyParams>() == 48);
    assert!(std::mem::size_of::<JumpReluParams>() == 48);
    assert!(std::mem::size_of::<BatchTopKParams>() == 16);
    assert!(std::mem::size_of::<SkipParams>() == 16);
    assert!(std::mem::size_of::<WidenParams>() == 16);
    assert!(std::mem::size_of::<PairDotParams>() == 32);
    assert!(std::mem::size_of::<InputNormParams>() == 16);
    assert!(std::mem::size_of::<GatedParams>() == 16);
    assert!(std::mem::size_of::<GemmParams>() == 16);
    assert!(std::mem::size_of::<TopKParams>() == 48);
    assert!(std::mem::size_of::<DecoderParams>() == 32);
    assert!(std::mem::size_of::<BackwardParams>() == 64);
    assert!(std::mem::size_of::<OptimParams>() == 48);
    assert!(std::mem::size_of::<ReduceParams>() == 32);
    assert!(std::mem::size_of::<HistParams>() == 32);
    assert!(std::mem::size_of::<PairCountParams>() == 32);
};
