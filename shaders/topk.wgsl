// Per-row TopK of ReLU(h) by radix select: one workgroup per row. With `thresholded`, the
// values are JumpReLU's h·1{h > θ_i} (θ = 0: ReLU), and `count_active` counts each row's
// non-zero values, so a capped selection can report what it dropped.
//   h        [rows, cols] f32 pre-activations
//   top_idx  [rows, k]    u32 latent indices, sorted by (value desc, index asc)
//   top_val  [rows, k]    f32 ReLU(h) at those indices
// With `masked` set, latents whose `eligible` word is 0 count as −∞ (AuxK over dead latents).
// When fewer than k are eligible, the remaining slots hold ineligible latents with value 0,
// which contribute nothing to a decode or a gradient: the same as taking only the eligible ones.
// Generated header: MAX_K (largest k, a power of two), WG (= BINS: one thread per radix
// bin), NARROW_K and NARROW_WG. Prelude: common.wgsl (linear_id).
//
// Split dictionaries (src/sae/blocks.rs) run this twice. Per block of latents, `h` is the
// block's [rows, cols] pre-activations, `col_offset` the block's first latent id, and each
// row's k winners go to columns [out_offset, out_offset + k) of a [rows, out_stride]
// candidate buffer. Then `remap` runs TopK over the candidates (h = their values) and writes
// the latent ids held in `cand_idx`. Exact: the global top k lie among the blocks' top k, and
// candidates sit in block order, so a lower position among equal values is a lower latent id.
//
// Floats become order-preserving u32 keys. Passes of RADIX_BITS bits, from the top, histogram
// the keys that still match the selected prefix and pick the bin holding the k-th largest;
// a pass stops early once the chosen bin holds exactly the keys still needed. Survivors are
// gathered in index order (so equal keys keep the lowest indices), then bitonic-sorted.

struct Params {
    rows: u32,
    cols: u32,
    k: u32,
    sort_n: u32, // next power of two ≥ k, ≤ MAX_K
    masked: u32, // 1: only latents with eligible[i] != 0 compete
    thresholded: u32, // 1: values ≤ threshold[i] count as 0 (ReLU / JumpReLU SAEs)
    col_offset: u32, // latent id of column 0
    out_stride: u32, // row stride of top_idx / top_val
    out_offset: u32, // first output column of this row's k winners
    remap: u32, // 1: h holds candidate values, cand_idx their latent ids
    accumulate: u32, // 1: count_active adds to active_count
    _pad0: u32,
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_H) var<storage, read> h: array<f32>;
@group(0) @binding(BIND_TOP_IDX) var<storage, read_write> top_idx: array<u32>;
@group(0) @binding(BIND_TOP_VAL) var<storage, read_write> top_val: array<f32>;
@group(0) @binding(BIND_ELIGIBLE) var<storage, read> eligible: array<u32>;
@group(0) @binding(BIND_THRESHOLD) var<storage, read> threshold: array<f32>;
@group(0) @binding(BIND_ACTIVE_COUNT) var<storage, read_write> active_count: array<u32>;
@group(0) @binding(BIND_CAND_IDX) var<storage, read> cand_idx: array<u32>;

const RADIX_BITS: u32 = 8u;
const BINS: u32 = 1u << RADIX_BITS;
// WG (the generated header, one thread per radix bin) equals BINS; src/gpu/kernels/topk.rs
// sets it from the same number.
const NEG_INF_KEY: u32 = 0x007fffffu; // key of −∞: below every finite value

var<workgroup> hist: array<atomic<u32>, BINS>;
var<workgroup> scan: array<u32, WG>;
var<workgroup> chosen_prefix: u32;
var<workgroup> chosen_mask: u32;
var<workgroup> still_needed: u32;
var<workgroup> finished: u32;
var<workgroup> tile_total: u32;
var<workgroup> sort_key: array<u32, MAX_K>;
var<workgroup> sort_idx: array<u32, MAX_K>;

fn key_of(v: f32) -> u32 {
    // ReLU first; the comparison also maps NaN to 0 (inputs are validated before this).
    let r = select(0.0, v, v > 0.0);
    return bitcast<u32>(r) | 0x80000000u;
}

// The activation value of latent i: ReLU(h), or h where h > θ_i and 0 elsewhere.
fn activation(base: u32, i: u32) -> f32 {
    let v = h[base + i];
    if (p.thresholded != 0u && !(v > threshold[p.col_offset + i])) {
        return 0.0;
    }
    return v;
}

// The latent id of column i of this row.
fn latent_of(base: u32, i: u32) -> u32 {
    if (p.remap != 0u) {
        return cand_idx[base + i];
    }
    return p.col_offset + i;
}

fn row_key(base: u32, i: u32) -> u32 {
    if (p.masked != 0u && eligible[latent_of(base, i)] == 0u) {
        return NEG_INF_KEY;
    }
    return key_of(activation(base, i));
}

fn value_of(key: u32) -> f32 {
    if ((key & 0x80000000u) != 0u) {
        return bitcast<f32>(key & 0x7fffffffu);
    }
    return bitcast<f32>(~key);
}

// Inclusive prefix sum of scan[] across the workgroup (Hillis–Steele).
fn prefix_sum(lid: u32) {
    for (var offset = 1u; offset < WG; offset <<= 1u) {
        var v = scan[lid];
        if (lid >= offset) {
            v += scan[lid - offset];
        }
        workgroupBarrier();
        scan[lid] = v;
        workgroupBarrier();
    }
}

// Suffix sum: scan[b] = Σ_{b' ≥ b} scan[b'].
fn suffix_sum(lid: u32) {
    for (var offset = 1u; offset < WG; offset <<= 1u) {
        var v = scan[lid];
        if (lid + offset < WG) {
            v += scan[lid + offset];
        }
        workgroupBarrier();
        scan[lid] = v;
        workgroupBarrier();
    }
}

fn select_row(lid: u32, row: u32) {
    let base = row * p.cols;
    if (lid == 0u) {
        chosen_prefix = 0u;
        chosen_mask = 0u;
        still_needed = p.k;
        finished = 0u;
    }
    workgroupBarrier();

    for (var shift = 32u - RADIX_BITS; ; shift -= RADIX_BITS) {
        atomicStore(&hist[lid], 0u);
        let done = workgroupUniformLoad(&finished);
        if (done != 0u) {
            break;
        }
        let prefix = chosen_prefix;
        let mask = chosen_mask;
        let need = still_needed;
        for (var i = lid; i < p.cols; i += WG) {
            let key = row_key(base, i);
            if ((key & mask) == prefix) {
                atomicAdd(&hist[(key >> shift) & (BINS - 1u)], 1u);
            }
        }
        workgroupBarrier();
        scan[lid] = atomicLoad(&hist[lid]);
        workgroupBarrier();
        suffix_sum(lid);
        var above = 0u;
        if (lid + 1u < WG) {
            above = scan[lid + 1u];
        }
        if (scan[lid] >= need && above < need) {
            let in_bin = scan[lid] - above;
            chosen_prefix = prefix | (lid << shift);
            chosen_mask = mask | ((BINS - 1u) << shift);
            still_needed = need - above;
            if (in_bin == need - above || shift == 0u) {
                finished = 1u;
            }
        }
        workgroupBarrier();
    }

    // Gather: keys above the prefix all survive; keys equal to it survive in index order until
    // `still_needed` are taken. Positions come from prefix sums, so the result is deterministic.
    let prefix = chosen_prefix;
    let mask = chosen_mask;
    let need = workgroupUniformLoad(&still_needed);
    let above_total = p.k - need;
    var above_taken = 0u;
    var equal_taken = 0u;
    for (var t0 = 0u; t0 < p.cols; t0 += WG) {
        let i = t0 + lid;
        var key = 0u;
        var flags = 0u;
        if (i < p.cols) {
            key = row_key(base, i);
            let km = key & mask;
            if (km > prefix) {
                flags = 1u;
            } else if (km == prefix) {
                flags = 1u << 16u;
            }
        }
        scan[lid] = flags;
        workgroupBarrier();
        prefix_sum(lid);
        let exclusive = scan[lid] - flags;
        if (lid == WG - 1u) {
            tile_total = scan[lid];
        }
        if ((flags & 0xffffu) != 0u) {
            let slot = above_taken + (exclusive & 0xffffu);
            sort_key[slot] = key;
            sort_idx[slot] = i;
        } else if (flags != 0u) {
            let rank = equal_taken + (exclusive >> 16u);
            if (rank < need) {
                sort_key[above_total + rank] = key;
                sort_idx[above_total + rank] = i;
            }
        }
        let total = workgroupUniformLoad(&tile_total);
        above_taken += total & 0xffffu;
        equal_taken += total >> 16u;
        if (above_taken == above_total && equal_taken >= need) {
            break;
        }
    }

    // Pad to a power of two with entries that sort last, then bitonic sort.
    for (var i = p.k + lid; i < p.sort_n; i += WG) {
        sort_key[i] = 0u;
        sort_idx[i] = 0xffffffffu;
    }
    workgroupBarrier();
    for (var size = 2u; size <= p.sort_n; size <<= 1u) {
        for (var stride = size >> 1u; stride > 0u; stride >>= 1u) {
            for (var t = lid; t < p.sort_n; t += WG) {
                let partner = t ^ stride;
                if (partner > t) {
                    let ka = sort_key[t];
                    let kb = sort_key[partner];
                    let ia = sort_idx[t];
                    let ib = sort_idx[partner];
                    // "a before b" = larger key, then smaller index.
                    let b_first = kb > ka || (kb == ka && ib < ia);
                    let want_b_first = (t & size) == 0u;
                    if (b_first == want_b_first) {
                        sort_key[t] = kb;
                        sort_key[partner] = ka;
                        sort_idx[t] = ib;
                        sort_idx[partner] = ia;
                    }
                }
            }
            workgroupBarrier();
        }
    }
    for (var j = lid; j < p.k; j += WG) {
        let out = row * p.out_stride + p.out_offset + j;
        top_idx[out] = latent_of(base, sort_idx[j]);
        top_val[out] = select(value_of(sort_key[j]), 0.0, sort_key[j] == NEG_INF_KEY);
    }
}

@compute @workgroup_size(WG)
fn topk_rows(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = linear_id(wg, nwg);
    if (row >= p.rows) {
        return;
    }
    select_row(lid, row);
}

var<workgroup> row_active: atomic<u32>;

@compute @workgroup_size(WG)
fn count_active(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = linear_id(wg, nwg);
    if (row >= p.rows) {
        return;
    }
    if (lid == 0u) {
        atomicStore(&row_active, 0u);
    }
    workgroupBarrier();
    let base = row * p.cols;
    var mine = 0u;
    for (var i = lid; i < p.cols; i += WG) {
        mine += select(0u, 1u, activation(base, i) > 0.0);
    }
    atomicAdd(&row_active, mine);
    workgroupBarrier();
    if (lid == 0u) {
        var total = atomicLoad(&row_active);
        if (p.accumulate != 0u) {
            total += active_count[row];
        }
        active_count[row] = total;
    }
}

// Narrow rows (at most NARROW_COLS latents, k ≤ NARROW_K): one invocation per row keeps its
// best k in a private array by insertion while it walks the row once. No workgroup memory and
// no barriers, which is what a row that small needs (the radix path spends its time in
// barriers there). Same result, order and ties as the radix path: keys descending, equal
// keys by lower index (walking in index order, a later equal key never passes a kept one).
@compute @workgroup_size(NARROW_WG)
fn topk_rows_narrow(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let row = linear_id(wg, nwg) * NARROW_WG + lid;
    if (row >= p.rows) {
        return;
    }
    let base = row * p.cols;
    var best_key: array<u32, NARROW_K>;
    var best_idx: array<u32, NARROW_K>;
    var kept = 0u;
    for (var i = 0u; i < p.cols; i++) {
        let key = row_key(base, i);
        var j = kept;
        if (kept == p.k) {
            if (key <= best_key[p.k - 1u]) {
                continue;
            }
            j = p.k - 1u;
        } else {
            kept += 1u;
        }
        while (j > 0u && best_key[j - 1u] < key) {
            best_key[j] = best_key[j - 1u];
            best_idx[j] = best_idx[j - 1u];
            j -= 1u;
        }
        best_key[j] = key;
        best_idx[j] = i;
    }
    for (var j = 0u; j < p.k; j++) {
        let out = row * p.out_stride + p.out_offset + j;
        top_idx[out] = latent_of(base, best_idx[j]);
        top_val[out] = select(value_of(best_key[j]), 0.0, best_key[j] == NEG_INF_KEY);
    }
}
