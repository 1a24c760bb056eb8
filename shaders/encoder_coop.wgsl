// The encoder GEMM on the matrix units (tensor cores), through wgpu's cooperative matrices:
//   h[m, n] = Σ_k (x[m, k] − b_dec[k]) · w_enc[k, n] + b_enc[n]
// with f16 operands and f32 accumulation. Three entry points:
//   pack_rows     one workgroup per row m: s_m = the power of two with
//                 max_k |x[m, k] − b_dec[k]| / s_m in [2^12, 2^13) (1 for a row of zeros);
//                 a[m, k] = f16((x[m, k] − b_dec[k]) / s_m) and row_scale[m] = s_m. Dividing by
//                 a power of two is exact, so whatever a row's norm nothing overflows f16 or
//                 sinks into its subnormals; encode multiplies the row back by s_m. A row whose
//                 maximum is not finite keeps s_m = 1 (it stays inf/NaN, as in f32) and is
//                 counted in overflow[0].
//   pack_weights  w16[i] = f16(w[i]), clamped to ±65504; clamped entries counted in
//                 overflow[1].
//   encode        one workgroup per BM × BN block of h (a 2-D grid, blocks of n along x),
//                 BM = SUBGROUPS·TM·T, BN = TN·T: each
//                 subgroup owns TM × TN tiles of T × T outputs (rows sg·TM·T onwards). For each
//                 chunk of KC columns of a, every invocation stages its share of the block's a
//                 rows and w16 columns into workgroup memory (zeros past the edges, so no shape
//                 needs padding), then each subgroup multiplies its tiles. The accumulators go
//                 out through workgroup memory, one tile position at a time, times the row's
//                 scale plus b_enc, masked at the edges.
// Bindings: x [M, K] f32; b_dec [K]; a [M, K] f16; row_scale [M] f32; w [K, N] f32; w16 [K, N]
// f16; b_enc [N] f32; h [M, N] f32; overflow [2] u32.
// Generated header: WG (pack_rows), T, TM, TN, KC, SUBGROUPS, SUBGROUP_SIZE, and the tile types
// tile_a, tile_b, tile_acc (coop_mat8x8 or coop_mat16x16 as T says: the one text substitution,
// since WGSL cannot name a matrix type by a constant).

struct Params {
    rows: u32,
    k: u32,
    n: u32,
    // Workgroups of encode along n.
    blocks_n: u32,
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_X) var<storage, read> x: array<f32>;
@group(0) @binding(BIND_B_DEC) var<storage, read> b_dec: array<f32>;
@group(0) @binding(BIND_A) var<storage, read_write> a: array<f16>;
@group(0) @binding(BIND_ROW_SCALE) var<storage, read_write> row_scale: array<f32>;
@group(0) @binding(BIND_W) var<storage, read> w: array<f32>;
@group(0) @binding(BIND_W16) var<storage, read_write> w16: array<f16>;
@group(0) @binding(BIND_B_ENC) var<storage, read> b_enc: array<f32>;
@group(0) @binding(BIND_H) var<storage, read_write> h: array<f32>;
@group(0) @binding(BIND_OVERFLOW) var<storage, read_write> overflow: array<atomic<u32>, 2>;

const F16_MAX: f32 = 65504.0;

@compute @workgroup_size(WG)
fn pack_rows(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let m = linear_id(wg, nwg);
    if (m >= p.rows) {
        return;
    }
    let base = m * p.k;
    var largest = 0.0;
    for (var c = lid; c < p.k; c += WG) {
        largest = max(largest, abs(x[base + c] - b_dec[c]));
    }
    partial[lid] = largest;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] = max(partial[lid], partial[lid + stride]);
        }
        workgroupBarrier();
    }
    let top = partial[0];
    var scale = 1.0;
    let finite = top <= 3.0e38;
    if (top > 0.0 && finite) {
        // top = f · 2^e with f in [0.5, 1): top / 2^(e − 13) lies in [2^12, 2^13).
        scale = ldexp(1.0, frexp(top).exp - 13);
    }
    let inverse = 1.0 / scale;
    for (var c = lid; c < p.k; c += WG) {
        a[base + c] = f16((x[base + c] - b_dec[c]) * inverse);
    }
    if (lid == 0u) {
        row_scale[m] = scale;
        if (!finite) {
            atomicAdd(&overflow[0], 1u);
        }
    }
}

@compute @workgroup_size(WG)
fn pack_weights(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i >= p.k * p.n) {
        return;
    }
    let v = w[i];
    if (abs(v) > F16_MAX) {
        atomicAdd(&overflow[1], 1u);
    }
    w16[i] = f16(clamp(v, -F16_MAX, F16_MAX));
}

const BM: u32 = SUBGROUPS * TM * T;
const BN: u32 = TN * T;
const THREADS: u32 = SUBGROUPS * SUBGROUP_SIZE;

var<workgroup> a_tile: array<f16, BM * KC>;
var<workgroup> b_tile: array<f16, KC * BN>;
var<workgroup> c_tile: array<f32, SUBGROUPS * T * T>;

// Stages the block's rows of a and columns of w16 for the chunk at column k0 (zeros outside).
fn stage(lid: u32, row0: u32, col0: u32, k0: u32) {
    for (var i = lid; i < BM * KC; i += THREADS) {
        let r = row0 + i / KC;
        let c = k0 + i % KC;
        var v = f16(0.0);
        if (r < p.rows && c < p.k) {
            v = a[r * p.k + c];
        }
        a_tile[i] = v;
    }
    for (var i = lid; i < KC * BN; i += THREADS) {
        let r = k0 + i / BN;
        let c = col0 + i % BN;
        var v = f16(0.0);
        if (r < p.k && c < p.n) {
            v = w16[r * p.n + c];
        }
        b_tile[i] = v;
    }
}

// Writes every subgroup's tile at (tm, tn) from c_tile to h, scaled back and biased.
fn write_tiles(lid: u32, row0: u32, col0: u32, tm: u32, tn: u32) {
    for (var i = lid; i < SUBGROUPS * T * T; i += THREADS) {
        let s = i / (T * T);
        let e = i % (T * T);
        let r = row0 + (s * TM + tm) * T + e / T;
        let c = col0 + tn * T + e % T;
        if (r < p.rows && c < p.n) {
            h[r * p.n + c] = c_tile[i] * row_scale[r] + b_enc[c];
        }
    }
}

@compute @workgroup_size(THREADS)
fn encode_coop(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(subgroup_id) subgroup: u32,
) {
    // Exactly one workgroup per block (x along n, y along rows): an early return would break
    // the uniform control flow the matrix operations need.
    let row0 = wg.y * BM;
    let col0 = wg.x * BN;
    // With one subgroup per workgroup, smaller subgroups (if the driver makes them) all take
    // the same tiles and compute them redundantly.
    let sg = select(0u, subgroup, SUBGROUPS > 1u);
    let a_row = sg * TM * T;
    var c00 = tile_acc();
    var c01 = tile_acc();
    var c10 = tile_acc();
    var c11 = tile_acc();
    for (var k0 = 0u; k0 < p.k; k0 += KC) {
        stage(lid, row0, col0, k0);
        workgroupBarrier();
        for (var kk = 0u; kk < KC; kk += T) {
            let a0 = coopLoadT<tile_a>(&a_tile[a_row * KC + kk], KC);
            let a1 = coopLoadT<tile_a>(&a_tile[(a_row + T) * KC + kk], KC);
            let b0 = coopLoadT<tile_b>(&b_tile[kk * BN], BN);
            let b1 = coopLoadT<tile_b>(&b_tile[kk * BN + T], BN);
            c00 = coopMultiplyAdd(a0, b0, c00);
            c01 = coopMultiplyAdd(a0, b1, c01);
            c10 = coopMultiplyAdd(a1, b0, c10);
            c11 = coopMultiplyAdd(a1, b1, c11);
        }
        workgroupBarrier();
    }
    let own = sg * T * T;
    coopStoreT(c00, &c_tile[own], T);
    workgroupBarrier();
    write_tiles(lid, row0, col0, 0u, 0u);
    workgroupBarrier();
    coopStoreT(c01, &c_tile[own], T);
    workgroupBarrier();
    write_tiles(lid, row0, col0, 0u, 1u);
    workgroupBarrier();
    coopStoreT(c10, &c_tile[own], T);
    workgroupBarrier();
    write_tiles(lid, row0, col0, 1u, 0u);
    workgroupBarrier();
    coopStoreT(c11, &c_tile[own], T);
    workgroupBarrier();
    write_tiles(lid, row0, col0, 1u, 1u);
}
