// Encoder pre-activation, a tiled GEMM with the b_dec subtraction fused into the A-tile load:
//   h[m, n] = Σ_k (x[m, k] − b_dec[k]) · w_enc[k, n] + b_enc[n]
// Bindings:
//   x      [M, K]  in_t (f32, or f16 when the module is built with SHADER_F16)
//   w_enc  [K, N]  f32 (row-major, SAELens layout)
//   b_dec  [K], b_enc [N], h [M, N]  f32
// Generated header (src/gpu/kernels/encoder.rs): TILE_M, TILE_N, TILE_K, THREAD_M, THREAD_N.
// Each workgroup computes a TILE_M × TILE_N block of h; each thread a THREAD_M × THREAD_N
// register block whose rows and columns are strided by the thread grid, so global writes and
// workgroup-memory reads are contiguous across neighbouring threads. Accumulation is in f32.
// x and w_enc are bound as arrays of vec4: when K and N are multiples of 4 (`aligned`), tiles
// are loaded four elements per read; otherwise element by element (x4[i / 4][i % 4]).

struct Params {
    m: u32,
    n: u32,
    k: u32,
    aligned: u32, // 1 when k % 4 == 0 and n % 4 == 0
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_X) var<storage, read> x: array<vec4<in_t>>;
@group(0) @binding(BIND_W_ENC) var<storage, read> w_enc: array<vec4<f32>>;
@group(0) @binding(BIND_B_DEC) var<storage, read> b_dec: array<f32>;
@group(0) @binding(BIND_B_ENC) var<storage, read> b_enc: array<f32>;
@group(0) @binding(BIND_H) var<storage, read_write> h: array<f32>;

const THREADS_N: u32 = TILE_N / THREAD_N;
const THREADS_M: u32 = TILE_M / THREAD_M;
const THREADS: u32 = THREADS_N * THREADS_M;

// a_tile is stored k-major ([TILE_K][TILE_M]) so the inner product loop reads rows contiguously.
var<workgroup> a_tile: array<f32, TILE_K * TILE_M>;
var<workgroup> b_tile: array<f32, TILE_K * TILE_N>;

@compute @workgroup_size(THREADS)
fn encode_gemm(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
) {
    let tn = lid % THREADS_N;
    let tm = lid / THREADS_N;
    let row0 = wg.y * TILE_M;
    let col0 = wg.x * TILE_N;

    var acc: array<f32, THREAD_M * THREAD_N>;
    for (var i = 0u; i < THREAD_M * THREAD_N; i++) {
        acc[i] = 0.0;
    }

    for (var k0 = 0u; k0 < p.k; k0 += TILE_K) {
        if (p.aligned != 0u) {
            // A tile, four k at a time: consecutive threads read consecutive vec4s of a row.
            for (var i = lid; i < TILE_M * TILE_K / 4u; i += THREADS) {
                let r = i / (TILE_K / 4u);
                let c = (i % (TILE_K / 4u)) * 4u;
                let gr = row0 + r;
                let gc = k0 + c;
                var v = vec4<f32>(0.0);
                if (gr < p.m && gc < p.k) {
                    let centre = vec4<f32>(b_dec[gc], b_dec[gc + 1u], b_dec[gc + 2u], b_dec[gc + 3u]);
                    v = vec4<f32>(x[(gr * p.k + gc) / 4u]) - centre;
                }
                for (var q = 0u; q < 4u; q++) {
                    a_tile[(c + q) * TILE_M + r] = v[q];
                }
            }
            // B tile, four n at a time.
            for (var i = lid; i < TILE_K * TILE_N / 4u; i += THREADS) {
                let r = i / (TILE_N / 4u);
                let c = (i % (TILE_N / 4u)) * 4u;
                let gr = k0 + r;
                let gc = col0 + c;
                var v = vec4<f32>(0.0);
                if (gr < p.k && gc < p.n) {
                    v = w_enc[(gr * p.n + gc) / 4u];
                }
                for (var q = 0u; q < 4u; q++) {
                    b_tile[r * TILE_N + c + q] = v[q];
                }
            }
        } else {
            // A tile: consecutive threads read consecutive k of one row.
            for (var i = lid; i < TILE_M * TILE_K; i += THREADS) {
                let r = i / TILE_K;
                let c = i % TILE_K;
                let gr = row0 + r;
                let gc = k0 + c;
                var v = 0.0;
                if (gr < p.m && gc < p.k) {
                    let at = gr * p.k + gc;
                    v = f32(x[at / 4u][at % 4u]) - b_dec[gc];
                }
                a_tile[c * TILE_M + r] = v;
            }
            // B tile: consecutive threads read consecutive n of one row of w_enc.
            for (var i = lid; i < TILE_K * TILE_N; i += THREADS) {
                let r = i / TILE_N;
                let c = i % TILE_N;
                let gr = k0 + r;
                let gc = col0 + c;
                var v = 0.0;
                if (gr < p.k && gc < p.n) {
                    let at = gr * p.n + gc;
                    v = w_enc[at / 4u][at % 4u];
                }
                b_tile[i] = v;
            }
        }
        workgroupBarrier();

        for (var kk = 0u; kk < TILE_K; kk++) {
            var a_reg: array<f32, THREAD_M>;
            var b_reg: array<f32, THREAD_N>;
            for (var i = 0u; i < THREAD_M; i++) {
                a_reg[i] = a_tile[kk * TILE_M + tm + i * THREADS_M];
            }
            for (var j = 0u; j < THREAD_N; j++) {
                b_reg[j] = b_tile[kk * TILE_N + tn + j * THREADS_N];
            }
            for (var i = 0u; i < THREAD_M; i++) {
                for (var j = 0u; j < THREAD_N; j++) {
                    acc[i * THREAD_N + j] = fma(a_reg[i], b_reg[j], acc[i * THREAD_N + j]);
                }
            }
        }
        workgroupBarrier();
    }

    for (var i = 0u; i < THREAD_M; i++) {
        let r = row0 + tm + i * THREADS_M;
        if (r >= p.m) {
            break;
        }
        for (var j = 0u; j < THREAD_N; j++) {
            let c = col0 + tn + j * THREADS_N;
            if (c < p.n) {
                h[r * p.n + c] = acc[i * THREAD_N + j] + b_enc[c];
            }
        }
    }
}
