// Reductions for losses and metrics. Sums are two-stage and in a fixed order (per-workgroup
// partials, then one workgroup adds them), so results are deterministic.
//   sum_sq_diff_partials   partial[w] = Σ (a[i] − b[i])² over workgroup w's share of i
//   column_mean            col_mean[c] = Σ_r a[r, c] / rows
//   centered_sq_partials   partial[w] = Σ (a[r, c] − col_mean[c])²
//   finish_sum             stats[slot] = Σ_w partial[w]
//   row_l0                 l0_out[r] = #{j : top_val[r, j] > 0}
//   fire_counts            fire_counts[i] += #{(r, j) : top_idx[r, j] = i, top_val[r, j] > 0}
//   sum_sq_partials        partial[w] = Σ a[i]²
//   update_dead            since_fired[i] = 0 if latent i fired in this batch, else += rows
//   dead_mask              eligible[i] = since_fired[i] > threshold; dead_count += that
//   aux_scale              stats[slot] = min(dead_count / k, 1)   (AuxK's loss scale)
// Generated header: WG. Prelude: common.wgsl (linear_id, partial, reduce_partial).

struct Params {
    n: u32,
    rows: u32,
    cols: u32,
    k: u32,
    slot: u32,
    partials: u32,
    threshold: u32,
    _pad0: u32,
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_A) var<storage, read> a: array<f32>;
@group(0) @binding(BIND_B) var<storage, read> b: array<f32>;
@group(0) @binding(BIND_PARTIAL_OUT) var<storage, read_write> partial_out: array<f32>;
@group(0) @binding(BIND_STATS) var<storage, read_write> stats: array<f32>;
@group(0) @binding(BIND_COL_MEAN) var<storage, read_write> col_mean: array<f32>;
@group(0) @binding(BIND_TOP_VAL) var<storage, read> top_val: array<f32>;
@group(0) @binding(BIND_TOP_IDX) var<storage, read> top_idx: array<u32>;
@group(0) @binding(BIND_L0_OUT) var<storage, read_write> l0_out: array<u32>;
@group(0) @binding(BIND_FIRE_COUNT) var<storage, read_write> fire_count: array<atomic<u32>>;
@group(0) @binding(BIND_SINCE_FIRED) var<storage, read_write> since_fired: array<u32>;
@group(0) @binding(BIND_ELIGIBLE) var<storage, read_write> eligible: array<u32>;
@group(0) @binding(BIND_DEAD_COUNT) var<storage, read_write> dead_count: array<atomic<u32>>;

@compute @workgroup_size(WG)
fn sum_sq_diff_partials(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = linear_id(wg, nwg);
    var acc = 0.0;
    for (var i = w * WG + lid; i < p.n; i += p.partials * WG) {
        let d = a[i] - b[i];
        acc = fma(d, d, acc);
    }
    partial[lid] = acc;
    reduce_partial(lid);
    if (lid == 0u) {
        partial_out[w] = partial[0];
    }
}

@compute @workgroup_size(WG)
fn column_mean(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let c = linear_id(wg, nwg) * WG + lid;
    if (c >= p.cols) {
        return;
    }
    var acc = 0.0;
    for (var r = 0u; r < p.rows; r++) {
        acc += a[r * p.cols + c];
    }
    col_mean[c] = acc / f32(p.rows);
}

@compute @workgroup_size(WG)
fn centered_sq_partials(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = linear_id(wg, nwg);
    var acc = 0.0;
    for (var i = w * WG + lid; i < p.n; i += p.partials * WG) {
        let d = a[i] - col_mean[i % p.cols];
        acc = fma(d, d, acc);
    }
    partial[lid] = acc;
    reduce_partial(lid);
    if (lid == 0u) {
        partial_out[w] = partial[0];
    }
}

@compute @workgroup_size(WG)
fn finish_sum(@builtin(local_invocation_index) lid: u32) {
    var acc = 0.0;
    for (var i = lid; i < p.partials; i += WG) {
        acc += partial_out[i];
    }
    partial[lid] = acc;
    reduce_partial(lid);
    if (lid == 0u) {
        stats[p.slot] = partial[0];
    }
}

@compute @workgroup_size(WG)
fn row_l0(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let r = linear_id(wg, nwg) * WG + lid;
    if (r >= p.rows) {
        return;
    }
    var count = 0u;
    for (var j = 0u; j < p.k; j++) {
        count += select(0u, 1u, top_val[r * p.k + j] > 0.0);
    }
    l0_out[r] = count;
}

@compute @workgroup_size(WG)
fn fire_counts(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_id(wg, nwg) * WG + lid;
    if (e >= p.n) {
        return;
    }
    if (top_val[e] > 0.0) {
        atomicAdd(&fire_count[top_idx[e]], 1u);
    }
}

@compute @workgroup_size(WG)
fn sum_sq_partials(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let w = linear_id(wg, nwg);
    var acc = 0.0;
    for (var i = w * WG + lid; i < p.n; i += p.partials * WG) {
        acc = fma(a[i], a[i], acc);
    }
    partial[lid] = acc;
    reduce_partial(lid);
    if (lid == 0u) {
        partial_out[w] = partial[0];
    }
}

@compute @workgroup_size(WG)
fn update_dead(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i >= p.n) {
        return;
    }
    if (atomicLoad(&fire_count[i]) > 0u) {
        since_fired[i] = 0u;
    } else {
        // Saturating add: a latent dead for more than 4·10⁹ tokens stays dead.
        since_fired[i] = since_fired[i] + min(p.rows, 0xffffffffu - since_fired[i]);
    }
}

@compute @workgroup_size(WG)
fn dead_mask(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i >= p.n) {
        return;
    }
    let dead = since_fired[i] > p.threshold;
    eligible[i] = select(0u, 1u, dead);
    if (dead) {
        atomicAdd(&dead_count[0], 1u);
    }
}

@compute @workgroup_size(1)
fn aux_scale() {
    stats[p.slot] = min(f32(atomicLoad(&dead_count[0])) / f32(p.k), 1.0);
}
