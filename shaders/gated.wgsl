// The gated SAE's activation (SAELens `gated`), on pre-activations computed without a bias,
// h = (x − b_dec)·W_enc, one block of latents at a time:
//   h ← 1{h + b_gate > 0} · max(exp(r_mag)·h + b_mag, 0)
// The capped threshold selection (θ = 0) then keeps each row's non-zero values.
// Bindings: h [rows, block_len] (in place); b_gate, mag_scale (= exp(r_mag)), b_mag [block_len].
// Generated header: WG. One thread per element.

struct Params {
    rows: u32,
    cols: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_H) var<storage, read_write> h: array<f32>;
@group(0) @binding(BIND_B_GATE) var<storage, read> b_gate: array<f32>;
@group(0) @binding(BIND_MAG_SCALE) var<storage, read> mag_scale: array<f32>;
@group(0) @binding(BIND_B_MAG) var<storage, read> b_mag: array<f32>;

@compute @workgroup_size(WG)
fn gate(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i >= p.rows * p.cols) {
        return;
    }
    let j = i % p.cols;
    let pre = h[i];
    let open = pre + b_gate[j] > 0.0;
    h[i] = select(0.0, max(mag_scale[j] * pre + b_mag[j], 0.0), open);
}
