// BatchTopK (Bussmann et al. 2024): of every row's candidate entries (its `cap` largest ReLU
// pre-activations, from the TopK kernel), keep the `keep` = k·rows largest over the whole
// batch and zero the rest; the inference threshold θ follows the smallest kept value.
//   batch_threshold  one workgroup: radix select, 8 bits at a time, of the keep-th largest
//                    candidate t (values are ≥ 0, so their f32 bits order like the values);
//                    m = the smallest kept value > 0; θ ← β·θ + (1 − β)·m (SAELens' rule),
//                    θ ← m at the first step (θ = 0);
//                    state = [t, θ, m, kept]
//   batch_keep       top_val[e] = 0 where top_val[e] < t
// Generated header: WG. Prelude: common.wgsl (linear_id).

struct Params {
    n: u32,
    keep: u32,
    beta: f32,
    _pad0: u32,
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_TOP_VAL) var<storage, read_write> top_val: array<f32>;
@group(0) @binding(BIND_STATE) var<storage, read_write> state: array<f32>;

var<workgroup> histogram: array<atomic<u32>, 256>;
var<workgroup> chosen: array<u32, 2>;
var<workgroup> smallest: array<u32, WG>;

@compute @workgroup_size(WG)
fn batch_threshold(@builtin(local_invocation_index) lid: u32) {
    var prefix = 0u;
    var mask = 0u;
    var remaining = p.keep;
    // keep ≥ n keeps every candidate: t = 0.
    let select_all = p.keep >= p.n || p.keep == 0u;
    for (var round = 0u; round < 4u && !select_all; round++) {
        let shift = 24u - 8u * round;
        for (var b = lid; b < 256u; b += WG) {
            atomicStore(&histogram[b], 0u);
        }
        workgroupBarrier();
        for (var e = lid; e < p.n; e += WG) {
            let bits = bitcast<u32>(max(top_val[e], 0.0));
            if ((bits & mask) == prefix) {
                atomicAdd(&histogram[(bits >> shift) & 255u], 1u);
            }
        }
        workgroupBarrier();
        if (lid == 0u) {
            // The bin holding the remaining-th largest, counting from the top.
            var above = 0u;
            var bin = 255u;
            loop {
                let count = atomicLoad(&histogram[bin]);
                if (above + count >= remaining || bin == 0u) {
                    break;
                }
                above += count;
                bin -= 1u;
            }
            chosen[0] = bin;
            chosen[1] = remaining - above;
        }
        workgroupBarrier();
        prefix |= chosen[0] << shift;
        mask |= 255u << shift;
        remaining = chosen[1];
        workgroupBarrier();
    }
    let t = select(bitcast<f32>(prefix), 0.0, select_all);
    // The smallest kept value above zero, as bits (positive floats order like their bits).
    var least = 0xffffffffu;
    for (var e = lid; e < p.n; e += WG) {
        let v = top_val[e];
        if (v >= t && v > 0.0) {
            least = min(least, bitcast<u32>(v));
        }
    }
    smallest[lid] = least;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            smallest[lid] = min(smallest[lid], smallest[lid + stride]);
        }
        workgroupBarrier();
    }
    if (lid == 0u) {
        let m = select(bitcast<f32>(smallest[0]), 0.0, smallest[0] == 0xffffffffu);
        state[0] = t;
        // θ = 0 only before the first step: start from the first batch's value
        // (dictionary_learning) rather than from 0 (SAELens), so a short run exports a θ
        // near the batch threshold instead of a fraction of it.
        let theta = state[1];
        state[1] = select(p.beta * theta + (1.0 - p.beta) * m, m, theta == 0.0);
        state[2] = m;
    }
}

@compute @workgroup_size(WG)
fn batch_keep(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let e = linear_id(wg, nwg) * WG + lid;
    if (e < p.n && top_val[e] < state[0]) {
        top_val[e] = 0.0;
    }
}
