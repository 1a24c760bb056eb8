// Sparse decoder forward, a gather over the k chosen latents (2·k·d flops per row, not a dense
// GEMM):  x_hat[r, c] = base[r, c] + Σ_j top_val[r, j] · w_dec[top_idx[r, j], c], where base is
// b_dec[c] (one row), or with `base_rows` a row per output row (a skip-transcoder's
// x·W_skipᵀ + b_dec).
// Bindings: top_idx, top_val [rows, k]; w_dec [d_sae, d_out]; b_dec [d_out] or [rows, d_out];
// x_hat [rows, d_out].
// Generated header: WG. One thread per output element; a workgroup covers WG columns of a row.
// A split dictionary (src/sae/blocks.rs) runs once per block: `w_dec` then holds latents
// [latent_start, latent_start + block_len), other latents are skipped, and blocks after the
// first add to x_hat.

struct Params {
    rows: u32,
    d_out: u32,
    k: u32,
    col_tiles: u32,
    latent_start: u32,
    block_len: u32,
    accumulate: u32,
    base_rows: u32,
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_TOP_IDX) var<storage, read> top_idx: array<u32>;
@group(0) @binding(BIND_TOP_VAL) var<storage, read> top_val: array<f32>;
@group(0) @binding(BIND_W_DEC) var<storage, read> w_dec: array<f32>;
@group(0) @binding(BIND_B_DEC) var<storage, read> b_dec: array<f32>;
@group(0) @binding(BIND_X_HAT) var<storage, read_write> x_hat: array<f32>;

@compute @workgroup_size(WG)
fn decode_sparse(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let tile = linear_id(wg, nwg);
    let row = tile / p.col_tiles;
    let c = (tile % p.col_tiles) * WG + lid;
    if (row >= p.rows || c >= p.d_out) {
        return;
    }
    var acc = 0.0;
    for (var j = 0u; j < p.k; j++) {
        let e = row * p.k + j;
        // Wraps below latent_start, so one comparison tests both ends of the block.
        let local = top_idx[e] - p.latent_start;
        if (local < p.block_len) {
            acc = fma(top_val[e], w_dec[local * p.d_out + c], acc);
        }
    }
    let out = row * p.d_out + c;
    if (p.accumulate != 0u) {
        x_hat[out] += acc;
    } else if (p.base_rows != 0u) {
        x_hat[out] = acc + b_dec[out];
    } else {
        x_hat[out] = acc + b_dec[c];
    }
}
