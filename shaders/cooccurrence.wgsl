// Chunk co-occurrence of features, for `sae categories --cooccurrence-weight`: which features
// fire anywhere in each chunk of consecutive rows, then, for a given list of feature pairs (the
// kNN graph's edges) and for every feature, in how many chunks they fire. Counting only the
// graph's edges keeps the cost linear in d_sae instead of quadratic.
//   mark_presence   per sparse-code entry above the threshold: set the feature's bit in its
//                   chunk's bitset (presence is [chunks, words], cleared by the caller)
//   count_pairs     per pair (i, j): pair_chunks += chunks of this batch with both bits set
//   count_features  per feature: feature_chunks += chunks of this batch with its bit set
// Each counting thread owns its counter, so the counts are exact and deterministic.
// Generated header: WG. Prelude: common.wgsl (linear_id).

struct Params {
    rows: u32,        // rows in this batch
    k: u32,           // entries per row
    chunk_rows: u32,  // rows per chunk; the batch starts at a chunk boundary
    chunks: u32,      // chunks in this batch (the last may be partial)
    words: u32,       // u32 words per chunk bitset: ceil(d_sae / 32)
    d_sae: u32,
    pairs: u32,
    fires_above: f32, // an entry counts when its activation exceeds this
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> top_idx: array<u32>;
@group(0) @binding(2) var<storage, read> top_val: array<f32>;
@group(0) @binding(3) var<storage, read_write> presence: array<atomic<u32>>;
// [pairs, 2] feature ids.
@group(0) @binding(4) var<storage, read> pair_features: array<u32>;
@group(0) @binding(5) var<storage, read_write> pair_chunks: array<u32>;
@group(0) @binding(6) var<storage, read_write> feature_chunks: array<u32>;

@compute @workgroup_size(WG)
fn mark_presence(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_id(wg, nwg) * WG + lid;
    if (e >= p.rows * p.k || !(top_val[e] > p.fires_above)) {
        return;
    }
    let feature = top_idx[e];
    let chunk = (e / p.k) / p.chunk_rows;
    atomicOr(&presence[chunk * p.words + feature / 32u], 1u << (feature % 32u));
}

fn present(chunk: u32, feature: u32) -> u32 {
    return (atomicLoad(&presence[chunk * p.words + feature / 32u]) >> (feature % 32u)) & 1u;
}

@compute @workgroup_size(WG)
fn count_pairs(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let pair = linear_id(wg, nwg) * WG + lid;
    if (pair >= p.pairs) {
        return;
    }
    let i = pair_features[2u * pair];
    let j = pair_features[2u * pair + 1u];
    var both = 0u;
    for (var c = 0u; c < p.chunks; c++) {
        both += present(c, i) & present(c, j);
    }
    pair_chunks[pair] += both;
}

@compute @workgroup_size(WG)
fn count_features(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let feature = linear_id(wg, nwg) * WG + lid;
    if (feature >= p.d_sae) {
        return;
    }
    var fired = 0u;
    for (var c = 0u; c < p.chunks; c++) {
        fired += present(c, feature);
    }
    feature_chunks[feature] += fired;
}
