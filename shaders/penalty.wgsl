// Sparsity penalties on the codes of the ReLU family (no unit-norm constraint) and
// gradient-norm clipping:
//   L1   (ReLU; Anthropic's April 2024 update, SAELens `standard`): coeff·Σ fᵢ·nᵢ
//   tanh (JumpReLU; Anthropic's January 2025 update):                coeff·Σ tanh(s·fᵢ·nᵢ)
// with nᵢ = ‖W_dec,i‖ and coeff = λ / rows (the penalty is a mean over the rows).
//   row_norms            norms[latent_start + i] = ‖w_dec[i]‖ (one workgroup per row of the block)
//   penalty_code_grad    code_grad[e] += coeff · ∂pen/∂f(f, n) where top_val[e] > 0:
//                        L1 n; tanh s·n·sech²(s·f·n)
//   penalty_decoder_grad grad_w_dec[i, c] += coeff · (Σ_{e ∈ seg(i)} ∂pen/∂n(f_e, nᵢ)) · w_dec[i, c] / nᵢ
//                        (over the reverse index's segment of latent i): L1 f; tanh s·f·sech²(s·f·n)
//   clip_factor          stats[out_slot] = min(1, clip / ‖g‖), ‖g‖² = Σ stats[first_slot ..+ count]
//   scale_by_slot        a[i] *= stats[out_slot]
// Split dictionaries run row_norms, penalty_code_grad and penalty_decoder_grad once per block:
// w_dec and grad_w_dec hold the latents [latent_start, latent_start + block_len).
// Generated header: WG. Prelude: common.wgsl (linear_id, partial, reduce_partial).

struct Params {
    n: u32,
    d_in: u32,
    latent_start: u32,
    block_len: u32,
    col_tiles: u32,
    first_slot: u32,
    count: u32,
    out_slot: u32,
    coeff: f32,
    clip: f32,
    tanh_scale: f32,
    _pad: u32,
}

// 1 − tanh²(z), z ≥ 0; tanh saturates to 1 in f32 long before z = 15 (and some drivers'
// tanh overflows to NaN for large z).
fn sech_sq(z: f32) -> f32 {
    let t = tanh(min(z, 15.0));
    return 1.0 - t * t;
}

// ∂/∂f of one entry's penalty, per unit of coeff.
fn penalty_code_slope(f: f32, n: f32) -> f32 {
    if (p.tanh_scale == 0.0) {
        return n;
    }
    return p.tanh_scale * n * sech_sq(p.tanh_scale * f * n);
}

// ∂/∂n of one entry's penalty, per unit of coeff.
fn penalty_norm_slope(f: f32, n: f32) -> f32 {
    if (p.tanh_scale == 0.0) {
        return f;
    }
    return p.tanh_scale * f * sech_sq(p.tanh_scale * f * n);
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_W_DEC) var<storage, read> w_dec: array<f32>;
@group(0) @binding(BIND_NORMS) var<storage, read_write> norms: array<f32>;
@group(0) @binding(BIND_TOP_IDX) var<storage, read> top_idx: array<u32>;
@group(0) @binding(BIND_TOP_VAL) var<storage, read> top_val: array<f32>;
@group(0) @binding(BIND_CODE_GRAD) var<storage, read_write> code_grad: array<f32>;
@group(0) @binding(BIND_OFFSETS) var<storage, read> offsets: array<u32>;
@group(0) @binding(BIND_REVERSE_INDEX) var<storage, read> reverse_index: array<u32>;
@group(0) @binding(BIND_GRAD_W_DEC) var<storage, read_write> grad_w_dec: array<f32>;
@group(0) @binding(BIND_STATS) var<storage, read_write> stats: array<f32>;
@group(0) @binding(BIND_A) var<storage, read_write> a: array<f32>;

@compute @workgroup_size(WG)
fn row_norms(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = linear_id(wg, nwg);
    if (row >= p.block_len) {
        return;
    }
    var acc = 0.0;
    for (var c = lid; c < p.d_in; c += WG) {
        let w = w_dec[row * p.d_in + c];
        acc = fma(w, w, acc);
    }
    partial[lid] = acc;
    reduce_partial(lid);
    if (lid == 0u) {
        norms[p.latent_start + row] = sqrt(partial[0]);
    }
}

@compute @workgroup_size(WG)
fn penalty_code_grad(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_id(wg, nwg) * WG + lid;
    if (e >= p.n) {
        return;
    }
    // Wraps below latent_start, so one comparison tests both ends of the block.
    let local = top_idx[e] - p.latent_start;
    let f = top_val[e];
    if (local < p.block_len && f > 0.0) {
        code_grad[e] += p.coeff * penalty_code_slope(f, norms[top_idx[e]]);
    }
}

// One workgroup per (latent of the block, tile of WG columns).
@compute @workgroup_size(WG)
fn penalty_decoder_grad(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = linear_id(wg, nwg);
    let local = tile / p.col_tiles;
    let c = (tile % p.col_tiles) * WG + lid;
    if (local >= p.block_len || c >= p.d_in) {
        return;
    }
    let latent = p.latent_start + local;
    let norm = norms[latent];
    var total = 0.0;
    for (var s = offsets[latent]; s < offsets[latent + 1u]; s++) {
        total += penalty_norm_slope(max(top_val[reverse_index[s]], 0.0), norm);
    }
    if (norm > 0.0) {
        grad_w_dec[local * p.d_in + c] += p.coeff * total * w_dec[local * p.d_in + c] / norm;
    }
}

@compute @workgroup_size(1)
fn clip_factor() {
    var total = 0.0;
    for (var i = 0u; i < p.count; i++) {
        total += stats[p.first_slot + i];
    }
    let norm = sqrt(total);
    stats[p.out_slot] = select(1.0, min(1.0, p.clip / norm), norm > 0.0);
}

@compute @workgroup_size(WG)
fn scale_by_slot(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i < p.n) {
        a[i] *= stats[p.out_slot];
    }
}
