// Shared helpers, prepended (after the generated header) to every shader. WGSL has no
// includes; src/gpu/shaders.rs does the prepending. Needs WG from the generated header.
// Workgroup arrays cost nothing in an entry point that does not use them.

// Linear workgroup index of a grid folded into 2-D (src/gpu/dispatch.rs).
fn linear_id(wg: vec3<u32>, nwg: vec3<u32>) -> u32 {
    return wg.x + wg.y * nwg.x;
}

var<workgroup> partial: array<f32, WG>;

// Tree reduction of partial[] across the workgroup (WG a power of two); the sum ends in
// partial[0]. Starts with a barrier, so callers just write their own slot first.
fn reduce_partial(lid: u32) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
        }
        workgroupBarrier();
    }
}

var<workgroup> partial_b: array<f32, WG>;

// The same for two sums at once: partial[] and partial_b[].
fn reduce_partial_pair(lid: u32) {
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            partial[lid] += partial[lid + stride];
            partial_b[lid] += partial_b[lid + stride];
        }
        workgroupBarrier();
    }
}
