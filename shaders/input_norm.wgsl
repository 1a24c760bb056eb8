// SAELens' run-time input normalisation (sae_lens/saes/sae.py, _setup_activation_normalization),
// applied to a batch before the encoder and undone on its reconstruction:
//   mode 1, constant_norm_rescale: c = √d / ‖x‖;  x ← c·x;  x̂ ← x̂ / c
//   mode 2, layer_norm: μ = mean(x), σ = std(x − μ) with n − 1 (torch's default);
//           x ← (x − μ) / (σ + 1e-5);  x̂ ← x̂·σ + μ   (σ, not σ + 1e-5, as SAELens does)
// Bindings: x [rows, d_in] (normalised in place); row_stats [rows, 2] (c, 0 | μ, σ);
//           x_hat [rows, d_in] (denormalised in place).
// Generated header: WG (a power of two). normalize_rows: one workgroup per row;
// denormalize_rows: one thread per element.

struct Params {
    rows: u32,
    d_in: u32,
    mode: u32,
    _pad0: u32,
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_X) var<storage, read_write> x: array<f32>;
@group(0) @binding(BIND_ROW_STATS) var<storage, read_write> row_stats: array<f32>;

const CONSTANT_NORM: u32 = 1u;
const LAYER_NORM: u32 = 2u;
const LAYER_NORM_EPS: f32 = 1e-5;

// Σ over this row of f(x[c]); every invocation gets the total.
fn row_sum(lid: u32, base: u32, shift: f32, squared: bool) -> f32 {
    var acc = 0.0;
    for (var c = lid; c < p.d_in; c += WG) {
        let v = x[base + c] - shift;
        acc += select(v, v * v, squared);
    }
    partial[lid] = acc;
    reduce_partial(lid);
    let total = partial[0];
    workgroupBarrier();
    return total;
}

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
    let base = row * p.d_in;
    let d = f32(p.d_in);
    var shift = 0.0;
    var scale = 1.0;
    var first = 0.0;
    var second = 0.0;
    if (p.mode == CONSTANT_NORM) {
        let c = sqrt(d) / sqrt(row_sum(lid, base, 0.0, true));
        scale = c;
        first = c;
    } else {
        let mu = row_sum(lid, base, 0.0, false) / d;
        let sigma = sqrt(row_sum(lid, base, mu, true) / max(d - 1.0, 1.0));
        shift = mu;
        scale = 1.0 / (sigma + LAYER_NORM_EPS);
        first = mu;
        second = sigma;
    }
    for (var c = lid; c < p.d_in; c += WG) {
        x[base + c] = (x[base + c] - shift) * scale;
    }
    if (lid == 0u) {
        row_stats[2u * row] = first;
        row_stats[2u * row + 1u] = second;
    }
}

@compute @workgroup_size(WG)
fn denormalize_rows(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i >= p.rows * p.d_in) {
        return;
    }
    let row = i / p.d_in;
    let first = row_stats[2u * row];
    if (p.mode == CONSTANT_NORM) {
        x[i] = x[i] / first;
    } else {
        x[i] = x[i] * row_stats[2u * row + 1u] + first;
    }
}
