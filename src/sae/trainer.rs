//! One training step of an SAE, recorded as a single GPU submission: the batch widened from
//! its upload, forward, loss, backward without float atomics, optional AuxK, Adam and the
//! unit-norm decoder constraint, then dead-latent bookkeeping. The architectures' additions
//! (super::architecture) hook into this one step: BatchTopK's batch selection, Matryoshka's
//! prefixes, the ReLU family's penalties and clipping, JumpReLU's thresholds.
//!
//! A step is recorded into a caller's recorder ([`Trainer::record_batch_step`]): a
//! [`Feed`](super::feed::Feed) uploads each batch once and submits the steps of every trainer
//! that shares it (a sweep) together. Nothing is allocated and nothing waits in a
//! steady-state step: the launches reuse their parameter buffers and bind groups (the feed's
//! `LaunchCache`), and the step's metrics are copied into a ring of mapped buffers that the
//! host reads a few steps later ([`Trainer::ready_metrics`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use crate::gpu::alloc::TrackedBuffer;
use crate::gpu::kernels::backward::{
    launch_aux_residual, launch_bias_dec_grad_block, launch_code_grad_block,
    launch_decoder_weight_grad_block, launch_encoder_weight_grad_block, launch_loss_grad,
    launch_loss_grad_into, launch_reverse_index, BackwardShape, LossScale, ReverseIndex,
};
use crate::gpu::kernels::batch_topk::{launch_batch_topk, state as batch_state};
use crate::gpu::kernels::decoder::launch_decode_sparse_block;
use crate::gpu::kernels::jumprelu::{
    launch_threshold_from_param, launch_threshold_grad, ThresholdGrad, ThresholdGradBuffers,
};
use crate::gpu::kernels::optim::{
    launch_adam, launch_normalize_rows, launch_remove_parallel_grad, AdamConfig,
};
use crate::gpu::kernels::penalty::{
    launch_clip_factor, launch_penalty_code_grad, launch_penalty_decoder_grad, launch_row_norms,
    launch_scale_by_slot, CodePenalty,
};
use crate::gpu::kernels::reduce::{
    launch_aux_scale, launch_dead_mask, launch_fire_counts, launch_update_dead, Reducer,
};
use crate::gpu::kernels::topk::MAX_K;
use crate::gpu::kernels::widen::launch_widen;
use crate::gpu::kernels::LatentRange;
use crate::gpu::{Gpu, GpuBuffer, GpuError, GpuResult, Recorder};

use super::architecture::{Architecture, L0Penalty, ThresholdParam, TANH_SCALE, THETA_BETA};
use super::blocks::LatentTensor;
use super::feed::{MemberStep, Upload};
use super::forward::{
    record_decode, record_encode_select, record_reconstruct, record_topk, Candidates,
    ForwardBuffers, GpuSae, Selection,
};
use super::params::SaeParams;

/// Slots of the small `stats` buffer the step's reductions write into.
pub mod slot {
    /// Σ‖x − x̄‖² of the batch (FVU's denominator).
    pub const VARIANCE: usize = 0;
    /// Σ‖x − x̂‖².
    pub const SSE: usize = 1;
    /// Σ‖ê − e‖² of AuxK.
    pub const AUX_SSE: usize = 2;
    /// min(n_dead / k_aux, 1).
    pub const AUX_SCALE: usize = 3;
    /// Always 1: the denominator of losses that are plain means (ReLU + L1's MSE).
    pub const UNIT: usize = 4;
    /// The factor that clips the gradient's global norm.
    pub const CLIP: usize = 5;
    /// Σ g² of each gradient tensor, in [`super::Trainer`]'s parameter order, from here on.
    pub const GRAD_SQ: usize = 6;
    /// The slots the step figures are read from.
    pub const COUNT: usize = 4;
}

/// The ReLU family (ReLU + L1, JumpReLU): SAELens' mean squared error, a penalty weighted by
/// the decoder norms, no unit-norm constraint, optional gradient-norm clipping.
struct Penalized {
    /// ‖W_dec,i‖ of every latent, as of the step's start.
    norms: GpuBuffer,
    clip: Option<f32>,
    /// The penalty on the codes (`None`: JumpReLU's step penalty, which only θ sees).
    codes: Option<CodePenalty>,
    /// JumpReLU's trained thresholds.
    jump: Option<JumpThresholds>,
}

/// JumpReLU's settings.
#[derive(Clone, Copy, Debug)]
pub struct JumpReluConfig {
    /// ε of the rectangle kernel.
    pub bandwidth: f32,
    pub penalty: L0Penalty,
    pub param: ThresholdParam,
    /// The largest global gradient norm (`None`: no clipping).
    pub clip: Option<f32>,
}

/// What an architecture adds to a trainer ([`Trainer::for_architecture`]), with the state a
/// checkpoint restores.
#[derive(Clone, Debug)]
pub struct ArchitectureSetup {
    pub architecture: Architecture,
    /// BatchTopK and Matryoshka: entries kept per row on average, and θ at the start.
    pub k: usize,
    pub theta: f32,
    /// Matryoshka: its nested widths (the full width, the main reconstruction, may end them).
    pub matryoshka_widths: Vec<usize>,
    /// The ReLU family: the largest global gradient norm (`None`: no clipping).
    pub clip: Option<f32>,
    /// JumpReLU: its settings (their `clip` is replaced by the one above) and the trained
    /// parameter at the start, one per latent.
    pub jumprelu: Option<(JumpReluConfig, Vec<f32>)>,
}

/// JumpReLU: the trained parameter (θ or log θ) behind `sae.thresholds`, and its Adam state.
struct JumpThresholds {
    config: JumpReluConfig,
    param: GpuBuffer,
    state: ParamState,
}

/// AuxK settings: `alpha` weights the auxiliary loss; latents are dead after `dead_tokens`
/// tokens without firing.
#[derive(Clone, Copy, Debug)]
pub struct AuxKConfig {
    pub alpha: f32,
    pub k_aux: usize,
}

/// Buffers of the AuxK pass.
struct AuxBuffers {
    config: AuxKConfig,
    aux_idx: GpuBuffer,
    aux_val: GpuBuffer,
    e_hat: GpuBuffer,
    aux_diff: GpuBuffer,
    zeros_rows: GpuBuffer,
    zeros_d_in: GpuBuffer,
    grad_aux: GpuBuffer,
    aux_code_grad: GpuBuffer,
    index: ReverseIndex,
    candidates: Option<Candidates>,
}

/// Per-parameter gradient and Adam moments.
struct ParamState {
    grad: GpuBuffer,
    exp_avg: GpuBuffer,
    exp_avg_sq: GpuBuffer,
}

impl ParamState {
    fn new(gpu: &Gpu, param: &GpuBuffer) -> GpuResult<Self> {
        let n = param.len;
        Ok(ParamState {
            grad: gpu.storage::<f32>(&format!("grad {}", param.label), n)?,
            exp_avg: gpu.storage::<f32>(&format!("exp_avg {}", param.label), n)?,
            exp_avg_sq: gpu.storage::<f32>(&format!("exp_avg_sq {}", param.label), n)?,
        })
    }
}

type PickState = fn(&BlockState) -> &ParamState;

/// The per-latent tensors' states within a block, in checkpoint order (W_enc, b_enc, W_dec).
const PER_BLOCK: [(LatentTensor, PickState); 3] = [
    (LatentTensor::Encoder, |b| &b.w_enc),
    (LatentTensor::Vector, |b| &b.b_enc),
    (LatentTensor::Decoder, |b| &b.w_dec),
];

/// Optimiser state of one block of latents.
struct BlockState {
    w_enc: ParamState,
    b_enc: ParamState,
    w_dec: ParamState,
}

/// Metrics copies in flight at most; a further request waits for the oldest.
const METRICS_RING: usize = 4;

/// Figures of one step, read back on request.
#[derive(Clone, Copy, Debug, Default)]
pub struct StepMetrics {
    pub fvu: f64,
    pub auxk_loss: f64,
    pub l0: f64,
    pub dead: u32,
}

/// Host copies of the optimiser and bookkeeping state, for checkpoints.
pub struct TrainerSnapshot {
    pub params: SaeParams,
    /// exp_avg and exp_avg_sq for W_enc, b_enc, W_dec, b_dec.
    pub moments: Vec<(Vec<f32>, Vec<f32>)>,
    pub since_fired: Vec<u32>,
    /// BatchTopK's inference threshold θ.
    pub theta: Option<f32>,
    /// JumpReLU's trained threshold parameter (θ, or log θ), one per latent; its Adam moments
    /// follow the others in `moments`.
    pub threshold_param: Option<Vec<f32>>,
}

/// Matryoshka: nested prefixes of the dictionary, each of which reconstructs the input too.
struct Prefixes {
    /// Widths below d_sae, increasing (the full width is the main reconstruction).
    widths: Vec<usize>,
    /// One prefix's reconstruction and the gradient of its loss, [rows, d_in].
    x_hat: GpuBuffer,
    grad: GpuBuffer,
}

/// BatchTopK: the batch keeps `k` entries per row on average from each row's candidates.
struct BatchSelection {
    k: usize,
    /// [batch threshold, θ, smallest kept, unused] (kernels::batch_topk::state).
    state: GpuBuffer,
}

pub struct Trainer<'g> {
    gpu: &'g Gpu,
    pub sae: GpuSae,
    pub fw: ForwardBuffers,
    pub batch_rows: usize,
    adam: AdamConfig,
    dead_tokens: u32,
    stats: GpuBuffer,
    col_mean: GpuBuffer,
    grad_out: GpuBuffer,
    code_grad: GpuBuffer,
    index: ReverseIndex,
    reducer: Reducer,
    /// One per block of latents, in the order of `sae.blocks`.
    blocks: Vec<BlockState>,
    b_dec: ParamState,
    /// Fires of each latent in the last batch.
    batch_fired: GpuBuffer,
    /// Fires of each latent since the last `take_fire_counts`.
    fire_window: GpuBuffer,
    since_fired: GpuBuffer,
    eligible: GpuBuffer,
    dead_count: GpuBuffer,
    aux: Option<AuxBuffers>,
    batch_selection: Option<BatchSelection>,
    prefixes: Option<Prefixes>,
    penalized: Option<Penalized>,
    metrics_ring: MetricsRing,
}

impl<'g> Trainer<'g> {
    pub fn new(
        gpu: &'g Gpu,
        params: &SaeParams,
        batch_rows: usize,
        adam: AdamConfig,
        dead_tokens: u64,
        auxk: Option<AuxKConfig>,
    ) -> GpuResult<Trainer<'g>> {
        let sae = GpuSae::upload(gpu, params, batch_rows)?;
        let fw = ForwardBuffers::new(gpu, &sae, batch_rows)?;
        let shape = BackwardShape {
            rows: batch_rows,
            d_in: sae.d_in,
            d_sae: sae.d_sae,
            k: sae.k,
        };
        let blocks = sae
            .blocks
            .iter()
            .map(|b| {
                Ok(BlockState {
                    w_enc: ParamState::new(gpu, &b.w_enc)?,
                    b_enc: ParamState::new(gpu, &b.b_enc)?,
                    w_dec: ParamState::new(gpu, &b.w_dec)?,
                })
            })
            .collect::<GpuResult<Vec<_>>>()?;
        let b_dec = ParamState::new(gpu, &sae.b_dec)?;
        let aux = match auxk {
            Some(config) if config.alpha > 0.0 => {
                let k_aux = config.k_aux.clamp(1, MAX_K.min(sae.d_sae));
                let aux_shape = BackwardShape { k: k_aux, ..shape };
                let n = batch_rows * sae.d_in;
                Some(AuxBuffers {
                    config: AuxKConfig { k_aux, ..config },
                    aux_idx: gpu.storage::<u32>("aux_idx", batch_rows * k_aux)?,
                    aux_val: gpu.storage::<f32>("aux_val", batch_rows * k_aux)?,
                    e_hat: gpu.storage::<f32>("aux_e_hat", n)?,
                    aux_diff: gpu.storage::<f32>("aux_diff", n)?,
                    zeros_rows: gpu.storage::<f32>("zeros", n)?,
                    zeros_d_in: gpu.storage::<f32>("zeros_d_in", sae.d_in)?,
                    grad_aux: gpu.storage::<f32>("grad_aux", n)?,
                    aux_code_grad: gpu.storage::<f32>("aux_code_grad", batch_rows * k_aux)?,
                    index: ReverseIndex::new(gpu, aux_shape)?,
                    candidates: Candidates::new(gpu, &sae.layout, batch_rows, k_aux)?,
                })
            }
            _ => None,
        };
        let d_sae = sae.d_sae;
        let blocks_len = sae.blocks.len();
        let trainer = Trainer {
            gpu,
            batch_rows,
            adam,
            dead_tokens: dead_tokens.min(u64::from(u32::MAX - 1)) as u32,
            // A Σg² slot per trained tensor: 3 per block, b_dec and JumpReLU's thresholds.
            stats: gpu.storage::<f32>("stats", slot::GRAD_SQ + 3 * blocks_len + 2)?,
            col_mean: gpu.storage::<f32>("col_mean", sae.d_in)?,
            grad_out: gpu.storage::<f32>("grad_x_hat", batch_rows * sae.d_in)?,
            code_grad: gpu.storage::<f32>("code_grad", batch_rows * sae.k)?,
            index: ReverseIndex::new(gpu, shape)?,
            reducer: Reducer::new(gpu)?,
            blocks,
            b_dec,
            batch_fired: gpu.storage::<u32>("batch_fired", d_sae)?,
            fire_window: gpu.storage::<u32>("fire_window", d_sae)?,
            since_fired: gpu.storage::<u32>("since_fired", d_sae)?,
            eligible: gpu.storage::<u32>("dead_latents", d_sae)?,
            dead_count: gpu.storage::<u32>("dead_count", 1)?,
            aux,
            batch_selection: None,
            prefixes: None,
            penalized: None,
            metrics_ring: MetricsRing::new(gpu, d_sae)?,
            sae,
            fw,
        };
        // Allocation failures (out of memory) are reported asynchronously: surface them here,
        // where the caller can say how much memory the run needs, not at the first step.
        gpu.wait()?;
        Ok(trainer)
    }

    /// Makes this a trainer of `setup.architecture` (a TopK trainer stays as it is): the one
    /// place the job layer and the benchmarks turn an architecture into trainer additions.
    pub fn for_architecture(self, setup: &ArchitectureSetup) -> GpuResult<Self> {
        // The full width is the main reconstruction; the trainer adds the smaller prefixes
        // (any other width is with_matryoshka's to refuse).
        let widths = &setup.matryoshka_widths;
        let prefixes = match widths.split_last() {
            Some((&last, smaller)) if last == self.sae.d_sae => smaller,
            _ => widths.as_slice(),
        };
        match setup.architecture {
            Architecture::TopK => Ok(self),
            Architecture::BatchTopK => self.with_batch_topk(setup.k, setup.theta),
            Architecture::Matryoshka => self
                .with_batch_topk(setup.k, setup.theta)?
                .with_matryoshka(prefixes),
            Architecture::Relu => self.with_l1(setup.clip),
            Architecture::JumpRelu => {
                let (config, initial) = setup.jumprelu.as_ref().ok_or_else(|| GpuError::Shape {
                    kernel: "jumprelu",
                    message: "a JumpReLU trainer without its thresholds".into(),
                })?;
                let config = JumpReluConfig {
                    clip: setup.clip,
                    ..*config
                };
                self.with_jumprelu(config, initial)
            }
        }
    }

    /// Makes this a BatchTopK trainer: the SAE's per-row selection (its `k`) gives each row's
    /// candidates, of which the batch keeps `k` per row on average; θ starts at `theta`.
    pub fn with_batch_topk(mut self, k: usize, theta: f32) -> GpuResult<Self> {
        if k == 0 || k > self.sae.k {
            return Err(GpuError::Shape {
                kernel: "batch_topk",
                message: format!(
                    "k = {k} must be between 1 and the row candidates ({})",
                    self.sae.k
                ),
            });
        }
        let mut initial = [0.0f32; batch_state::COUNT];
        initial[batch_state::THETA] = theta;
        let state = self.gpu.upload("batch_topk_state", &initial)?;
        self.batch_selection = Some(BatchSelection { k, state });
        Ok(self)
    }

    /// Makes this a Matryoshka trainer: besides the whole dictionary, each prefix of the given
    /// `widths` (increasing, below d_sae) reconstructs the input, and the loss sums the
    /// reconstructions' FVUs. The dictionary must fit one storage binding (one block).
    pub fn with_matryoshka(mut self, widths: &[usize]) -> GpuResult<Self> {
        let d_sae = self.sae.d_sae;
        let increasing = widths.windows(2).all(|w| w[0] < w[1]);
        if !increasing || widths.iter().any(|&w| w == 0 || w >= d_sae) {
            return Err(GpuError::Shape {
                kernel: "matryoshka",
                message: format!(
                    "prefix widths {widths:?} must increase and lie below d_sae = {d_sae}"
                ),
            });
        }
        if self.sae.blocks.len() > 1 {
            return Err(GpuError::Shape {
                kernel: "matryoshka",
                message: format!(
                    "a dictionary of {d_sae} latents split into {} blocks; Matryoshka training needs it in one storage binding",
                    self.sae.blocks.len()
                ),
            });
        }
        let n = self.batch_rows * self.sae.d_in;
        self.prefixes = Some(Prefixes {
            widths: widths.to_vec(),
            x_hat: self.gpu.storage::<f32>("prefix x_hat", n)?,
            grad: self.gpu.storage::<f32>("prefix grad", n)?,
        });
        Ok(self)
    }

    /// Makes this a ReLU + L1 trainer: the SAE's per-row selection (its `k`) caps the codes
    /// kept per row; the loss is SAELens' mean squared error plus the decoder-norm weighted L1
    /// penalty (its coefficient comes with each step); no unit-norm constraint; with `clip`,
    /// the gradient's global norm is clipped to it before Adam.
    pub fn with_l1(self, clip: Option<f32>) -> GpuResult<Self> {
        self.penalized(clip, Some(CodePenalty::L1), None)
    }

    /// Makes this a JumpReLU trainer: the SAE's per-row selection (its `k`) caps the codes kept
    /// per row, each latent keeping what exceeds its threshold θ; `initial` is the trained
    /// parameter (θ or log θ, per latent). The loss is SAELens' mean squared error plus the L0
    /// penalty (its coefficient comes with each step); θ learns through the straight-through
    /// estimator; no unit-norm constraint.
    pub fn with_jumprelu(mut self, config: JumpReluConfig, initial: &[f32]) -> GpuResult<Self> {
        let d_sae = self.sae.d_sae;
        let bandwidth_ok = config.bandwidth.is_finite() && config.bandwidth > 0.0;
        if initial.len() != d_sae || !bandwidth_ok {
            return Err(GpuError::Shape {
                kernel: "jumprelu",
                message: format!(
                    "{} thresholds for {d_sae} latents, bandwidth {}",
                    initial.len(),
                    config.bandwidth
                ),
            });
        }
        let param = self.gpu.upload("threshold param", initial)?;
        let thresholds = self.gpu.storage::<f32>("thresholds", d_sae)?;
        // θ from the parameter on the GPU, as every step does (a host exp could differ in the
        // last bit, and a resumed run would not be identical to an uninterrupted one).
        let log = config.param == ThresholdParam::Log;
        let mut rec = Recorder::new(self.gpu, "thresholds");
        launch_threshold_from_param(&mut rec, &param, &thresholds, log)?;
        rec.submit()?;
        self.sae.thresholds = Some(thresholds);
        let jump = JumpThresholds {
            config,
            state: ParamState::new(self.gpu, &param)?,
            param,
        };
        let codes = match config.penalty {
            L0Penalty::Step => None,
            L0Penalty::Tanh => Some(CodePenalty::Tanh { scale: TANH_SCALE }),
        };
        self.penalized(config.clip, codes, Some(jump))
    }

    fn penalized(
        mut self,
        clip: Option<f32>,
        codes: Option<CodePenalty>,
        jump: Option<JumpThresholds>,
    ) -> GpuResult<Self> {
        let mut unit = vec![0.0f32; self.stats.len];
        unit[slot::UNIT] = 1.0;
        self.gpu.write(&self.stats, &unit)?;
        self.penalized = Some(Penalized {
            norms: self.gpu.storage::<f32>("decoder norms", self.sae.d_sae)?,
            clip,
            codes,
            jump,
        });
        Ok(self)
    }

    /// JumpReLU's thresholds θ (waits for the GPU); `None` for other architectures.
    pub fn thresholds(&self) -> GpuResult<Option<Vec<f32>>> {
        match (&self.sae.thresholds, self.jump()) {
            (Some(thresholds), Some(_)) => Ok(Some(self.gpu.read(thresholds)?)),
            _ => Ok(None),
        }
    }

    fn jump(&self) -> Option<&JumpThresholds> {
        self.penalized.as_ref().and_then(|p| p.jump.as_ref())
    }

    /// BatchTopK's inference threshold θ (waits for the GPU); `None` for TopK.
    pub fn theta(&self) -> GpuResult<Option<f32>> {
        match &self.batch_selection {
            None => Ok(None),
            Some(batch) => {
                let state: Vec<f32> = self.gpu.read(&batch.state)?;
                Ok(Some(state[batch_state::THETA]))
            }
        }
    }

    fn shape(&self) -> BackwardShape {
        BackwardShape {
            rows: self.batch_rows,
            d_in: self.sae.d_in,
            d_sae: self.sae.d_sae,
            k: self.sae.k,
        }
    }

    /// Records one step on an uploaded batch into `rec` (a [`Feed`](super::feed::Feed)
    /// submits it, with the other trainers' steps on the same batch): the batch widened and
    /// divided by `args.scale` into this trainer's input, the step, and with
    /// `args.with_metrics` a copy of its figures. Returns the metrics slot to map once
    /// submitted ([`Trainer::submitted`]).
    pub fn record_batch_step(
        &mut self,
        rec: &mut Recorder<'_>,
        upload: Upload<'_>,
        args: MemberStep,
    ) -> GpuResult<Option<usize>> {
        if upload.rows != self.batch_rows {
            return Err(GpuError::Shape {
                kernel: "train step",
                message: format!(
                    "a batch of {} rows for a trainer of {}",
                    upload.rows, self.batch_rows
                ),
            });
        }
        let metrics_slot = if args.with_metrics {
            Some(self.metrics_ring.acquire(self.gpu, args.step)?)
        } else {
            None
        };
        rec.stage("input");
        launch_widen(
            rec,
            upload.raw,
            upload.dtype,
            args.scale,
            &self.fw.x,
            upload.rows * self.sae.d_in,
        )?;
        self.record_step(rec, args.lr, args.step, args.penalty as f32)?;
        if let Some(slot) = metrics_slot {
            self.metrics_ring.record_copy(rec, slot, self)?;
        }
        Ok(metrics_slot)
    }

    /// Called once the step recorded by [`Trainer::record_batch_step`] is submitted.
    pub fn submitted(&mut self, metrics_slot: Option<usize>) {
        if let Some(slot) = metrics_slot {
            self.metrics_ring.map(slot);
        }
    }

    /// Records one optimiser step on the batch in `self.fw.x`; `penalty` is the sparsity
    /// coefficient of this step (ReLU + L1's and JumpReLU's λ; ignored by the TopK family).
    pub fn record_step(
        &self,
        rec: &mut Recorder<'_>,
        lr: f64,
        step: u64,
        penalty: f32,
    ) -> GpuResult<()> {
        let s = self.shape();
        let (sae, fw) = (&self.sae, &self.fw);
        // Dead latents as of before this step (AuxK's candidates).
        rec.stage("other");
        launch_dead_mask(
            rec,
            &self.since_fired,
            &self.eligible,
            &self.dead_count,
            s.d_sae,
            self.dead_tokens,
        )?;
        self.reducer.launch_centered_sq(
            rec,
            &fw.x,
            s.rows,
            s.d_in,
            &self.col_mean,
            &self.stats,
            slot::VARIANCE,
        )?;
        record_encode_select(rec, sae, fw, s.rows)?;
        if let Some(batch) = &self.batch_selection {
            launch_batch_topk(
                rec,
                &fw.top_val,
                s.entries(),
                batch.k * s.rows,
                THETA_BETA,
                &batch.state,
            )?;
        }
        record_reconstruct(rec, sae, fw, s.rows)?;
        rec.stage("backward");
        self.reducer.launch_sum_sq_diff(
            rec,
            &fw.x_hat,
            &fw.x,
            s.rows * s.d_in,
            &self.stats,
            slot::SSE,
        )?;

        // Backward of FVU; for the ReLU family, of SAELens' mean over the rows of ‖x − x̂‖²,
        // with the decoder norms its penalty weighs the codes by.
        let reconstruction = match &self.penalized {
            None => LossScale::fvu(slot::VARIANCE),
            Some(penalized) => {
                for block in &sae.blocks {
                    launch_row_norms(rec, &block.w_dec, block.range, s.d_in, &penalized.norms)?;
                }
                LossScale {
                    constant: 2.0 / s.rows as f32,
                    variance_slot: slot::UNIT,
                    factor_slot: None,
                }
            }
        };
        launch_loss_grad(
            rec,
            &fw.x_hat,
            &fw.x,
            &self.stats,
            reconstruction,
            &self.grad_out,
            s,
        )?;
        let main = Entries {
            top_idx: &fw.top_idx,
            top_val: &fw.top_val,
            grad_out: &self.grad_out,
            code_grad: &self.code_grad,
            index: &self.index,
        };
        let coeff = penalty / s.rows as f32;
        let codes = self
            .penalized
            .as_ref()
            .and_then(|p| p.codes.map(|codes| (&p.norms, codes, coeff)));
        self.record_weight_grads(rec, &main, false, self.prefixes.as_ref(), codes)?;
        if let (Some(penalized), Some(jump), Some(thresholds)) =
            (&self.penalized, self.jump(), &sae.thresholds)
        {
            let args = ThresholdGrad {
                rows: s.rows,
                d_in: s.d_in,
                bandwidth: jump.config.bandwidth,
                tanh_scale: (jump.config.penalty == L0Penalty::Tanh).then_some(TANH_SCALE),
                coeff,
                log_param: jump.config.param == ThresholdParam::Log,
            };
            for (block, h) in sae.blocks.iter().zip(&fw.h) {
                let buffers = ThresholdGradBuffers {
                    pre: h,
                    grad_out: &self.grad_out,
                    w_dec: &block.w_dec,
                    norms: &penalized.norms,
                    thresholds,
                    grad_param: &jump.state.grad,
                };
                launch_threshold_grad(rec, buffers, block.range, args)?;
            }
        }

        if let Some(aux) = &self.aux {
            let k_aux = aux.config.k_aux;
            launch_aux_scale(rec, &self.dead_count, &self.stats, slot::AUX_SCALE, k_aux)?;
            let selection = Selection {
                k: k_aux,
                idx: &aux.aux_idx,
                val: &aux.aux_val,
            };
            record_topk(
                rec,
                sae,
                &fw.h,
                s.rows,
                selection,
                Some(&self.eligible),
                aux.candidates.as_ref(),
            )?;
            record_decode(
                rec,
                sae,
                &aux.aux_idx,
                &aux.aux_val,
                k_aux,
                &aux.zeros_d_in,
                &aux.e_hat,
                s.rows,
            )?;
            rec.stage("backward");
            launch_aux_residual(rec, &aux.e_hat, &fw.x, &fw.x_hat, &aux.aux_diff, s)?;
            self.reducer.launch_sum_sq(
                rec,
                &aux.aux_diff,
                s.rows * s.d_in,
                &self.stats,
                slot::AUX_SSE,
            )?;
            let scale = LossScale {
                constant: 2.0 * aux.config.alpha,
                variance_slot: slot::VARIANCE,
                factor_slot: Some(slot::AUX_SCALE),
            };
            launch_loss_grad(
                rec,
                &aux.aux_diff,
                &aux.zeros_rows,
                &self.stats,
                scale,
                &aux.grad_aux,
                s,
            )?;
            let entries = Entries {
                top_idx: &aux.aux_idx,
                top_val: &aux.aux_val,
                grad_out: &aux.grad_aux,
                code_grad: &aux.aux_code_grad,
                index: &aux.index,
            };
            self.record_weight_grads(rec, &entries, true, None, None)?;
        }
        for (block, st) in sae.blocks.iter().zip(&self.blocks) {
            launch_bias_dec_grad_block(
                rec,
                &self.grad_out,
                &block.w_enc,
                &st.b_enc.grad,
                block.range,
                &self.b_dec.grad,
                s,
            )?;
        }

        // Optimiser: unit-norm decoder constraint around Adam (not for the ReLU family, whose
        // penalty weighs each latent by its decoder norm instead).
        rec.stage("optimiser");
        if self.penalized.is_none() {
            for (block, st) in sae.blocks.iter().zip(&self.blocks) {
                let n = block.range.len;
                launch_remove_parallel_grad(rec, &block.w_dec, &st.w_dec.grad, n, s.d_in)?;
            }
        }
        if let Some(clip) = self.penalized.as_ref().and_then(|p| p.clip) {
            let states = self.param_states();
            for (i, st) in states.iter().enumerate() {
                self.reducer.launch_sum_sq(
                    rec,
                    &st.grad,
                    st.grad.len,
                    &self.stats,
                    slot::GRAD_SQ + i,
                )?;
            }
            launch_clip_factor(
                rec,
                &self.stats,
                slot::GRAD_SQ,
                states.len(),
                slot::CLIP,
                clip,
            )?;
            for st in &states {
                launch_scale_by_slot(rec, &st.grad, st.grad.len, &self.stats, slot::CLIP)?;
            }
        }
        let params = sae
            .tensors()
            .into_iter()
            .chain(self.jump().map(|j| &j.param));
        for (param, st) in params.zip(self.param_states()) {
            launch_adam(
                rec,
                param,
                &st.grad,
                &st.exp_avg,
                &st.exp_avg_sq,
                &self.adam,
                lr,
                step,
            )?;
        }
        if self.penalized.is_none() {
            for block in &sae.blocks {
                launch_normalize_rows(rec, &block.w_dec, block.range.len, s.d_in)?;
            }
        }
        if let (Some(jump), Some(thresholds)) = (self.jump(), &sae.thresholds) {
            let log = jump.config.param == ThresholdParam::Log;
            launch_threshold_from_param(rec, &jump.param, thresholds, log)?;
        }

        // Bookkeeping: which latents fired.
        rec.stage("other");
        rec.clear(&self.batch_fired);
        launch_fire_counts(
            rec,
            &fw.top_idx,
            &fw.top_val,
            s.entries(),
            &self.batch_fired,
        )?;
        launch_fire_counts(
            rec,
            &fw.top_idx,
            &fw.top_val,
            s.entries(),
            &self.fire_window,
        )?;
        launch_update_dead(rec, &self.batch_fired, &self.since_fired, s.d_sae, s.rows)?;
        Ok(())
    }

    /// Parameter states in the order of [`GpuSae::tensors`], then JumpReLU's thresholds.
    fn param_states(&self) -> Vec<&ParamState> {
        self.blocks
            .iter()
            .flat_map(|b| [&b.w_enc, &b.b_enc, &b.w_dec])
            .chain([&self.b_dec])
            .chain(self.jump().map(|j| &j.state))
            .collect()
    }

    /// Gradients of W_dec, W_enc and b_enc from one set of chosen entries (the main TopK, or
    /// AuxK's on top of it with `accumulate`), block by block. With Matryoshka `prefixes`,
    /// each prefix's reconstruction loss adds to the gradients of its latents' codes and
    /// decoder rows, and to `entries.grad_out` (so b_dec sees every loss). With `codes` (the
    /// decoder norms, the penalty and λ / rows), the penalty's gradients join the codes' and
    /// the decoder rows'.
    fn record_weight_grads(
        &self,
        rec: &mut Recorder<'_>,
        entries: &Entries<'_>,
        accumulate: bool,
        prefixes: Option<&Prefixes>,
        codes: Option<(&GpuBuffer, CodePenalty, f32)>,
    ) -> GpuResult<()> {
        let shape = entries.index.shape;
        for block in &self.sae.blocks {
            launch_code_grad_block(
                rec,
                entries.grad_out,
                entries.top_idx,
                entries.top_val,
                &block.w_dec,
                block.range,
                entries.code_grad,
                shape,
                false,
            )?;
        }
        launch_reverse_index(rec, entries.top_idx, entries.index)?;
        for (block, st) in self.sae.blocks.iter().zip(&self.blocks) {
            launch_decoder_weight_grad_block(
                rec,
                entries.index,
                entries.top_val,
                entries.grad_out,
                &st.w_dec.grad,
                block.range,
                accumulate,
            )?;
        }
        if let Some((norms, penalty, coeff)) = codes {
            for (block, st) in self.sae.blocks.iter().zip(&self.blocks) {
                launch_penalty_code_grad(
                    rec,
                    entries.top_idx,
                    entries.top_val,
                    norms,
                    block.range,
                    shape.entries(),
                    penalty,
                    coeff,
                    entries.code_grad,
                )?;
                launch_penalty_decoder_grad(
                    rec,
                    entries.index,
                    entries.top_val,
                    &block.w_dec,
                    norms,
                    block.range,
                    penalty,
                    coeff,
                    &st.w_dec.grad,
                )?;
            }
        }
        if let (Some(prefixes), Some(block), Some(st)) =
            (prefixes, self.sae.blocks.first(), self.blocks.first())
        {
            let s = self.shape();
            let fvu = LossScale::fvu(slot::VARIANCE);
            for &width in &prefixes.widths {
                // The prefix is the first `width` latents of the one block: its rows start
                // the block's buffers, so the kernels take it as a block of its own.
                let prefix = LatentRange {
                    start: 0,
                    len: width,
                };
                rec.stage("matryoshka");
                launch_decode_sparse_block(
                    rec,
                    entries.top_idx,
                    entries.top_val,
                    &block.w_dec,
                    prefix,
                    &self.sae.b_dec,
                    &prefixes.x_hat,
                    s.rows,
                    s.d_in,
                    shape.k,
                )?;
                launch_loss_grad(
                    rec,
                    &prefixes.x_hat,
                    &self.fw.x,
                    &self.stats,
                    fvu,
                    &prefixes.grad,
                    s,
                )?;
                launch_code_grad_block(
                    rec,
                    &prefixes.grad,
                    entries.top_idx,
                    entries.top_val,
                    &block.w_dec,
                    prefix,
                    entries.code_grad,
                    shape,
                    true,
                )?;
                launch_decoder_weight_grad_block(
                    rec,
                    entries.index,
                    entries.top_val,
                    &prefixes.grad,
                    &st.w_dec.grad,
                    prefix,
                    true,
                )?;
                launch_loss_grad_into(
                    rec,
                    &prefixes.x_hat,
                    &self.fw.x,
                    &self.stats,
                    fvu,
                    entries.grad_out,
                    s,
                    true,
                )?;
            }
            rec.stage("backward");
        }
        for (block, st) in self.sae.blocks.iter().zip(&self.blocks) {
            launch_encoder_weight_grad_block(
                rec,
                entries.index,
                entries.code_grad,
                &self.fw.x,
                &self.sae.b_dec,
                (&st.w_enc.grad, &st.b_enc.grad),
                block.range,
                accumulate,
            )?;
        }
        Ok(())
    }

    /// Reads the last step's loss figures (waits for the GPU).
    pub fn metrics(&self) -> GpuResult<StepMetrics> {
        let stats: Vec<f32> = self.gpu.read(&self.stats)?;
        let fired: Vec<u32> = self.gpu.read(&self.batch_fired)?;
        let dead: Vec<u32> = self.gpu.read(&self.dead_count)?;
        Ok(self.metrics_from(&stats, &fired, dead.first().copied().unwrap_or(0)))
    }

    /// The step figures from the `stats` slots, the batch's fire counts and the dead count.
    fn metrics_from(&self, stats: &[f32], fired: &[u32], dead: u32) -> StepMetrics {
        let variance = f64::from(stats[slot::VARIANCE]).max(f64::MIN_POSITIVE);
        let auxk_loss = if self.aux.is_some() {
            f64::from(stats[slot::AUX_SCALE]) * f64::from(stats[slot::AUX_SSE]) / variance
        } else {
            0.0
        };
        StepMetrics {
            fvu: f64::from(stats[slot::SSE]) / variance,
            auxk_loss,
            l0: fired.iter().map(|&c| f64::from(c)).sum::<f64>() / self.batch_rows as f64,
            dead,
        }
    }

    /// Metrics of earlier [`Trainer::step_batch`] calls that asked for them, in step order:
    /// those the GPU has finished, or (with `wait`) all of them.
    pub fn ready_metrics(&mut self, wait: bool) -> GpuResult<Vec<(u64, StepMetrics)>> {
        let poll = if wait {
            wgpu::PollType::wait_indefinitely()
        } else {
            wgpu::PollType::Poll
        };
        if !self.metrics_ring.pending.is_empty() {
            self.gpu
                .device
                .poll(poll)
                .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
        }
        self.gpu.take_error()?;
        let mut out = Vec::new();
        while let Some((step, stats, fired, dead)) = self.metrics_ring.next_ready()? {
            out.push((step, self.metrics_from(&stats, &fired, dead)));
        }
        Ok(out)
    }

    /// Fire counts since the last call (then zeroed on the GPU).
    pub fn take_fire_counts(&self) -> GpuResult<Vec<u32>> {
        let counts: Vec<u32> = self.gpu.read(&self.fire_window)?;
        let mut rec = Recorder::new(self.gpu, "reset fire window");
        rec.clear(&self.fire_window);
        rec.submit()?;
        Ok(counts)
    }

    /// Tokens since each latent last fired.
    pub fn since_fired(&self) -> GpuResult<Vec<u32>> {
        self.gpu.read(&self.since_fired)
    }

    pub fn snapshot(&self) -> GpuResult<TrainerSnapshot> {
        let gpu = self.gpu;
        let layout = &self.sae.layout;
        let joined = |tensor, pick: PickState| -> GpuResult<_> {
            let mut avg = Vec::new();
            let mut avg_sq = Vec::new();
            for st in &self.blocks {
                avg.push(gpu.read(&pick(st).exp_avg)?);
                avg_sq.push(gpu.read(&pick(st).exp_avg_sq)?);
            }
            Ok((layout.join(tensor, &avg), layout.join(tensor, &avg_sq)))
        };
        let [w_enc, b_enc, w_dec] = PER_BLOCK;
        let mut moments = vec![
            joined(w_enc.0, w_enc.1)?,
            joined(b_enc.0, b_enc.1)?,
            joined(w_dec.0, w_dec.1)?,
            (
                gpu.read(&self.b_dec.exp_avg)?,
                gpu.read(&self.b_dec.exp_avg_sq)?,
            ),
        ];
        let threshold_param = match self.jump() {
            Some(jump) => {
                moments.push((
                    gpu.read(&jump.state.exp_avg)?,
                    gpu.read(&jump.state.exp_avg_sq)?,
                ));
                Some(gpu.read(&jump.param)?)
            }
            None => None,
        };
        Ok(TrainerSnapshot {
            params: self.sae.download(gpu)?,
            moments,
            since_fired: gpu.read(&self.since_fired)?,
            theta: self.theta()?,
            threshold_param,
        })
    }

    /// The gradients of the last step (waits for the GPU), in checkpoint order (W_enc, b_enc,
    /// W_dec, b_dec, then JumpReLU's threshold parameter); W_dec's with the component along
    /// each row removed, as the unit-norm constraint leaves it for Adam. For gradient checks.
    pub fn gradients(&self) -> GpuResult<Vec<Vec<f32>>> {
        let gpu = self.gpu;
        let layout = &self.sae.layout;
        let mut out = Vec::with_capacity(4);
        for (tensor, pick) in PER_BLOCK {
            let parts = self
                .blocks
                .iter()
                .map(|st| gpu.read(&pick(st).grad))
                .collect::<GpuResult<Vec<Vec<f32>>>>()?;
            out.push(layout.join(tensor, &parts));
        }
        out.push(gpu.read(&self.b_dec.grad)?);
        if let Some(jump) = self.jump() {
            out.push(gpu.read(&jump.state.grad)?);
        }
        Ok(out)
    }

    /// Restores optimiser moments (W_enc, b_enc, W_dec, b_dec, then JumpReLU's thresholds) and
    /// dead-latent counters (weights come in through `new`, thresholds through
    /// `with_jumprelu`).
    pub fn restore(&self, moments: &[(Vec<f32>, Vec<f32>)], since_fired: &[u32]) -> GpuResult<()> {
        let gpu = self.gpu;
        let layout = &self.sae.layout;
        for ((tensor, pick), (m, v)) in PER_BLOCK.into_iter().zip(moments) {
            let parts = layout.split(tensor, m).into_iter();
            let parts_sq = layout.split(tensor, v).into_iter();
            for ((st, m), v) in self.blocks.iter().zip(parts).zip(parts_sq) {
                gpu.write(&pick(st).exp_avg, &m)?;
                gpu.write(&pick(st).exp_avg_sq, &v)?;
            }
        }
        if let Some((m, v)) = moments.get(3) {
            gpu.write(&self.b_dec.exp_avg, m)?;
            gpu.write(&self.b_dec.exp_avg_sq, v)?;
        }
        if let (Some((m, v)), Some(jump)) = (moments.get(4), self.jump()) {
            gpu.write(&jump.state.exp_avg, m)?;
            gpu.write(&jump.state.exp_avg_sq, v)?;
        }
        gpu.write(&self.since_fired, since_fired)
    }
}

/// The chosen entries of one selection and the buffers their backward pass uses.
struct Entries<'a> {
    top_idx: &'a GpuBuffer,
    top_val: &'a GpuBuffer,
    grad_out: &'a GpuBuffer,
    code_grad: &'a GpuBuffer,
    index: &'a ReverseIndex,
}

/// Host-mapped copies of a step's `stats`, dead count and fire counts, read a few steps later.
struct MetricsRing {
    slots: Vec<MetricsSlot>,
    /// Slots holding a requested copy, in step order.
    pending: VecDeque<usize>,
    /// Copies read early (when every slot was taken), not yet handed out.
    done: VecDeque<RingRead>,
    d_sae: usize,
}

/// A metrics copy read back: (step, stats, fire counts, dead count).
type RingRead = (u64, Vec<f32>, Vec<u32>, u32);

struct MetricsSlot {
    buffer: TrackedBuffer,
    step: u64,
    /// 0: free or copying, 1: mapped, 2: mapping failed.
    state: Arc<AtomicU8>,
}

/// Byte offsets in a slot: stats (16 bytes), dead count, fire counts.
const DEAD_AT: u64 = 16;
const FIRED_AT: u64 = 32;

impl MetricsRing {
    fn new(gpu: &Gpu, d_sae: usize) -> GpuResult<MetricsRing> {
        let size = FIRED_AT + (4 * d_sae as u64).div_ceil(16) * 16;
        let slots = (0..METRICS_RING)
            .map(|i| {
                let (buffer, live) = gpu.create_buffer(&wgpu::BufferDescriptor {
                    label: Some(&format!("metrics ring {i}")),
                    size,
                    usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                MetricsSlot {
                    buffer: TrackedBuffer::new(buffer, live),
                    step: 0,
                    state: Arc::new(AtomicU8::new(0)),
                }
            })
            .collect();
        Ok(MetricsRing {
            slots,
            pending: VecDeque::new(),
            done: VecDeque::new(),
            d_sae,
        })
    }

    /// A free slot for `step`'s metrics; waits for the oldest copy when all are in use.
    fn acquire(&mut self, gpu: &Gpu, step: u64) -> GpuResult<usize> {
        let free = (0..self.slots.len()).find(|i| !self.pending.contains(i));
        let slot = match free {
            Some(slot) => slot,
            None => {
                // Every slot holds an unread copy: wait for the oldest and keep its figures
                // for the next ready_metrics.
                gpu.device
                    .poll(wgpu::PollType::wait_indefinitely())
                    .map_err(|e| GpuError::DeviceLost(e.to_string()))?;
                let oldest = self.pending.front().copied().unwrap_or(0);
                if let Some(read) = self.take_ready()? {
                    self.done.push_back(read);
                }
                oldest
            }
        };
        self.slots[slot].step = step;
        self.slots[slot].state.store(0, Ordering::Release);
        Ok(slot)
    }

    /// Records the copies of the trainer's step figures into `slot`.
    fn record_copy(
        &self,
        rec: &mut Recorder<'_>,
        slot: usize,
        trainer: &Trainer<'_>,
    ) -> GpuResult<()> {
        let target = &self.slots[slot].buffer;
        rec.copy_range(&trainer.stats.buffer, target, 0, 16);
        rec.copy_range(&trainer.dead_count.buffer, target, DEAD_AT, 16);
        let fired_bytes = (4 * self.d_sae as u64).div_ceil(16) * 16;
        rec.copy_range(&trainer.batch_fired.buffer, target, FIRED_AT, fired_bytes);
        Ok(())
    }

    /// Asks for `slot` to be mapped once its submission is done.
    fn map(&mut self, slot: usize) {
        let state = self.slots[slot].state.clone();
        self.slots[slot]
            .buffer
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |result| {
                state.store(if result.is_ok() { 1 } else { 2 }, Ordering::Release);
            });
        self.pending.push_back(slot);
    }

    /// The oldest copy read early, or the oldest pending one once it is mapped.
    fn next_ready(&mut self) -> GpuResult<Option<RingRead>> {
        match self.done.pop_front() {
            Some(read) => Ok(Some(read)),
            None => self.take_ready(),
        }
    }

    /// The oldest pending copy, when it is mapped.
    fn take_ready(&mut self) -> GpuResult<Option<RingRead>> {
        let Some(&slot) = self.pending.front() else {
            return Ok(None);
        };
        let entry = &self.slots[slot];
        match entry.state.load(Ordering::Acquire) {
            0 => return Ok(None),
            1 => {}
            _ => {
                self.pending.pop_front();
                return Err(GpuError::Map {
                    label: "metrics ring".into(),
                    message: "mapping the step metrics failed".into(),
                });
            }
        }
        let view = entry
            .buffer
            .slice(..)
            .get_mapped_range()
            .map_err(|e| GpuError::Map {
                label: "metrics ring".into(),
                message: e.to_string(),
            })?;
        let stats: Vec<f32> = bytemuck::pod_collect_to_vec(&view[..16]);
        let dead = u32::from_le_bytes([view[16], view[17], view[18], view[19]]);
        let fired_end = FIRED_AT as usize + 4 * self.d_sae;
        let fired: Vec<u32> = bytemuck::pod_collect_to_vec(&view[FIRED_AT as usize..fired_end]);
        drop(view);
        entry.buffer.unmap();
        let step = entry.step;
        self.pending.pop_front();
        Ok(Some((step, stats, fired, dead)))
    }
}
