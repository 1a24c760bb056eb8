//! Encoder pre-activation GEMM: `h = (x − b_dec)·W_enc + b_enc`.

use super::{check_len, dim};
use crate::gpu::bindings::encoder_gemm::*;
use crate::gpu::dispatch::{tiles, Grid};
use crate::gpu::error::{ensure, GpuResult};
use crate::gpu::params::GemmParams;
use crate::gpu::{GpuBuffer, InputPrecision, PipelineKey, Recorder, Shader};

const KERNEL: &str = "encode_gemm";

/// Tile shape of the GEMM: a workgroup computes `tile_m × tile_n` outputs, stepping through K
/// in slices of `tile_k`; each thread owns a `thread_m × thread_n` register block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTiles {
    pub tile_m: u32,
    pub tile_n: u32,
    pub tile_k: u32,
    pub thread_m: u32,
    pub thread_n: u32,
}

impl Default for GemmTiles {
    /// 256 threads, 4×4 outputs each, 8 KiB of workgroup memory: fits every adapter's defaults.
    fn default() -> Self {
        GemmTiles {
            tile_m: 64,
            tile_n: 64,
            tile_k: 16,
            thread_m: 4,
            thread_n: 4,
        }
    }
}

impl GemmTiles {
    /// 256 threads, 8×8 outputs each: more reuse per load, for GPUs with large register files.
    pub const LARGE: GemmTiles = GemmTiles {
        tile_m: 128,
        tile_n: 128,
        tile_k: 8,
        thread_m: 8,
        thread_n: 8,
    };

    /// The configurations `sae bench tune` times at a run's shape (every one is covered by the
    /// GEMM reference test). The accumulation order over k is the same in all of them, so the
    /// choice changes speed only, never a bit of the result.
    pub const CANDIDATES: [GemmTiles; 6] = [
        GemmTiles {
            tile_m: 64,
            tile_n: 64,
            tile_k: 16,
            thread_m: 4,
            thread_n: 4,
        },
        GemmTiles::LARGE,
        GemmTiles {
            tile_m: 32,
            tile_n: 32,
            tile_k: 32,
            thread_m: 4,
            thread_n: 4,
        },
        GemmTiles {
            tile_m: 64,
            tile_n: 64,
            tile_k: 32,
            thread_m: 8,
            thread_n: 8,
        },
        GemmTiles {
            tile_m: 128,
            tile_n: 64,
            tile_k: 16,
            thread_m: 8,
            thread_n: 4,
        },
        GemmTiles {
            tile_m: 16,
            tile_n: 64,
            tile_k: 16,
            thread_m: 2,
            thread_n: 4,
        },
    ];

    /// `TILE_MxTILE_NxTILE_K/THREAD_MxTHREAD_N`, e.g. `64x64x16/4x4`.
    pub fn label(&self) -> String {
        format!(
            "{}x{}x{}/{}x{}",
            self.tile_m, self.tile_n, self.tile_k, self.thread_m, self.thread_n
        )
    }

    /// Parses [`GemmTiles::label`]'s form.
    pub fn parse(text: &str) -> Option<GemmTiles> {
        let (tile, thread) = text.split_once('/')?;
        let tile: Vec<u32> = tile
            .split('x')
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        let thread: Vec<u32> = thread
            .split('x')
            .map(|v| v.parse().ok())
            .collect::<Option<_>>()?;
        match (tile.as_slice(), thread.as_slice()) {
            (&[tile_m, tile_n, tile_k], &[thread_m, thread_n]) => Some(GemmTiles {
                tile_m,
                tile_n,
                tile_k,
                thread_m,
                thread_n,
            }),
            _ => None,
        }
    }

    /// Whether this adapter can run these tiles (threads and workgroup memory within limits).
    pub fn fits(&self, limits: &wgpu::Limits) -> bool {
        self.validate(limits).is_ok()
    }

    pub fn threads(&self) -> u32 {
        (self.tile_m / self.thread_m) * (self.tile_n / self.thread_n)
    }

    pub fn workgroup_bytes(&self) -> u32 {
        self.tile_k * (self.tile_m + self.tile_n) * 4
    }

    fn validate(&self, limits: &wgpu::Limits) -> GpuResult<()> {
        ensure(
            self.thread_m > 0
                && self.thread_n > 0
                && self.tile_k.is_multiple_of(4)
                && self.tile_n.is_multiple_of(4)
                && self.tile_k > 0
                && self.tile_m.is_multiple_of(self.thread_m)
                && self.tile_n.is_multiple_of(self.thread_n),
            KERNEL,
            || {
                format!("tile shape {self:?}: tiles must be multiples of the per-thread block, TILE_K and TILE_N of 4")
            },
        )?;
        ensure(
            self.threads() <= limits.max_compute_invocations_per_workgroup
                && self.threads() <= limits.max_compute_workgroup_size_x,
            KERNEL,
            || {
                format!(
                    "tile shape {self:?} needs {} threads per workgroup",
                    self.threads()
                )
            },
        )?;
        ensure(
            self.workgroup_bytes() <= limits.max_compute_workgroup_storage_size,
            KERNEL,
            || {
                format!(
                    "tile shape {self:?} needs {} bytes of workgroup memory",
                    self.workgroup_bytes()
                )
            },
        )
    }

    fn key(&self, precision: InputPrecision) -> PipelineKey {
        PipelineKey::new(Shader::EncoderGemm, "encode_gemm")
            .precision(precision)
            .define("TILE_M", self.tile_m)
            .define("TILE_N", self.tile_n)
            .define("TILE_K", self.tile_k)
            .define("THREAD_M", self.thread_m)
            .define("THREAD_N", self.thread_n)
            .define("WG", self.threads())
    }
}

#[derive(Clone, Copy, Debug)]
pub struct EncoderShape {
    pub rows: usize,
    pub d_in: usize,
    pub d_sae: usize,
}

/// Records `h = (x − b_dec)·W_enc + b_enc`; `x` is f32, or f16 when `precision` says so.
#[allow(clippy::too_many_arguments)]
pub fn launch_encode_gemm(
    rec: &mut Recorder<'_>,
    x: &GpuBuffer,
    precision: InputPrecision,
    w_enc: &GpuBuffer,
    b_dec: &GpuBuffer,
    b_enc: &GpuBuffer,
    h: &GpuBuffer,
    shape: EncoderShape,
    tiles_shape: GemmTiles,
) -> GpuResult<()> {
    let gpu = rec.gpu();
    tiles_shape.validate(&gpu.limits)?;
    let EncoderShape { rows, d_in, d_sae } = shape;
    ensure(x.elem_bytes == precision.bytes(), KERNEL, || {
        format!(
            "x has {}-byte elements but precision is {precision:?}",
            x.elem_bytes
        )
    })?;
    check_len(KERNEL, x, rows * d_in)?;
    check_len(KERNEL, w_enc, d_in * d_sae)?;
    check_len(KERNEL, b_dec, d_in)?;
    check_len(KERNEL, b_enc, d_sae)?;
    check_len(KERNEL, h, rows * d_sae)?;
    let params = GemmParams {
        m: dim(KERNEL, "rows", rows)?,
        n: dim(KERNEL, "d_sae", d_sae)?,
        k: dim(KERNEL, "d_in", d_in)?,
        aligned: u32::from(d_in % 4 == 0 && d_sae % 4 == 0),
    };
    let grid = Grid::new(
        tiles(d_sae, tiles_shape.tile_n),
        tiles(rows, tiles_shape.tile_m),
        1,
    );
    let max = gpu.limits.max_compute_workgroups_per_dimension;
    ensure(grid.x <= max && grid.y <= max, KERNEL, || {
        format!("grid {grid:?} exceeds {max} workgroups per dimension; use smaller batches")
    })?;
    rec.launch(
        &tiles_shape.key(precision),
        &params,
        &[
            (X, x),
            (W_ENC, w_enc),
            (B_DEC, b_dec),
            (B_ENC, b_enc),
            (H, h),
        ],
        grid,
    )
}
