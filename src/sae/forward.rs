//! SAE weights on the GPU and the recorded forward pass (encode GEMM → TopK → sparse decode),
//! for a dictionary in one buffer or split into blocks of latents (src/sae/blocks.rs).

use crate::gpu::kernels::coop::{
    launch_encode_coop, launch_pack_rows, launch_pack_weights, CoopShape, PackedRows,
};
use crate::gpu::kernels::decoder::{launch_decode_sparse_block, DecodeBase};
use crate::gpu::kernels::encoder::{launch_encode_gemm, EncoderShape, GemmTiles};
use crate::gpu::kernels::gated::{launch_gate, GateParams};
use crate::gpu::kernels::input_norm::{launch_denormalize_rows, launch_normalize_rows, RowNorm};
use crate::gpu::kernels::topk::{
    launch_count_active_block, launch_topk_block, launch_topk_merge, Thresholds, TopKOut, MAX_K,
};
use crate::gpu::kernels::LatentRange;
use crate::gpu::{
    CoopTile, F16Overflow, Gpu, GpuBuffer, GpuError, GpuResult, InputPrecision, Matmul, Recorder,
};

use super::blocks::{LatentBlocks, LatentTensor};
use super::params::{Activation, InputNorm, SaeParams, Transcoding};

/// Latents kept per row for ReLU and JumpReLU SAEs unless the caller says otherwise.
pub const DEFAULT_CAP: usize = 256;

/// The per-latent parameters of one block of latents.
pub struct LatentBlock {
    pub range: LatentRange,
    /// [d_in, range.len]
    pub w_enc: GpuBuffer,
    /// [range.len]
    pub b_enc: GpuBuffer,
    /// [range.len, d_out]
    pub w_dec: GpuBuffer,
    /// Gated SAEs: the block's `b_gate`, `exp(r_mag)` and `b_mag` ([range.len] each).
    pub gate: Option<[GpuBuffer; 3]>,
}

/// What a transcoder adds on the GPU: the encoder's input is not centred (a zero centre of
/// [d_in], so the kernels that subtract b_dec from an SAE's input subtract nothing), and
/// W_skipᵀ [d_in, d_out] for a skip-transcoder (transposed so the encoder GEMM computes
/// x·W_skipᵀ + b_dec as it computes x·W_enc + b_enc).
pub struct GpuTranscoding {
    pub centre: GpuBuffer,
    pub skip_t: Option<GpuBuffer>,
}

/// The parameter tensors of an SAE, resident on the GPU.
pub struct GpuSae {
    pub d_in: usize,
    /// The decoder's width: d_in for an SAE.
    pub d_out: usize,
    pub d_sae: usize,
    /// Latents kept per row: TopK's k, or the cap for ReLU / JumpReLU SAEs.
    pub k: usize,
    /// Per-latent thresholds of ReLU (0) and JumpReLU (θ) SAEs; `None` for TopK.
    pub thresholds: Option<GpuBuffer>,
    /// SAELens' per-row input normalisation, applied around the forward pass.
    pub input_norm: Option<RowNorm>,
    /// Tile shape of the encoder GEMM (speed only: every shape gives the same bits).
    pub gemm_tiles: GemmTiles,
    /// The encoder GEMM on the matrix units (f16 operands), when chosen ([`GpuSae::set_matmul`]).
    pub coop: Option<CoopEncoder>,
    activation: Activation,
    pub layout: LatentBlocks,
    pub blocks: Vec<LatentBlock>,
    /// [d_out]
    pub b_dec: GpuBuffer,
    pub transcoder: Option<GpuTranscoding>,
}

impl GpuSae {
    /// Uploads an SAE for batches of up to `max_rows` rows.
    pub fn upload(gpu: &Gpu, params: &SaeParams, max_rows: usize) -> GpuResult<GpuSae> {
        GpuSae::upload_with_cap(gpu, params, DEFAULT_CAP, max_rows)
    }

    /// Uploads an SAE; ReLU and JumpReLU SAEs keep at most `cap` latents per row. The
    /// dictionary is split into blocks when its weights, or the pre-activations of `max_rows`
    /// rows, exceed one storage binding.
    pub fn upload_with_cap(
        gpu: &Gpu,
        params: &SaeParams,
        cap: usize,
        max_rows: usize,
    ) -> GpuResult<GpuSae> {
        let (d_in, d_out, d_sae) = (
            params.d_in as u64,
            params.d_out() as u64,
            params.d_sae as u64,
        );
        let needed =
            4 * ((d_in + d_out) * d_sae + max_rows as u64 * (d_sae + d_in + d_out) + d_in * d_out);
        gpu.check_memory("the SAE's weights and one batch's pre-activations", needed)?;
        let layout = LatentBlocks::plan(
            params.d_in,
            params.d_out(),
            params.d_sae,
            max_rows,
            gpu.binding_limit(),
        )?;
        if layout.is_split() {
            tracing::info!(
                "the dictionary exceeds one storage binding ({} bytes): split into {} blocks of latents",
                gpu.binding_limit(),
                layout.ranges.len()
            );
        }
        GpuSae::upload_blocks(gpu, params, cap, layout)
    }

    /// Uploads an SAE divided into the given blocks.
    pub fn upload_blocks(
        gpu: &Gpu,
        params: &SaeParams,
        cap: usize,
        layout: LatentBlocks,
    ) -> GpuResult<GpuSae> {
        let cap = cap.clamp(1, MAX_K).min(params.d_sae);
        let (k, thresholds) = match &params.activation {
            Activation::TopK { k } => (*k, None),
            Activation::Relu => (
                cap,
                Some(gpu.upload("thresholds", &vec![0.0f32; params.d_sae])?),
            ),
            Activation::JumpRelu { threshold } => (cap, Some(gpu.upload("thresholds", threshold)?)),
            Activation::Gated { .. } => (
                cap,
                Some(gpu.upload("thresholds", &vec![0.0f32; params.d_sae])?),
            ),
        };
        if k == 0 || k > MAX_K || k > params.d_sae {
            return Err(GpuError::Shape {
                kernel: "forward",
                message: format!(
                    "k = {k} must be between 1 and min({MAX_K}, d_sae = {})",
                    params.d_sae
                ),
            });
        }
        if params.is_transcoder() && params.input_norm != InputNorm::None {
            return Err(GpuError::Shape {
                kernel: "forward",
                message: "a transcoder with a per-row input normalisation is not supported".into(),
            });
        }
        if let Some(w) = params.w_skip() {
            if w.len() != params.d_out() * params.d_in {
                return Err(GpuError::Shape {
                    kernel: "forward",
                    message: format!(
                        "W_skip holds {} values, not d_out {} × d_in {}",
                        w.len(),
                        params.d_out(),
                        params.d_in
                    ),
                });
            }
        }
        if layout.d_in != params.d_in
            || layout.d_out != params.d_out()
            || layout.d_sae != params.d_sae
        {
            return Err(GpuError::Shape {
                kernel: "forward",
                message: format!(
                    "block layout for d_in {} × d_sae {} × d_out {} given an SAE of d_in {} × d_sae {} × d_out {}",
                    layout.d_in, layout.d_sae, layout.d_out, params.d_in, params.d_sae, params.d_out()
                ),
            });
        }
        let w_enc = layout.split(LatentTensor::Encoder, &params.w_enc);
        let b_enc = layout.split(LatentTensor::Vector, &params.b_enc);
        let w_dec = layout.split(LatentTensor::Decoder, &params.w_dec);
        let gates = match &params.activation {
            Activation::Gated {
                b_gate,
                r_mag,
                b_mag,
            } => {
                let mag_scale: Vec<f32> =
                    r_mag.iter().map(|r| f64::from(*r).exp() as f32).collect();
                Some([
                    layout.split(LatentTensor::Vector, b_gate),
                    layout.split(LatentTensor::Vector, &mag_scale),
                    layout.split(LatentTensor::Vector, b_mag),
                ])
            }
            _ => None,
        };
        let blocks = layout
            .ranges
            .iter()
            .enumerate()
            .map(|(b, &range)| {
                let name = |tensor: &str| block_label(tensor, &layout, b);
                Ok(LatentBlock {
                    range,
                    w_enc: gpu.upload(&name("W_enc"), &w_enc[b])?,
                    b_enc: gpu.upload(&name("b_enc"), &b_enc[b])?,
                    w_dec: gpu.upload(&name("W_dec"), &w_dec[b])?,
                    gate: match &gates {
                        Some([b_gate, mag_scale, b_mag]) => Some([
                            gpu.upload(&name("b_gate"), &b_gate[b])?,
                            gpu.upload(&name("mag_scale"), &mag_scale[b])?,
                            gpu.upload(&name("b_mag"), &b_mag[b])?,
                        ]),
                        None => None,
                    },
                })
            })
            .collect::<GpuResult<Vec<_>>>()?;
        Ok(GpuSae {
            d_in: params.d_in,
            d_out: params.d_out(),
            d_sae: params.d_sae,
            k,
            thresholds,
            input_norm: params.input_norm.row_norm(),
            gemm_tiles: GemmTiles::default(),
            coop: None,
            activation: params.activation.clone(),
            layout,
            blocks,
            b_dec: gpu.upload("b_dec", &params.b_dec)?,
            transcoder: match &params.transcoder {
                None => None,
                Some(t) => Some(GpuTranscoding {
                    centre: gpu.storage::<f32>("input centre (none)", params.d_in)?,
                    skip_t: match &t.w_skip {
                        Some(w) => {
                            Some(gpu.upload("W_skip^T", &transpose(w, t.d_out, params.d_in))?)
                        }
                        None => None,
                    },
                }),
            },
        })
    }

    /// What the encoder subtracts from its input: b_dec for an SAE, zeros for a transcoder.
    pub fn centre(&self) -> &GpuBuffer {
        self.transcoder.as_ref().map_or(&self.b_dec, |t| &t.centre)
    }

    /// W_skipᵀ [d_in, d_out] of a skip-transcoder.
    pub fn skip_t(&self) -> Option<&GpuBuffer> {
        self.transcoder.as_ref()?.skip_t.as_ref()
    }

    /// Runs the encoder GEMM as `matmul` says: on the matrix units with f16 copies of W_enc
    /// (made here; a trainer refreshes them after each step), or in f32.
    pub fn set_matmul(&mut self, gpu: &Gpu, matmul: Matmul) -> GpuResult<()> {
        let Matmul::F16(tile) = matmul else {
            self.coop = None;
            return Ok(());
        };
        let w16 = self
            .blocks
            .iter()
            .enumerate()
            .map(|(b, block)| {
                let label = block_label("W_enc f16", &self.layout, b);
                gpu.storage::<half::f16>(&label, block.w_enc.len)
            })
            .collect::<GpuResult<Vec<_>>>()?;
        self.coop = Some(CoopEncoder {
            tile,
            w16,
            overflow: gpu.storage::<u32>("f16 overflow", 2)?,
        });
        let mut rec = Recorder::new(gpu, "W_enc to f16");
        self.record_pack_weights(&mut rec)?;
        rec.submit()?;
        Ok(())
    }

    /// How the encoder GEMM runs.
    pub fn matmul(&self) -> Matmul {
        self.coop
            .as_ref()
            .map_or(Matmul::F32, |c| Matmul::F16(c.tile))
    }

    /// Records the refresh of the f16 copies of W_enc (nothing without them).
    pub fn record_pack_weights(&self, rec: &mut Recorder<'_>) -> GpuResult<()> {
        let Some(coop) = &self.coop else {
            return Ok(());
        };
        for (block, w16) in self.blocks.iter().zip(&coop.w16) {
            let (k, n) = (self.d_in, block.range.len);
            launch_pack_weights(rec, &block.w_enc, w16, &coop.overflow, k, n, coop.tile)?;
        }
        Ok(())
    }

    /// What f16 could not hold so far (zeros without the f16 path). Waits for the GPU.
    pub fn f16_overflow(&self, gpu: &Gpu) -> GpuResult<F16Overflow> {
        match &self.coop {
            None => Ok(F16Overflow::default()),
            Some(coop) => {
                let counts: Vec<u32> = gpu.read(&coop.overflow)?;
                Ok(F16Overflow {
                    rows: counts[0],
                    weights: counts[1],
                })
            }
        }
    }

    pub fn download(&self, gpu: &Gpu) -> GpuResult<SaeParams> {
        Ok(SaeParams {
            input_norm: match self.input_norm {
                None => InputNorm::None,
                Some(RowNorm::ConstantNormRescale) => InputNorm::ConstantNormRescale,
                Some(RowNorm::LayerNorm) => InputNorm::LayerNorm,
            },
            d_in: self.d_in,
            d_sae: self.d_sae,
            activation: self.activation.clone(),
            w_enc: self.read_joined(gpu, LatentTensor::Encoder, |b| &b.w_enc)?,
            b_enc: self.read_joined(gpu, LatentTensor::Vector, |b| &b.b_enc)?,
            w_dec: self.read_joined(gpu, LatentTensor::Decoder, |b| &b.w_dec)?,
            b_dec: gpu.read(&self.b_dec)?,
            transcoder: match &self.transcoder {
                None => None,
                Some(t) => Some(Transcoding {
                    d_out: self.d_out,
                    w_skip: match &t.skip_t {
                        Some(w) => Some(transpose(&gpu.read(w)?, self.d_in, self.d_out)),
                        None => None,
                    },
                }),
            },
        })
    }

    /// Reads one per-latent tensor from every block into its full layout.
    fn read_joined(
        &self,
        gpu: &Gpu,
        tensor: LatentTensor,
        pick: impl Fn(&LatentBlock) -> &GpuBuffer,
    ) -> GpuResult<Vec<f32>> {
        let parts = self
            .blocks
            .iter()
            .map(|b| gpu.read(pick(b)))
            .collect::<GpuResult<Vec<_>>>()?;
        Ok(self.layout.join(tensor, &parts))
    }

    /// Every parameter buffer: (W_enc, b_enc, W_dec) of each block, b_dec, then W_skipᵀ.
    pub fn tensors(&self) -> Vec<&GpuBuffer> {
        self.blocks
            .iter()
            .flat_map(|b| [&b.w_enc, &b.b_enc, &b.w_dec])
            .chain([&self.b_dec])
            .chain(self.skip_t())
            .collect()
    }
}

/// A row-major [rows, cols] matrix transposed to [cols, rows].
pub fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; m.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = m[r * cols + c];
        }
    }
    out
}

/// "W_enc", or "W_enc block 2/5" for a split dictionary.
pub fn block_label(tensor: &str, layout: &LatentBlocks, block: usize) -> String {
    if layout.is_split() {
        format!("{tensor} block {}/{}", block + 1, layout.ranges.len())
    } else {
        tensor.to_string()
    }
}

/// The encoder GEMM on the matrix units: its layout, f16 copies of each block's W_enc, and
/// the counts of what f16 could not hold (non-finite rows, clamped weights).
pub struct CoopEncoder {
    pub tile: CoopTile,
    pub w16: Vec<GpuBuffer>,
    pub overflow: GpuBuffer,
}

/// Per-row candidate slots where the blocks of a split dictionary put their own top k.
pub struct Candidates {
    pub idx: GpuBuffer,
    pub val: GpuBuffer,
}

impl Candidates {
    /// Slots for `rows` rows and selections of up to `k` latents; `None` when the dictionary
    /// is one block (TopK writes its output directly).
    pub fn new(gpu: &Gpu, layout: &LatentBlocks, rows: usize, k: usize) -> GpuResult<Option<Self>> {
        if !layout.is_split() {
            return Ok(None);
        }
        let n = rows * layout.candidates(k);
        Ok(Some(Candidates {
            idx: gpu.storage::<u32>("topk_candidate_idx", n)?,
            val: gpu.storage::<f32>("topk_candidate_val", n)?,
        }))
    }
}

/// Activations of one batch through the forward pass; sized for `capacity` rows.
pub struct ForwardBuffers {
    pub capacity: usize,
    /// The encoder's input [capacity, d_in].
    pub x: GpuBuffer,
    /// A transcoder's target [capacity, d_out] (an SAE's target is `x`): see
    /// [`ForwardBuffers::target`].
    pub y: Option<GpuBuffer>,
    /// Pre-activations [capacity, block.len], one buffer per block of latents.
    pub h: Vec<GpuBuffer>,
    pub top_idx: GpuBuffer,
    pub top_val: GpuBuffer,
    /// The reconstruction (a transcoder's prediction) [capacity, d_out].
    pub x_hat: GpuBuffer,
    /// A skip-transcoder's x·W_skipᵀ + b_dec [capacity, d_out], what the decode adds to.
    pub skip_base: Option<GpuBuffer>,
    /// [capacity] u32 non-zero latents per row, for thresholded SAEs.
    pub active: Option<GpuBuffer>,
    pub candidates: Option<Candidates>,
    /// [capacity, 2] per-row statistics of the input normalisation, when the SAE has one.
    pub row_stats: Option<GpuBuffer>,
    /// The f16 GEMM's packed rows: (x − b_dec) [capacity, d_in] f16 and each row's scale.
    pub packed: Option<(GpuBuffer, GpuBuffer)>,
}

impl ForwardBuffers {
    /// The packed rows the f16 GEMM of `sae` reads (none for the f32 GEMM).
    fn packed_for(
        gpu: &Gpu,
        sae: &GpuSae,
        capacity: usize,
    ) -> GpuResult<Option<(GpuBuffer, GpuBuffer)>> {
        match sae.coop {
            Some(_) => Ok(Some((
                gpu.storage::<half::f16>("x packed f16", capacity * sae.d_in)?,
                gpu.storage::<f32>("x row scales", capacity)?,
            ))),
            None => Ok(None),
        }
    }

    /// What the reconstruction is compared with: the target of a transcoder, else the input.
    pub fn target(&self) -> &GpuBuffer {
        self.y.as_ref().unwrap_or(&self.x)
    }

    /// What the decoded codes are added to.
    pub fn decode_base<'a>(&'a self, sae: &'a GpuSae) -> DecodeBase<'a> {
        match &self.skip_base {
            Some(base) => DecodeBase::Rows(base),
            None => DecodeBase::Bias(&sae.b_dec),
        }
    }

    /// Buffers for `sae` as its encoder GEMM now runs (after [`GpuSae::set_matmul`]).
    pub fn follow_matmul(&mut self, gpu: &Gpu, sae: &GpuSae) -> GpuResult<()> {
        self.packed = ForwardBuffers::packed_for(gpu, sae, self.capacity)?;
        Ok(())
    }

    pub fn new(gpu: &Gpu, sae: &GpuSae, capacity: usize) -> GpuResult<ForwardBuffers> {
        let h = sae
            .blocks
            .iter()
            .enumerate()
            .map(|(b, block)| {
                let label = block_label("pre_activations", &sae.layout, b);
                gpu.storage::<f32>(&label, capacity * block.range.len)
            })
            .collect::<GpuResult<Vec<_>>>()?;
        Ok(ForwardBuffers {
            capacity,
            x: gpu.storage::<f32>("x", capacity * sae.d_in)?,
            y: match sae.transcoder {
                Some(_) => Some(gpu.storage::<f32>("y", capacity * sae.d_out)?),
                None => None,
            },
            h,
            top_idx: gpu.storage::<u32>("top_idx", capacity * sae.k)?,
            top_val: gpu.storage::<f32>("top_val", capacity * sae.k)?,
            x_hat: gpu.storage::<f32>("x_hat", capacity * sae.d_out)?,
            skip_base: match sae.skip_t() {
                Some(_) => Some(gpu.storage::<f32>("skip base", capacity * sae.d_out)?),
                None => None,
            },
            active: match sae.thresholds {
                Some(_) => Some(gpu.storage::<u32>("active_latents", capacity)?),
                None => None,
            },
            candidates: Candidates::new(gpu, &sae.layout, capacity, sae.k)?,
            row_stats: match sae.input_norm {
                Some(_) => Some(gpu.storage::<f32>("input_norm_row_stats", capacity * 2)?),
                None => None,
            },
            packed: ForwardBuffers::packed_for(gpu, sae, capacity)?,
        })
    }
}

/// Where a TopK over the whole dictionary writes: `idx`/`val` [rows, k].
pub struct Selection<'a> {
    pub k: usize,
    pub idx: &'a GpuBuffer,
    pub val: &'a GpuBuffer,
}

/// Records the TopK of each row of the pre-activations `h` (one buffer per block) over the
/// whole dictionary; a split dictionary selects per block into `candidates`, then merges.
/// `eligible` ([d_sae] u32) restricts the competition (AuxK's dead latents).
pub fn record_topk(
    rec: &mut Recorder<'_>,
    sae: &GpuSae,
    h: &[GpuBuffer],
    rows: usize,
    out: Selection<'_>,
    eligible: Option<&GpuBuffer>,
    candidates: Option<&Candidates>,
) -> GpuResult<()> {
    let thresholds = || sae.thresholds.as_ref().map(Thresholds);
    let direct = |stride| TopKOut {
        idx: out.idx,
        val: out.val,
        stride,
        offset: 0,
    };
    if !sae.layout.is_split() {
        let (block, k) = (sae.blocks[0].range, out.k);
        return launch_topk_block(
            rec,
            &h[0],
            rows,
            block,
            k,
            direct(k),
            eligible,
            thresholds(),
        );
    }
    let slots = candidates.ok_or_else(|| GpuError::Shape {
        kernel: "topk_rows",
        message: "a split dictionary needs candidate buffers".to_string(),
    })?;
    let stride = sae.layout.candidates(out.k);
    let mut offset = 0;
    for (block, h_block) in sae.blocks.iter().zip(h) {
        let k_block = out.k.min(block.range.len);
        let into = TopKOut {
            idx: &slots.idx,
            val: &slots.val,
            stride,
            offset,
        };
        launch_topk_block(
            rec,
            h_block,
            rows,
            block.range,
            k_block,
            into,
            eligible,
            thresholds(),
        )?;
        offset += k_block;
    }
    launch_topk_merge(
        rec, &slots.val, &slots.idx, rows, stride, out.k, out.idx, out.val, eligible,
    )
}

/// Records `x_hat = base + Σ_j top_val[r, j] · W_dec[top_idx[r, j]]`, block by block.
#[allow(clippy::too_many_arguments)]
pub fn record_decode(
    rec: &mut Recorder<'_>,
    sae: &GpuSae,
    top_idx: &GpuBuffer,
    top_val: &GpuBuffer,
    k: usize,
    base: DecodeBase<'_>,
    x_hat: &GpuBuffer,
    rows: usize,
) -> GpuResult<()> {
    rec.stage("decode");
    for block in &sae.blocks {
        launch_decode_sparse_block(
            rec,
            top_idx,
            top_val,
            &block.w_dec,
            block.range,
            base,
            x_hat,
            rows,
            sae.d_out,
            k,
        )?;
    }
    Ok(())
}

/// Records a skip-transcoder's `fw.skip_base = x·W_skipᵀ + b_dec` (nothing for other SAEs),
/// the encoder GEMM with W_skipᵀ for W_enc, no centre, and b_dec for b_enc.
pub fn record_skip(
    rec: &mut Recorder<'_>,
    sae: &GpuSae,
    fw: &ForwardBuffers,
    rows: usize,
) -> GpuResult<()> {
    let (Some(skip_t), Some(base)) = (sae.skip_t(), &fw.skip_base) else {
        return Ok(());
    };
    let shape = EncoderShape {
        rows,
        d_in: sae.d_in,
        d_sae: sae.d_out,
    };
    launch_encode_gemm(
        rec,
        &fw.x,
        InputPrecision::F32,
        skip_t,
        sae.centre(),
        &sae.b_dec,
        base,
        shape,
        GemmTiles::default(),
    )
}

/// Records encode → TopK (or capped threshold selection) → decode for the first `rows` rows
/// of `fw.x`. An SAE with a per-row input normalisation normalises `fw.x` in place and writes
/// `fw.x_hat` in the input's own units.
pub fn record_forward(
    rec: &mut Recorder<'_>,
    sae: &GpuSae,
    fw: &ForwardBuffers,
    rows: usize,
) -> GpuResult<()> {
    record_encode_select(rec, sae, fw, rows)?;
    record_reconstruct(rec, sae, fw, rows)
}

/// Records the second half of [`record_forward`]: `fw.x_hat` from the selected entries (in
/// the input's own units for an SAE with a per-row input normalisation). A trainer that
/// changes the selection (BatchTopK) runs it after its own step.
pub fn record_reconstruct(
    rec: &mut Recorder<'_>,
    sae: &GpuSae,
    fw: &ForwardBuffers,
    rows: usize,
) -> GpuResult<()> {
    record_skip(rec, sae, fw, rows)?;
    record_decode(
        rec,
        sae,
        &fw.top_idx,
        &fw.top_val,
        sae.k,
        fw.decode_base(sae),
        &fw.x_hat,
        rows,
    )?;
    if let (Some(norm), Some(stats)) = (sae.input_norm, &fw.row_stats) {
        launch_denormalize_rows(rec, norm, &fw.x_hat, stats, rows, sae.d_in)?;
    }
    Ok(())
}

/// Records the encoder and the selection of each row's k latents (`fw.top_idx`/`top_val`,
/// and `fw.active` for thresholded SAEs), without the decode.
pub fn record_encode_select(
    rec: &mut Recorder<'_>,
    sae: &GpuSae,
    fw: &ForwardBuffers,
    rows: usize,
) -> GpuResult<()> {
    rec.stage("encode");
    if let Some(norm) = sae.input_norm {
        let stats = fw.row_stats.as_ref().ok_or_else(|| GpuError::Shape {
            kernel: "normalize_rows",
            message: "forward buffers made for an SAE without input normalisation".into(),
        })?;
        launch_normalize_rows(rec, norm, &fw.x, stats, rows, sae.d_in)?;
    }
    let coop = match (&sae.coop, &fw.packed) {
        (Some(coop), Some((a, row_scale))) => {
            let packed = PackedRows {
                a,
                row_scale,
                overflow: &coop.overflow,
            };
            let shape = CoopShape {
                rows,
                k: sae.d_in,
                n: 0,
            };
            launch_pack_rows(rec, &fw.x, sae.centre(), &packed, shape, coop.tile)?;
            Some((coop, packed))
        }
        _ => None,
    };
    for (b, (block, h)) in sae.blocks.iter().zip(&fw.h).enumerate() {
        match &coop {
            Some((coop, packed)) => {
                let shape = CoopShape {
                    rows,
                    k: sae.d_in,
                    n: block.range.len,
                };
                launch_encode_coop(rec, packed, &coop.w16[b], &block.b_enc, h, shape, coop.tile)?;
            }
            None => {
                let shape = EncoderShape {
                    rows,
                    d_in: sae.d_in,
                    d_sae: block.range.len,
                };
                launch_encode_gemm(
                    rec,
                    &fw.x,
                    InputPrecision::F32,
                    &block.w_enc,
                    sae.centre(),
                    &block.b_enc,
                    h,
                    shape,
                    sae.gemm_tiles,
                )?;
            }
        }
        if let Some([b_gate, mag_scale, b_mag]) = &block.gate {
            let gate = GateParams {
                b_gate,
                mag_scale,
                b_mag,
            };
            launch_gate(rec, h, rows, block.range.len, gate)?;
        }
    }
    let selection = Selection {
        k: sae.k,
        idx: &fw.top_idx,
        val: &fw.top_val,
    };
    rec.stage("select");
    record_topk(
        rec,
        sae,
        &fw.h,
        rows,
        selection,
        None,
        fw.candidates.as_ref(),
    )?;
    if let (Some(theta), Some(active)) = (&sae.thresholds, &fw.active) {
        for (block, h) in sae.blocks.iter().zip(&fw.h) {
            launch_count_active_block(rec, h, rows, block.range, theta, active)?;
        }
    }
    Ok(())
}
