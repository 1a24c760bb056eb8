//! The encoder GEMM on the matrix units (shaders/encoder_coop.wgsl): rows of (x − b_dec) packed
//! to f16 with an exact power-of-two scale each, W_enc's f16 copy, and the f16 × f16 → f32 GEMM
//! itself. Only on adapters with cooperative matrices (gpu::coop); the f32 GEMM
//! (super::encoder) is the fallback and the reference.

use super::{check_len, dim};
use crate::gpu::bindings::encoder_coop::*;
use crate::gpu::coop::CoopTile;
use crate::gpu::dispatch::Grid;
use crate::gpu::error::{GpuError, GpuResult};
use crate::gpu::params::CoopParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

/// Invocations of the packing entry points.
const WG: u32 = 256;
/// Tiles per subgroup along M and N (the shader holds 2 × 2 accumulators).
const TM: u32 = 2;
const TN: u32 = 2;

fn key(entry: &'static str, tile: CoopTile) -> PipelineKey {
    PipelineKey::new(Shader::EncoderCoop, entry)
        .define("WG", WG)
        .define("T", tile.edge)
        .define("TM", TM)
        .define("TN", TN)
        .define("KC", 2 * tile.edge)
        .define("SUBGROUPS", tile.subgroups)
        .define("SUBGROUP_SIZE", tile.subgroup_size)
}

/// The GEMM's shape: `rows` rows of `k` inputs, `n` outputs (one block of latents).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CoopShape {
    pub rows: usize,
    pub k: usize,
    pub n: usize,
}

/// Per-row f16 operands: `a` [rows, k] f16, `row_scale` [rows], and the counters of rows
/// that could not be packed (non-finite) and weights clamped to f16's range.
pub struct PackedRows<'a> {
    pub a: &'a GpuBuffer,
    pub row_scale: &'a GpuBuffer,
    pub overflow: &'a GpuBuffer,
}

/// `a[m] = f16((x[m] − b_dec) / s_m)` with `row_scale[m] = s_m` a power of two (see the
/// shader); non-finite rows counted in `overflow[0]`.
pub fn launch_pack_rows(
    rec: &mut Recorder<'_>,
    x: &GpuBuffer,
    b_dec: &GpuBuffer,
    packed: &PackedRows<'_>,
    shape: CoopShape,
    tile: CoopTile,
) -> GpuResult<()> {
    const KERNEL: &str = "pack_rows";
    check_len(KERNEL, x, shape.rows * shape.k)?;
    check_len(KERNEL, b_dec, shape.k)?;
    check_len(KERNEL, packed.a, shape.rows * shape.k)?;
    check_len(KERNEL, packed.row_scale, shape.rows)?;
    check_len(KERNEL, packed.overflow, 2)?;
    let params = params(KERNEL, shape, 0)?;
    let grid = rec.threads_grid(shape.rows * WG as usize, WG);
    let bound = [
        (X, x),
        (B_DEC, b_dec),
        (A, packed.a),
        (ROW_SCALE, packed.row_scale),
        (OVERFLOW, packed.overflow),
    ];
    rec.launch(&key(KERNEL, tile), &params, &bound, grid)
}

/// `w16 = f16(w)` for a [k, n] weight block, clamped to ±65504 (clamped entries counted in
/// `overflow[1]`).
pub fn launch_pack_weights(
    rec: &mut Recorder<'_>,
    w: &GpuBuffer,
    w16: &GpuBuffer,
    overflow: &GpuBuffer,
    k: usize,
    n: usize,
    tile: CoopTile,
) -> GpuResult<()> {
    const KERNEL: &str = "pack_weights";
    check_len(KERNEL, w, k * n)?;
    check_len(KERNEL, w16, k * n)?;
    check_len(KERNEL, overflow, 2)?;
    let shape = CoopShape { rows: 0, k, n };
    let params = params(KERNEL, shape, 0)?;
    let grid = rec.threads_grid(k * n, WG);
    let bound = [(W, w), (W16, w16), (OVERFLOW, overflow)];
    rec.launch(&key(KERNEL, tile), &params, &bound, grid)
}

/// `h = (a · w16) · row_scale + b_enc`: the encoder's pre-activations [rows, n] from rows
/// packed by [`launch_pack_rows`] and a weight block packed by [`launch_pack_weights`].
pub fn launch_encode_coop(
    rec: &mut Recorder<'_>,
    packed: &PackedRows<'_>,
    w16: &GpuBuffer,
    b_enc: &GpuBuffer,
    h: &GpuBuffer,
    shape: CoopShape,
    tile: CoopTile,
) -> GpuResult<()> {
    const KERNEL: &str = "encode_coop";
    check_len(KERNEL, packed.a, shape.rows * shape.k)?;
    check_len(KERNEL, packed.row_scale, shape.rows)?;
    check_len(KERNEL, w16, shape.k * shape.n)?;
    check_len(KERNEL, b_enc, shape.n)?;
    check_len(KERNEL, h, shape.rows * shape.n)?;
    let bm = (tile.subgroups * TM * tile.edge) as usize;
    let bn = (TN * tile.edge) as usize;
    let blocks_n = shape.n.div_ceil(bn);
    let blocks_m = shape.rows.div_ceil(bm);
    let params = params(KERNEL, shape, blocks_n)?;
    let max = rec.gpu().limits.max_compute_workgroups_per_dimension as usize;
    if blocks_n > max || blocks_m > max {
        return Err(GpuError::Shape {
            kernel: KERNEL,
            message: format!(
                "{blocks_m} × {blocks_n} blocks exceed {max} workgroups per dimension"
            ),
        });
    }
    let grid = Grid::new(blocks_n as u32, blocks_m as u32, 1);
    let bound = [
        (A, packed.a),
        (ROW_SCALE, packed.row_scale),
        (W16, w16),
        (B_ENC, b_enc),
        (H, h),
    ];
    rec.launch(&key("encode_coop", tile), &params, &bound, grid)
}

fn params(kernel: &'static str, shape: CoopShape, blocks_n: usize) -> GpuResult<CoopParams> {
    Ok(CoopParams {
        rows: dim(kernel, "rows", shape.rows)?,
        k: dim(kernel, "d_in", shape.k)?,
        n: dim(kernel, "latents", shape.n)?,
        blocks_n: dim(kernel, "column blocks", blocks_n)?,
    })
}
