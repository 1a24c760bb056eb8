// Uploaded activations to the f32 rows the kernels read, dividing by the input scale
// (`--normalize-activations`; 1 leaves them as they are):
//   mode 0: f32 words;  mode 1: f16 pairs;  mode 2: bf16 pairs (two 16-bit values per u32,
//   the lower half first, as they lie in memory).
// Bindings: raw [ceil(n · bytes / 4)] u32; x [n] f32. Generated header: WG.
// One thread per output element. 16-bit uploads halve the bytes crossing the bus, and the
// conversions are exact, so x is bit for bit what converting on the host gives.

struct Params {
    n: u32,
    mode: u32,
    scale: f32,
    _pad0: u32,
}

@group(0) @binding(BIND_PARAMS) var<uniform> p: Params;
@group(0) @binding(BIND_RAW) var<storage, read> raw: array<u32>;
@group(0) @binding(BIND_X) var<storage, read_write> x: array<f32>;

@compute @workgroup_size(WG)
fn widen(
    @builtin(local_invocation_index) lid: u32,
    @builtin(workgroup_id) wg: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
) {
    let i = linear_id(wg, nwg) * WG + lid;
    if (i >= p.n) {
        return;
    }
    var v: f32;
    if (p.mode == 0u) {
        v = bitcast<f32>(raw[i]);
    } else {
        let half = (raw[i / 2u] >> (16u * (i % 2u))) & 0xffffu;
        if (p.mode == 1u) {
            v = unpack2x16float(half).x;
        } else {
            v = bitcast<f32>(half << 16u);
        }
    }
    if (p.scale != 1.0) {
        v = v / p.scale;
    }
    x[i] = v;
}
