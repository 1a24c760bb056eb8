//! The trainer: the SAE on the GPU, the forward buffers, every gradient and Adam moment, the
//! dead-latent bookkeeping, and the architecture's hooks; snapshots for checkpoints.

use crate::gpu::kernels::backward::{BackwardShape, ReverseIndex};
use crate::gpu::kernels::optim::AdamConfig;
use crate::gpu::kernels::reduce::Reducer;
use crate::gpu::{Gpu, GpuBuffer, GpuError, GpuResult, Matmul, Recorder};

use crate::sae::forward::{transpose, ForwardBuffers, GpuSae};
use crate::sae::params::{Activation, SaeParams};

use super::auxk::{AuxK, AuxKConfig};
use super::hooks::{StepHooks, TopKStep};
use super::metrics::{MetricsRing, StepMetrics};
use super::state::{slot, BlockState, ParamState, PickState, PER_BLOCK};

/// Host copies of the optimiser and bookkeeping state, for checkpoints.
pub struct TrainerSnapshot {
    pub params: SaeParams,
    /// exp_avg and exp_avg_sq for W_enc, b_enc, W_dec, b_dec, then the architecture's own
    /// parameter.
    pub moments: Vec<(Vec<f32>, Vec<f32>)>,
    pub since_fired: Vec<u32>,
    /// BatchTopK's inference threshold θ.
    pub theta: Option<f32>,
    /// JumpReLU's trained threshold parameter (θ, or log θ), one per latent; its Adam moments
    /// follow the others in `moments`.
    pub threshold_param: Option<Vec<f32>>,
    /// A skip-transcoder's W_skip moments, in W_skip's layout [d_out, d_in] (the weights are
    /// in `params`).
    pub skip_moments: Option<(Vec<f32>, Vec<f32>)>,
}

pub struct Trainer<'g> {
    pub(super) gpu: &'g Gpu,
    pub sae: GpuSae,
    pub fw: ForwardBuffers,
    pub batch_rows: usize,
    pub(super) adam: AdamConfig,
    pub(super) dead_tokens: u32,
    pub(super) stats: GpuBuffer,
    pub(super) col_mean: GpuBuffer,
    pub(super) grad_out: GpuBuffer,
    pub(super) code_grad: GpuBuffer,
    pub(super) index: ReverseIndex,
    pub(super) reducer: Reducer,
    /// One per block of latents, in the order of `sae.blocks`.
    pub(super) blocks: Vec<BlockState>,
    pub(super) b_dec: ParamState,
    /// A skip-transcoder's W_skipᵀ state.
    pub(super) skip: Option<ParamState>,
    /// Fires of each latent in the last batch.
    pub(super) batch_fired: GpuBuffer,
    /// Fires of each latent since the last `take_fire_counts`.
    pub(super) fire_window: GpuBuffer,
    pub(super) since_fired: GpuBuffer,
    pub(super) eligible: GpuBuffer,
    pub(super) dead_count: GpuBuffer,
    pub(super) aux: Option<AuxK>,
    pub(super) hooks: Box<dyn StepHooks>,
    pub(super) metrics_ring: MetricsRing,
}

impl<'g> Trainer<'g> {
    /// A TopK trainer of `params` on batches of `batch_rows` rows; an architecture changes it
    /// with [`Trainer::with_hooks`].
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
            d_out: sae.d_out,
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
        let d_sae = sae.d_sae;
        let trainer = Trainer {
            gpu,
            batch_rows,
            adam,
            dead_tokens: dead_tokens.min(u64::from(u32::MAX - 1)) as u32,
            // A Σg² slot per trained tensor: 3 per block, b_dec, W_skip and an architecture's
            // own.
            stats: gpu.storage::<f32>("stats", slot::GRAD_SQ + 3 * blocks.len() + 3)?,
            col_mean: gpu.storage::<f32>("col_mean", sae.d_out)?,
            grad_out: gpu.storage::<f32>("grad_x_hat", batch_rows * sae.d_out)?,
            code_grad: gpu.storage::<f32>("code_grad", batch_rows * sae.k)?,
            index: ReverseIndex::new(gpu, shape)?,
            reducer: Reducer::new(gpu)?,
            blocks,
            b_dec: ParamState::new(gpu, &sae.b_dec)?,
            skip: match sae.skip_t() {
                Some(w) => Some(ParamState::new(gpu, w)?),
                None => None,
            },
            batch_fired: gpu.storage::<u32>("batch_fired", d_sae)?,
            fire_window: gpu.storage::<u32>("fire_window", d_sae)?,
            since_fired: gpu.storage::<u32>("since_fired", d_sae)?,
            eligible: gpu.storage::<u32>("dead_latents", d_sae)?,
            dead_count: gpu.storage::<u32>("dead_count", 1)?,
            aux: AuxK::new(gpu, &sae, shape, auxk)?,
            hooks: Box::new(TopKStep),
            metrics_ring: MetricsRing::new(gpu, d_sae)?,
            sae,
            fw,
        };
        // Allocation failures (out of memory) are reported asynchronously: surface them here,
        // where the caller can say how much memory the run needs, not at the first step.
        gpu.wait()?;
        Ok(trainer)
    }

    /// Runs the encoder GEMM as `matmul` says (f16 on the matrix units: W_enc's f16 copy is
    /// refreshed after every optimiser step).
    pub fn with_matmul(mut self, matmul: Matmul) -> GpuResult<Self> {
        self.sae.set_matmul(self.gpu, matmul)?;
        self.fw.follow_matmul(self.gpu, &self.sae)?;
        Ok(self)
    }

    /// Makes this a trainer of the architecture whose step additions are `hooks`.
    pub fn with_hooks(mut self, hooks: impl StepHooks + 'static) -> Self {
        self.hooks = Box::new(hooks);
        self
    }

    pub fn gpu(&self) -> &'g Gpu {
        self.gpu
    }

    /// The step's reductions ([`slot`]); an architecture may seed its own slots.
    pub fn stats(&self) -> &GpuBuffer {
        &self.stats
    }

    /// BatchTopK's inference threshold θ (waits for the GPU); `None` for other architectures.
    pub fn theta(&self) -> GpuResult<Option<f32>> {
        self.hooks.theta(self.gpu)
    }

    /// The per-latent thresholds the architecture trains (JumpReLU's θ; waits for the GPU).
    pub fn thresholds(&self) -> GpuResult<Option<Vec<f32>>> {
        match (&self.sae.thresholds, self.hooks.own_param()) {
            (Some(thresholds), Some(_)) => Ok(Some(self.gpu.read(thresholds)?)),
            _ => Ok(None),
        }
    }

    /// The activation the trained SAE is used and exported with, when it is not the one it
    /// trains with (waits for the GPU).
    pub fn inference_activation(&self) -> GpuResult<Option<Activation>> {
        self.hooks.inference_activation(self.gpu, &self.sae)
    }

    /// The trained SAE as it is used and exported (for BatchTopK, JumpReLU with θ for every
    /// latent; for TopK, the SAE itself), on the trainer's input scale. Waits for the GPU.
    pub fn inference_params(&self) -> GpuResult<SaeParams> {
        let mut params = self.sae.download(self.gpu)?;
        if let Some(activation) = self.inference_activation()? {
            params.activation = activation;
        }
        Ok(params)
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

    /// Metrics of earlier steps that asked for them, in step order: those the GPU has
    /// finished, or (with `wait`) all of them.
    pub fn ready_metrics(&mut self, wait: bool) -> GpuResult<Vec<(u64, StepMetrics)>> {
        let poll = if wait {
            wgpu::PollType::wait_indefinitely()
        } else {
            wgpu::PollType::Poll
        };
        if self.metrics_ring.has_pending() {
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

    /// Host copies of every trained tensor, its moments and the bookkeeping (waits).
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
        let mut moments = Vec::with_capacity(5);
        for (tensor, pick) in PER_BLOCK {
            moments.push(joined(tensor, pick)?);
        }
        let b_dec = &self.b_dec;
        moments.push((gpu.read(&b_dec.exp_avg)?, gpu.read(&b_dec.exp_avg_sq)?));
        let threshold_param = match self.hooks.own_param() {
            Some((param, state)) => {
                moments.push((gpu.read(&state.exp_avg)?, gpu.read(&state.exp_avg_sq)?));
                Some(gpu.read(param)?)
            }
            None => None,
        };
        let (d_in, d_out) = (self.sae.d_in, self.sae.d_out);
        let skip_moments = match &self.skip {
            Some(st) => Some((
                transpose(&gpu.read(&st.exp_avg)?, d_in, d_out),
                transpose(&gpu.read(&st.exp_avg_sq)?, d_in, d_out),
            )),
            None => None,
        };
        Ok(TrainerSnapshot {
            params: self.sae.download(gpu)?,
            moments,
            since_fired: gpu.read(&self.since_fired)?,
            theta: self.theta()?,
            threshold_param,
            skip_moments,
        })
    }

    /// The gradients of the last step (waits for the GPU), in checkpoint order (W_enc, b_enc,
    /// W_dec, b_dec, then the architecture's own parameter, then W_skip's in its layout
    /// [d_out, d_in]); W_dec's with the component along each row removed, as the unit-norm
    /// constraint leaves it for Adam. For gradient checks.
    pub fn gradients(&self) -> GpuResult<Vec<Vec<f32>>> {
        let gpu = self.gpu;
        let layout = &self.sae.layout;
        let mut out = Vec::with_capacity(5);
        for (tensor, pick) in PER_BLOCK {
            let parts = self
                .blocks
                .iter()
                .map(|st| gpu.read(&pick(st).grad))
                .collect::<GpuResult<Vec<Vec<f32>>>>()?;
            out.push(layout.join(tensor, &parts));
        }
        out.push(gpu.read(&self.b_dec.grad)?);
        if let Some((_, state)) = self.hooks.own_param() {
            out.push(gpu.read(&state.grad)?);
        }
        if let Some(st) = &self.skip {
            out.push(transpose(
                &gpu.read(&st.grad)?,
                self.sae.d_in,
                self.sae.d_out,
            ));
        }
        Ok(out)
    }

    /// Restores optimiser moments (W_enc, b_enc, W_dec, b_dec, then the architecture's own
    /// parameter) and dead-latent counters; weights come in through `new`, an architecture's
    /// own state through its hooks.
    pub fn restore(
        &self,
        moments: &[(Vec<f32>, Vec<f32>)],
        since_fired: &[u32],
        skip_moments: Option<&(Vec<f32>, Vec<f32>)>,
    ) -> GpuResult<()> {
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
        if let (Some((m, v)), Some((_, state))) = (moments.get(4), self.hooks.own_param()) {
            gpu.write(&state.exp_avg, m)?;
            gpu.write(&state.exp_avg_sq, v)?;
        }
        if let (Some((m, v)), Some(st)) = (skip_moments, &self.skip) {
            let (d_in, d_out) = (self.sae.d_in, self.sae.d_out);
            gpu.write(&st.exp_avg, &transpose(m, d_out, d_in))?;
            gpu.write(&st.exp_avg_sq, &transpose(v, d_out, d_in))?;
        }
        gpu.write(&self.since_fired, since_fired)
    }
}
