// Optimiser kernels: Adam (one dispatch per parameter tensor) and the unit-norm decoder
// constraint (remove the gradient component parallel to each decoder row before the step,
// renormalise the rows after it).
// Generated header: WG. Prelude: common.wgsl (linear_id, partial, reduce_partial_pair).

struct Params {
    n: u32,
    rows: u32,
    cols: u32,
    _pad0: u32,
    beta1: f32,
    beta2: f32,
    eps: f32,
    step_size: f32,      // lr / (1 − β₁ᵗ)
    bias2_sqrt: f32,     // √(1 − β₂ᵗ)
    norm_eps: f32,       // added to row norms before dividing (sparsify uses f32 epsilon)
    one_minus_beta1: f32, // computed in f64 on the host: 1 − β₂ in f32 loses 1e-5 relative
    one_minus_beta2: f32,
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_PARAM) var<storage, read_write> param: array<f32>;
@group(0) @binding(BIND_GRAD) var<storage, read_write> grad: array<f32>;
@group(0) @binding(BIND_EXP_AVG) var<storage, read_write> exp_avg: array<f32>;
@group(0) @binding(BIND_EXP_AVG_SQ) var<storage, read_write> exp_avg_sq: array<f32>;

// Adam with bias correction, in the same form as torch.optim.Adam:
//   m ← m + (1 − β₁)(g − m);  v ← β₂v + (1 − β₂)g²;  p ← p − step_size · m / (√v / √(1 − β₂ᵗ) + ε)
@compute @workgroup_size(WG)
fn adam_step(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i >= p.n) {
        return;
    }
    let g = grad[i];
    let m = exp_avg[i] + p.one_minus_beta1 * (g - exp_avg[i]);
    let v = p.beta2 * exp_avg_sq[i] + p.one_minus_beta2 * g * g;
    exp_avg[i] = m;
    exp_avg_sq[i] = v;
    param[i] = param[i] - p.step_size * m / (sqrt(v) / p.bias2_sqrt + p.eps);
}

// One workgroup per decoder row: grad_i ← grad_i − (⟨grad_i, w_i⟩ / ‖w_i‖²) · w_i.
@compute @workgroup_size(WG)
fn remove_parallel_grad(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = linear_id(wg, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var dot = 0.0;
    var norm_sq = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let w = param[base + c];
        dot = fma(grad[base + c], w, dot);
        norm_sq = fma(w, w, norm_sq);
    }
    partial[lid] = dot;
    partial_b[lid] = norm_sq;
    reduce_partial_pair(lid);
    let coef = select(0.0, partial[0] / partial_b[0], partial_b[0] > 0.0);
    for (var c = lid; c < p.cols; c += WG) {
        grad[base + c] = grad[base + c] - coef * param[base + c];
    }
}

// One workgroup per decoder row: w_i ← w_i / (‖w_i‖ + norm_eps).
@compute @workgroup_size(WG)
fn normalize_rows(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = linear_id(wg, nwg);
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var norm_sq = 0.0;
    for (var c = lid; c < p.cols; c += WG) {
        let w = param[base + c];
        norm_sq = fma(w, w, norm_sq);
    }
    partial[lid] = norm_sq;
    partial_b[lid] = 0.0;
    reduce_partial_pair(lid);
    let scale = 1.0 / (sqrt(partial[0]) + p.norm_eps);
    for (var c = lid; c < p.cols; c += WG) {
        param[base + c] = param[base + c] * scale;
    }
}

// Narrow rows (small cols): one invocation per row for both constraints, no barriers.
@compute @workgroup_size(WG)
fn remove_parallel_grad_narrow(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = linear_id(wg, nwg) * WG + lid;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var dot = 0.0;
    var norm_sq = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        let w = param[base + c];
        dot = fma(grad[base + c], w, dot);
        norm_sq = fma(w, w, norm_sq);
    }
    let coef = select(0.0, dot / norm_sq, norm_sq > 0.0);
    for (var c = 0u; c < p.cols; c++) {
        grad[base + c] = grad[base + c] - coef * param[base + c];
    }
}

@compute @workgroup_size(WG)
fn normalize_rows_narrow(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = linear_id(wg, nwg) * WG + lid;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var norm_sq = 0.0;
    for (var c = 0u; c < p.cols; c++) {
        let w = param[base + c];
        norm_sq = fma(w, w, norm_sq);
    }
    let scale = 1.0 / (sqrt(norm_sq) + p.norm_eps);
    for (var c = 0u; c < p.cols; c++) {
        param[base + c] = param[base + c] * scale;
    }
}
