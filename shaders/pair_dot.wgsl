// Dot products of gathered row pairs, the arithmetic of direct attribution:
//   out[r, b, a] = Σ_t x[ia[r, a], t] · y[ib[r, b] + a · y_step, t]
// x [nx, dim] and y [ny, dim] are row tables; ia [rows, ka] and ib [rows, kb] pick a row of
// each per output; an index of NONE (0xffffffff) on either side writes 0 (a padded code),
// one beyond its table writes NaN.
// y_step lets the y row depend on a: per-head tables laid [heads, d_sae, d_head] use
// y_step = d_sae, so a = head picks that head's table.
// Bindings: x, y f32; ia, ib u32; out [rows, kb, ka] f32. Generated header: WG.
// One thread per output: each reads two rows of dim values, so the cost is
// rows · ka · kb · dim, never a dense product over every row of y.

struct Params {
    rows: u32,
    ka: u32,
    kb: u32,
    dim: u32,
    y_step: u32,
    nx: u32,
    ny: u32,
    _pad0: u32,
}

const NONE: u32 = 0xffffffffu;

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_X) var<storage, read> x: array<f32>;
@group(0) @binding(BIND_Y) var<storage, read> y: array<f32>;
@group(0) @binding(BIND_IA) var<storage, read> ia: array<u32>;
@group(0) @binding(BIND_IB) var<storage, read> ib: array<u32>;
@group(0) @binding(BIND_OUT) var<storage, read_write> out: array<f32>;

@compute @workgroup_size(WG)
fn pair_dot(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let o = linear_id(wg, nwg) * WG + lid;
    if (o >= p.rows * p.kb * p.ka) {
        return;
    }
    let a = o % p.ka;
    let rb = o / p.ka;
    let r = rb / p.kb;
    let xi = ia[r * p.ka + a];
    let yb = ib[rb];
    if (xi == NONE || yb == NONE) {
        out[o] = 0.0;
        return;
    }
    if (xi >= p.nx || yb + a * p.y_step >= p.ny) {
        out[o] = bitcast<f32>(0x7fc00000u); // an index out of its table: NaN, never a quiet 0
        return;
    }
    let xs = xi * p.dim;
    let ys = (yb + a * p.y_step) * p.dim;
    var acc = 0.0;
    for (var t = 0u; t < p.dim; t++) {
        acc += x[xs + t] * y[ys + t];
    }
    out[o] = acc;
}
