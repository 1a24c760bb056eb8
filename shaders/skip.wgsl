// A skip-transcoder's weight gradient, the one dense product of its backward pass:
//   grad_skip_t[i, j] = Σ_r x[r, i] · g[r, j]      (∂L/∂W_skipᵀ, [d_in, d_out])
// with x the input [rows, d_in] and g = ∂L/∂ŷ [rows, d_out]. With `accumulate`, added to what
// grad_skip_t holds.
// One workgroup per TILE × TILE block of the output; rows go through workgroup memory TILE at
// a time, and every invocation sums its element over the rows in row order (a fixed order: the
// result does not depend on the grid).
// Generated header: TILE. Bindings: x, g (read), grad_skip_t (read_write).

struct Params {
    rows: u32,
    d_in: u32,
    d_out: u32,
    accumulate: u32,
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_X) var<storage, read> x: array<f32>;
@group(0) @binding(BIND_G) var<storage, read> g: array<f32>;
@group(0) @binding(BIND_GRAD_SKIP_T) var<storage, read_write> grad_skip_t: array<f32>;

var<workgroup> x_tile: array<f32, TILE * TILE>;
var<workgroup> g_tile: array<f32, TILE * TILE>;

@compute @workgroup_size(TILE, TILE)
fn skip_weight_grad(
    @builtin(local_invocation_id) lid: vec3<u32>,
    @builtin(workgroup_id) wg: vec3<u32>,
) {
    // lid.x runs along d_out (j), lid.y along d_in (i).
    let i = wg.y * TILE + lid.y;
    let j = wg.x * TILE + lid.x;
    var acc = 0.0;
    for (var r0 = 0u; r0 < p.rows; r0 += TILE) {
        // Stage rows r0.. of x's columns i0.. and g's columns j0.. (zeros past the edges).
        let r = r0 + lid.y;
        let xi = wg.y * TILE + lid.x;
        var xv = 0.0;
        var gv = 0.0;
        if (r < p.rows && xi < p.d_in) {
            xv = x[r * p.d_in + xi];
        }
        if (r < p.rows && j < p.d_out) {
            gv = g[r * p.d_out + j];
        }
        x_tile[lid.y * TILE + lid.x] = xv;
        g_tile[lid.y * TILE + lid.x] = gv;
        workgroupBarrier();
        for (var t = 0u; t < TILE; t++) {
            acc = fma(x_tile[t * TILE + lid.y], g_tile[t * TILE + lid.x], acc);
        }
        workgroupBarrier();
    }
    if (i < p.d_in && j < p.d_out) {
        let at = i * p.d_out + j;
        if (p.accumulate != 0u) {
            acc += grad_skip_t[at];
        }
        grad_skip_t[at] = acc;
    }
}
