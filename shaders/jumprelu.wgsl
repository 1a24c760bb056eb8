// JumpReLU training (Rajamanoharan et al. 2024; SAELens `jumprelu`): f = h·H(h − θ), a
// threshold θ per latent trained through the straight-through estimator with the rectangle
// kernel K(u) = 1{|u| < ½}, u = (h − θ)/ε:
//   ∂f/∂θ = −(θ/ε)·K(u)     ∂H/∂θ = −(1/ε)·K(u)     (∂f/∂h = H, handled by the code gradient)
//   threshold_grad       one workgroup per latent of the block: for the rows inside the
//                        kernel's window
//                          ∂L/∂θ = Σ_b −(θ/ε)·(g_b · w_dec[i] + coeff·∂pen/∂f)   (tanh penalty)
//                                  Σ_b −(θ/ε)·(g_b · w_dec[i]) − coeff/ε          (step penalty)
//                        with g_b = ∂L/∂x̂_b (the rows of grad_out) and coeff = λ / rows; the
//                        trained parameter's gradient is θ·∂L/∂θ when it is log θ.
//   threshold_from_param θ = exp(param) (log θ), or θ = param = max(param, 0) (θ itself, kept
//                        non-negative as SAELens does).
// The pre-activations h are the block's [rows, block_len]; thresholds, norms and grad_param
// are indexed by latent (latent_start + i). The tanh upstream takes f = h where h > θ: a row
// whose codes exceed the training cap drops some of them, which this does not see.
// Generated header: WG. Prelude: common.wgsl (linear_id, partial, reduce_partial).

struct Params {
    rows: u32,
    d_in: u32,
    latent_start: u32,
    block_len: u32,
    bandwidth: f32,
    coeff: f32,
    tanh_scale: f32,
    log_param: u32,
    n: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_PRE) var<storage, read> pre: array<f32>;
@group(0) @binding(BIND_GRAD_OUT) var<storage, read> grad_out: array<f32>;
@group(0) @binding(BIND_W_DEC) var<storage, read> w_dec: array<f32>;
@group(0) @binding(BIND_NORMS) var<storage, read> norms: array<f32>;
@group(0) @binding(BIND_THRESHOLDS) var<storage, read_write> thresholds: array<f32>;
@group(0) @binding(BIND_GRAD_PARAM) var<storage, read_write> grad_param: array<f32>;
@group(0) @binding(BIND_PARAM) var<storage, read_write> param: array<f32>;

// The window's rows of one chunk, compacted in row order (a deterministic scan, so the
// gradient's sums have a fixed order and training stays bit-reproducible).
var<workgroup> window_rows: array<u32, WG>;
var<workgroup> window_scan: array<u32, WG>;

// One workgroup per latent. Each chunk of WG rows: every lane tests its row against the window
// and adds the row's penalty term; the rows inside are compacted; then the lanes share each
// listed row's dot product g_r · w_dec[i] over d_in (coalesced reads). Every term is a sum of
// per-row contributions, so one accumulator per lane and one reduction at the end suffice.
@compute @workgroup_size(WG)
fn threshold_grad(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let local = linear_id(wg, nwg);
    if (local >= p.block_len) {
        return;
    }
    let latent = p.latent_start + local;
    let theta = thresholds[latent];
    let norm = norms[latent];
    // ∂f/∂θ inside the window, per unit of ∂L/∂f.
    let slope = -theta / p.bandwidth;
    var acc = 0.0;
    for (var first = 0u; first < p.rows; first += WG) {
        let r = first + lid;
        var inside = false;
        if (r < p.rows) {
            let h = pre[r * p.block_len + local];
            let u = (h - theta) / p.bandwidth;
            inside = u > -0.5 && u < 0.5;
            if (inside) {
                if (p.tanh_scale > 0.0) {
                    // The tanh penalty's ∂/∂f, through the estimator.
                    let f = select(0.0, h, h > theta);
                    let t = tanh(min(p.tanh_scale * f * norm, 15.0));
                    acc += slope * p.coeff * p.tanh_scale * norm * (1.0 - t * t);
                } else {
                    // The step penalty's ∂H/∂θ.
                    acc -= p.coeff / p.bandwidth;
                }
            }
        }
        window_scan[lid] = select(0u, 1u, inside);
        workgroupBarrier();
        for (var offset = 1u; offset < WG; offset <<= 1u) {
            let before = select(0u, window_scan[lid - offset], lid >= offset);
            workgroupBarrier();
            window_scan[lid] += before;
            workgroupBarrier();
        }
        if (inside) {
            window_rows[window_scan[lid] - 1u] = r;
        }
        workgroupBarrier();
        let count = window_scan[WG - 1u];
        for (var j = 0u; j < count; j++) {
            let row = window_rows[j];
            var dot = 0.0;
            for (var c = lid; c < p.d_in; c += WG) {
                dot = fma(grad_out[row * p.d_in + c], w_dec[local * p.d_in + c], dot);
            }
            acc += slope * dot;
        }
        workgroupBarrier();
    }
    partial[lid] = acc;
    reduce_partial(lid);
    if (lid == 0u) {
        grad_param[latent] = select(partial[0], partial[0] * theta, p.log_param != 0u);
    }
}

@compute @workgroup_size(WG)
fn threshold_from_param(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i >= p.n) {
        return;
    }
    if (p.log_param != 0u) {
        thresholds[i] = exp(param[i]);
    } else {
        let theta = max(param[i], 0.0);
        param[i] = theta;
        thresholds[i] = theta;
    }
}
