// Feature statistics over a batch of sparse codes, for `sae hist`. The reverse index
// (backward.wgsl: entries grouped by latent, in row order) lets one thread own one latent,
// so no float atomics are needed and every result is deterministic.
//   batch_stats    per latent: fires, Σv, Σv², max v over this batch's entries with v > 0
//   bin_counts     per entry with v > 0: bins[latent, b] += 1, b from log-spaced edges
//                  (values below the range count in bin 0, above it in the last bin)
//   top_rows       per latent: merge this batch's entries into a running top-M list, sorted by
//                  value descending; ties keep the earlier row
//   cooccurrence   per row: for each pair of its firing latents that are both among the
//                  tracked features (slot_of[i] != NONE), pairs[a, b] += 1 with a < b
// Generated header: WG, TOP_M. Prelude: common.wgsl (linear_id).

struct Params {
    d_sae: u32,
    k: u32,
    entries: u32,
    bins: u32,
    log_lo: f32,
    log_span: f32, // ln(hi) − ln(lo)
    rows: u32,
    tracked: u32, // features with co-occurrence counts
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_TOP_IDX) var<storage, read> top_idx: array<u32>;
@group(0) @binding(BIND_TOP_VAL) var<storage, read> top_val: array<f32>;
@group(0) @binding(BIND_OFFSETS) var<storage, read> offsets: array<u32>;
@group(0) @binding(BIND_REVERSE_INDEX) var<storage, read> reverse_index: array<u32>;
// batch_stats: [d_sae, 4] = (fires as f32 bits, Σv, Σv², max)
@group(0) @binding(BIND_BATCH_STATS) var<storage, read_write> batch_stats: array<f32>;
@group(0) @binding(BIND_BINS) var<storage, read_write> bins: array<atomic<u32>>;
// Per batch row: (shard, row in shard, token).
@group(0) @binding(BIND_ROW_ORIGIN) var<storage, read> row_origin: array<u32>;
@group(0) @binding(BIND_BEST_VAL) var<storage, read_write> best_val: array<f32>;
// Per slot: (shard, row in shard, token) of the running top-M lists.
@group(0) @binding(BIND_BEST_ORIGIN) var<storage, read_write> best_origin: array<u32>;
// Tracked-feature slot of each latent (NONE if untracked), and the [n, n] pair counts.
@group(0) @binding(BIND_SLOT_OF) var<storage, read> slot_of: array<u32>;
@group(0) @binding(BIND_PAIRS) var<storage, read_write> pairs: array<atomic<u32>>;

const NONE: u32 = 0xffffffffu;

@compute @workgroup_size(WG)
fn batch_stats_per_latent(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let latent = linear_id(wg, nwg) * WG + lid;
    if (latent >= p.d_sae) {
        return;
    }
    var fires = 0u;
    var sum = 0.0;
    var sum_sq = 0.0;
    var max_v = 0.0;
    for (var s = offsets[latent]; s < offsets[latent + 1u]; s++) {
        let v = top_val[reverse_index[s]];
        if (v > 0.0) {
            fires += 1u;
            sum += v;
            sum_sq = fma(v, v, sum_sq);
            max_v = max(max_v, v);
        }
    }
    batch_stats[latent * 4u] = bitcast<f32>(fires);
    batch_stats[latent * 4u + 1u] = sum;
    batch_stats[latent * 4u + 2u] = sum_sq;
    batch_stats[latent * 4u + 3u] = max_v;
}

@compute @workgroup_size(WG)
fn bin_counts(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_id(wg, nwg) * WG + lid;
    if (e >= p.entries) {
        return;
    }
    let v = top_val[e];
    if (!(v > 0.0)) {
        return;
    }
    let position = (log(v) - p.log_lo) / p.log_span * f32(p.bins);
    let b = u32(clamp(floor(position), 0.0, f32(p.bins - 1u)));
    atomicAdd(&bins[top_idx[e] * p.bins + b], 1u);
}

@compute @workgroup_size(WG)
fn top_rows(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let latent = linear_id(wg, nwg) * WG + lid;
    if (latent >= p.d_sae) {
        return;
    }
    let base = latent * TOP_M;
    for (var s = offsets[latent]; s < offsets[latent + 1u]; s++) {
        let e = reverse_index[s];
        let v = top_val[e];
        // Lists start filled with −1, so any firing value beats an empty slot.
        if (!(v > 0.0) || !(v > best_val[base + TOP_M - 1u])) {
            continue;
        }
        let r = e / p.k;
        var slot = TOP_M - 1u;
        while (slot > 0u && v > best_val[base + slot - 1u]) {
            best_val[base + slot] = best_val[base + slot - 1u];
            for (var f = 0u; f < 3u; f++) {
                best_origin[(base + slot) * 3u + f] = best_origin[(base + slot - 1u) * 3u + f];
            }
            slot -= 1u;
        }
        best_val[base + slot] = v;
        for (var f = 0u; f < 3u; f++) {
            best_origin[(base + slot) * 3u + f] = row_origin[r * 3u + f];
        }
    }
}

@compute @workgroup_size(WG)
fn cooccurrence(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let r = linear_id(wg, nwg) * WG + lid;
    if (r >= p.rows) {
        return;
    }
    for (var j1 = 0u; j1 < p.k; j1++) {
        let e1 = r * p.k + j1;
        let a = slot_of[top_idx[e1]];
        if (a == NONE || !(top_val[e1] > 0.0)) {
            continue;
        }
        for (var j2 = j1 + 1u; j2 < p.k; j2++) {
            let e2 = r * p.k + j2;
            let b = slot_of[top_idx[e2]];
            if (b == NONE || !(top_val[e2] > 0.0)) {
                continue;
            }
            atomicAdd(&pairs[min(a, b) * p.tracked + max(a, b)], 1u);
        }
    }
}
