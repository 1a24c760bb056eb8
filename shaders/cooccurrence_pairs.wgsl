// Co-occurrence over all pairs of features, for `sae categories`: how often every two features
// fire in the same unit (a row, or a chunk of rows), then a score per pair whose per-feature
// TopK (topk.wgsl) gives each feature's strongest co-occurrence partners.
//   count_unit_pairs  per entry (unit u, feature f) of a batch's units, given as lists of the
//                     features firing in each (CSR): when f lies in this block of features,
//                     counts[f - block_lo, g] += 1 for every other feature g of unit u
//   pair_scores       per (i in the block, j): the chosen statistic of the counts, 0 for i = j
//                     and for pairs seen together fewer than min_joint times
// Integer atomics only, so the counts are exact and do not depend on the order of the adds.
// Generated header: WG. Prelude: common.wgsl (linear_id).

struct Params {
    entries: u32,    // entries of the batch's unit lists
    block_lo: u32,   // first feature of this block of count rows
    block_rows: u32, // features in this block
    d_sae: u32,
    measure: u32,    // 0 phi, 1 Jaccard, 2 normalised PMI
    min_joint: u32,  // pairs seen together fewer times score 0
    units: f32,      // N: units counted over the whole pass
    _pad: u32,
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
// Per entry: its unit. Per unit u: its entries are unit_start[u] .. unit_start[u + 1].
@group(0) @binding(BIND_ENTRY_UNIT) var<storage, read> entry_unit: array<u32>;
@group(0) @binding(BIND_UNIT_START) var<storage, read> unit_start: array<u32>;
@group(0) @binding(BIND_UNIT_FEATURES) var<storage, read> unit_features: array<u32>;
// [block_rows, d_sae] joint counts of this block's features with every feature.
@group(0) @binding(BIND_COUNTS) var<storage, read_write> counts: array<atomic<u32>>;
// [d_sae] units in which each feature fires (the diagonal of the full count matrix).
@group(0) @binding(BIND_FEATURE_UNITS) var<storage, read> feature_units: array<u32>;
// [block_rows, d_sae] scores.
@group(0) @binding(BIND_SCORES) var<storage, read_write> scores: array<f32>;

@compute @workgroup_size(WG)
fn count_unit_pairs(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_id(wg, nwg) * WG + lid;
    if (e >= p.entries) {
        return;
    }
    let f = unit_features[e];
    if (f < p.block_lo || f >= p.block_lo + p.block_rows) {
        return;
    }
    let u = entry_unit[e];
    let row = (f - p.block_lo) * p.d_sae;
    for (var o = unit_start[u]; o < unit_start[u + 1u]; o++) {
        if (o != e) {
            atomicAdd(&counts[row + unit_features[o]], 1u);
        }
    }
}

@compute @workgroup_size(WG)
fn pair_scores(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let slot = linear_id(wg, nwg) * WG + lid;
    if (slot >= p.block_rows * p.d_sae) {
        return;
    }
    let i = p.block_lo + slot / p.d_sae;
    let j = slot % p.d_sae;
    let joint = atomicLoad(&counts[slot]);
    var score = 0.0;
    if (i != j && joint >= max(p.min_joint, 1u)) {
        // Fractions of the units, so nothing overflows or loses range in f32.
        let pij = f32(joint) / p.units;
        let pi = f32(feature_units[i]) / p.units;
        let pj = f32(feature_units[j]) / p.units;
        if (p.measure == 0u) {
            let spread = pi * (1.0 - pi) * pj * (1.0 - pj);
            if (spread > 0.0) {
                score = (pij - pi * pj) / sqrt(spread);
            }
        } else if (p.measure == 1u) {
            score = pij / (pi + pj - pij);
        } else {
            // ln(p_ij / (p_i p_j)) / −ln(p_ij): 1 when the two always fire together, 0 when
            // independent; undefined (0 here) when they fire together in every unit.
            if (pij < 1.0) {
                score = log(pij / (pi * pj)) / -log(pij);
            }
        }
    }
    scores[slot] = score;
}
