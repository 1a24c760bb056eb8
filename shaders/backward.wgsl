// Backward pass of the TopK SAE reconstruction loss, without float atomics.
// Notation: entry e = r·k + j is the j-th chosen latent of row r; g = ∂L/∂x_hat [rows, d_out];
// x is the input [rows, d_in]; the target is x for an SAE (d_out = d_in), y for a transcoder
// (bound as `x` in loss_grad and aux_residual, which see only the output side).
//
//   loss_grad            g = scale · (x_hat − x) / stats[stat_slot] · stats[scale_slot]
//                        (FVU: scale 2, slot = Σ‖x − x̄‖², no scale slot)
//   aux_residual         d = e_hat − (x − x_hat), the AuxK error (the residual is a constant)
//   code_grad            dh[e] = ⟨g[r], w_dec[i]⟩ · 1{top_val[e] > 0}   (ReLU's derivative);
//                        code_grad_narrow: the same, one invocation per entry (small d_out)
//   mark_latents         which rows chose latent i (a bitmask per latent) and how many
//   scan_counts          offsets[i] = Σ_{i' < i} count[i'], offsets[d_sae] = total
//   scatter_entries      reverse_index[offsets[i] + rank] = e, rank = rows before r that chose i:
//                        stable (row order), so every sum below has a fixed order
//   decoder_weight_grad  ∂W_dec[i, c] = Σ_{e ∈ seg(i)} top_val[e] · g[r(e), c]
//   encoder_weight_grad  ∂W_enc[c, i] = Σ_{e ∈ seg(i)} dh[e] · (x[r(e), c] − b_dec[c]);
//                        ∂b_enc[i] = Σ dh[e]   (a transcoder binds zeros for b_dec: no centre)
//   With `accumulate` set, loss_grad, code_grad and the weight-gradient kernels add to their
//   outputs (AuxK's entries on top of the main ones; Matryoshka's prefix losses).
//   bias_dec_grad        ∂b_dec[c] = Σ_r g[r, c] − Σ_i W_enc[c, i] · ∂b_enc[i]
//                        (b_dec is subtracted from the input as well as added to the output;
//                        with `centred` 0, a transcoder's, only the first term)
// Split dictionaries (src/sae/blocks.rs): w_dec, w_enc and their gradients hold the latents
// [latent_start, latent_start + block_len) only; code_grad skips entries of other blocks, the
// weight gradients cover the block's latents, and bias_dec_grad's later blocks add their part.
// Generated header: WG. Prelude: common.wgsl (linear_id, partial, reduce_partial).

struct Params {
    rows: u32,
    d_in: u32,
    d_sae: u32,
    k: u32,
    entries: u32,
    words_per_latent: u32,
    col_tiles: u32,
    stat_slot: u32,
    scale: f32,
    scale_slot: u32, // NO_SLOT: no multiplier
    accumulate: u32,
    latent_start: u32,
    block_len: u32,
    d_out: u32,
    centred: u32,
    _pad0: u32,
}

const NO_SLOT: u32 = 0xffffffffu;

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_X_HAT) var<storage, read> x_hat: array<f32>;
@group(0) @binding(BIND_X) var<storage, read> x: array<f32>;
@group(0) @binding(BIND_STATS) var<storage, read> stats: array<f32>;
@group(0) @binding(BIND_GRAD_OUT) var<storage, read_write> grad_out: array<f32>;
@group(0) @binding(BIND_TOP_IDX) var<storage, read> top_idx: array<u32>;
@group(0) @binding(BIND_TOP_VAL) var<storage, read> top_val: array<f32>;
@group(0) @binding(BIND_W_DEC) var<storage, read> w_dec: array<f32>;
@group(0) @binding(BIND_CODE_GRAD_OUT) var<storage, read_write> code_grad_out: array<f32>;
@group(0) @binding(BIND_ROW_BITS) var<storage, read_write> row_bits: array<atomic<u32>>;
@group(0) @binding(BIND_COUNTS) var<storage, read_write> counts: array<atomic<u32>>;
@group(0) @binding(BIND_OFFSETS) var<storage, read_write> offsets: array<u32>;
@group(0) @binding(BIND_REVERSE_INDEX) var<storage, read_write> reverse_index: array<u32>;
@group(0) @binding(BIND_B_DEC) var<storage, read> b_dec: array<f32>;
@group(0) @binding(BIND_GRAD_W_DEC) var<storage, read_write> grad_w_dec: array<f32>;
@group(0) @binding(BIND_GRAD_W_ENC) var<storage, read_write> grad_w_enc: array<f32>;
@group(0) @binding(BIND_GRAD_B_ENC) var<storage, read_write> grad_b_enc: array<f32>;
@group(0) @binding(BIND_W_ENC) var<storage, read> w_enc: array<f32>;
@group(0) @binding(BIND_GRAD_B_DEC) var<storage, read_write> grad_b_dec: array<f32>;
@group(0) @binding(BIND_E_HAT) var<storage, read> e_hat: array<f32>;
@group(0) @binding(BIND_AUX_DIFF) var<storage, read_write> aux_diff: array<f32>;

var<workgroup> partial_u: array<u32, WG>;

@compute @workgroup_size(WG)
fn loss_grad(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_id(wg, nwg) * WG + lid;
    let n = p.rows * p.d_out;
    if (i >= n) {
        return;
    }
    let denom = max(stats[p.stat_slot], 1e-30);
    var scale = p.scale;
    if (p.scale_slot != NO_SLOT) {
        scale *= stats[p.scale_slot];
    }
    var g = scale * (x_hat[i] - x[i]) / denom;
    if (p.accumulate != 0u) {
        g += grad_out[i];
    }
    grad_out[i] = g;
}

@compute @workgroup_size(WG)
fn aux_residual(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i >= p.rows * p.d_out) {
        return;
    }
    aux_diff[i] = e_hat[i] - (x[i] - x_hat[i]);
}

// One workgroup per entry: a dot product of length d_out.
@compute @workgroup_size(WG)
fn code_grad(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_id(wg, nwg);
    if (e >= p.entries) {
        return;
    }
    let r = e / p.k;
    // Wraps below latent_start, so one comparison tests both ends of the block.
    let local = top_idx[e] - p.latent_start;
    if (local >= p.block_len) {
        return;
    }
    var acc = 0.0;
    for (var c = lid; c < p.d_out; c += WG) {
        acc = fma(grad_out[r * p.d_out + c], w_dec[local * p.d_out + c], acc);
    }
    partial[lid] = acc;
    reduce_partial(lid);
    if (lid == 0u) {
        var g = select(0.0, partial[0], top_val[e] > 0.0);
        if (p.accumulate != 0u) {
            g += code_grad_out[e];
        }
        code_grad_out[e] = g;
    }
}

// Narrow rows (small d_out): one invocation per entry, the same dot product in one thread.
// No workgroup reduction, so no barriers (which is where a workgroup per entry spends its time
// when the dot product is this short).
@compute @workgroup_size(WG)
fn code_grad_narrow(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_id(wg, nwg) * WG + lid;
    if (e >= p.entries) {
        return;
    }
    let r = e / p.k;
    let local = top_idx[e] - p.latent_start;
    if (local >= p.block_len) {
        return;
    }
    var acc = 0.0;
    for (var c = 0u; c < p.d_out; c++) {
        acc = fma(grad_out[r * p.d_out + c], w_dec[local * p.d_out + c], acc);
    }
    var g = select(0.0, acc, top_val[e] > 0.0);
    if (p.accumulate != 0u) {
        g += code_grad_out[e];
    }
    code_grad_out[e] = g;
}

@compute @workgroup_size(WG)
fn mark_latents(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_id(wg, nwg) * WG + lid;
    if (e >= p.entries) {
        return;
    }
    let latent = top_idx[e];
    let r = e / p.k;
    atomicOr(&row_bits[latent * p.words_per_latent + r / 32u], 1u << (r % 32u));
    atomicAdd(&counts[latent], 1u);
}

// A single workgroup: each thread scans a contiguous chunk of latents.
@compute @workgroup_size(WG)
fn scan_counts(@builtin(local_invocation_index) lid: u32) {
    let chunk = (p.d_sae + WG - 1u) / WG;
    let start = min(lid * chunk, p.d_sae);
    let end = min(start + chunk, p.d_sae);
    var sum = 0u;
    for (var i = start; i < end; i++) {
        sum += atomicLoad(&counts[i]);
    }
    partial_u[lid] = sum;
    workgroupBarrier();
    // Inclusive Hillis–Steele scan of the chunk sums.
    for (var offset = 1u; offset < WG; offset <<= 1u) {
        var v = partial_u[lid];
        if (lid >= offset) {
            v += partial_u[lid - offset];
        }
        workgroupBarrier();
        partial_u[lid] = v;
        workgroupBarrier();
    }
    var running = partial_u[lid] - sum;
    for (var i = start; i < end; i++) {
        offsets[i] = running;
        running += atomicLoad(&counts[i]);
    }
    if (lid == WG - 1u) {
        offsets[p.d_sae] = partial_u[lid];
    }
}

@compute @workgroup_size(WG)
fn scatter_entries(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_id(wg, nwg) * WG + lid;
    if (e >= p.entries) {
        return;
    }
    let latent = top_idx[e];
    let r = e / p.k;
    let base = latent * p.words_per_latent;
    var rank = 0u;
    for (var w = 0u; w < r / 32u; w++) {
        rank += countOneBits(atomicLoad(&row_bits[base + w]));
    }
    let below = (1u << (r % 32u)) - 1u;
    rank += countOneBits(atomicLoad(&row_bits[base + r / 32u]) & below);
    reverse_index[offsets[latent] + rank] = e;
}

// One workgroup per (latent, tile of WG columns).
@compute @workgroup_size(WG)
fn decoder_weight_grad(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = linear_id(wg, nwg);
    let local = tile / p.col_tiles;
    let c = (tile % p.col_tiles) * WG + lid;
    if (local >= p.block_len || c >= p.d_out) {
        return;
    }
    let latent = p.latent_start + local;
    var acc = 0.0;
    for (var s = offsets[latent]; s < offsets[latent + 1u]; s++) {
        let e = reverse_index[s];
        acc = fma(top_val[e], grad_out[(e / p.k) * p.d_out + c], acc);
    }
    if (p.accumulate != 0u) {
        acc += grad_w_dec[local * p.d_out + c];
    }
    grad_w_dec[local * p.d_out + c] = acc;
}

@compute @workgroup_size(WG)
fn encoder_weight_grad(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = linear_id(wg, nwg);
    let local = tile / p.col_tiles;
    let col_tile = tile % p.col_tiles;
    let c = col_tile * WG + lid;
    if (local >= p.block_len) {
        return;
    }
    let latent = p.latent_start + local;
    let start = offsets[latent];
    let end = offsets[latent + 1u];
    if (c < p.d_in) {
        let centre = b_dec[c];
        var acc = 0.0;
        for (var s = start; s < end; s++) {
            let e = reverse_index[s];
            acc = fma(code_grad_out[e], x[(e / p.k) * p.d_in + c] - centre, acc);
        }
        if (p.accumulate != 0u) {
            acc += grad_w_enc[c * p.block_len + local];
        }
        grad_w_enc[c * p.block_len + local] = acc;
    }
    if (col_tile == 0u && lid == 0u) {
        var bias = 0.0;
        for (var s = start; s < end; s++) {
            bias += code_grad_out[reverse_index[s]];
        }
        if (p.accumulate != 0u) {
            bias += grad_b_enc[local];
        }
        grad_b_enc[local] = bias;
    }
}

// One workgroup per input dimension c.
@compute @workgroup_size(WG)
fn bias_dec_grad(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = linear_id(wg, nwg);
    if (c >= p.d_out) {
        return;
    }
    var acc = 0.0;
    if (p.accumulate == 0u) {
        for (var r = lid; r < p.rows; r += WG) {
            acc += grad_out[r * p.d_out + c];
        }
    }
    if (p.centred != 0u) {
        for (var i = lid; i < p.block_len; i += WG) {
            acc -= w_enc[c * p.block_len + i] * grad_b_enc[i];
        }
    }
    partial[lid] = acc;
    reduce_partial(lid);
    if (lid == 0u) {
        if (p.accumulate != 0u) {
            grad_b_dec[c] += partial[0];
        } else {
            grad_b_dec[c] = partial[0];
        }
    }
}
