//! One training step of a TopK SAE, recorded as a single GPU submission: forward, FVU loss,
//! backward without float atomics, optional AuxK, Adam and the unit-norm decoder constraint,
//! then dead-latent bookkeeping. Nothing is read back except on request.

use crate::gpu::kernels::backward::{
    launch_aux_residual, launch_bias_dec_grad, launch_code_grad, launch_decoder_weight_grad,
    launch_encoder_weight_grad, launch_loss_grad, launch_reverse_index, BackwardShape, LossScale,
    ReverseIndex,
};
use crate::gpu::kernels::decoder::launch_decode_sparse;
use crate::gpu::kernels::optim::{
    launch_adam, launch_normalize_rows, launch_remove_parallel_grad, AdamConfig,
};
use crate::gpu::kernels::reduce::{
    launch_aux_scale, launch_dead_mask, launch_fire_counts, launch_update_dead, Reducer,
};
use crate::gpu::kernels::topk::{launch_topk, MAX_K};
use crate::gpu::{Gpu, GpuBuffer, GpuResult, Recorder};

use super::forward::{record_forward, ForwardBuffers, GpuSae};
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
    pub const COUNT: usize = 4;
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
}

/// Per-parameter gradient and Adam moments.
struct ParamState {
    grad: GpuBuffer,
    exp_avg: GpuBuffer,
    exp_avg_sq: GpuBuffer,
}

/// Figures of the last step, read back on request.
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
    state: [ParamState; 4],
    /// Fires of each latent in the last batch.
    batch_fired: GpuBuffer,
    /// Fires of each latent since the last `take_fire_counts`.
    fire_window: GpuBuffer,
    since_fired: GpuBuffer,
    eligible: GpuBuffer,
    dead_count: GpuBuffer,
    aux: Option<AuxBuffers>,
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
        let sae = GpuSae::upload(gpu, params)?;
        let fw = ForwardBuffers::new(gpu, &sae, batch_rows)?;
        let shape = BackwardShape {
            rows: batch_rows,
            d_in: sae.d_in,
            d_sae: sae.d_sae,
            k: sae.k,
        };
        let param_state = |buffer: &GpuBuffer| -> GpuResult<ParamState> {
            let n = buffer.len;
            Ok(ParamState {
                grad: gpu.storage::<f32>(&format!("grad {}", buffer.label), n)?,
                exp_avg: gpu.storage::<f32>(&format!("exp_avg {}", buffer.label), n)?,
                exp_avg_sq: gpu.storage::<f32>(&format!("exp_avg_sq {}", buffer.label), n)?,
            })
        };
        let state = [
            param_state(&sae.w_enc)?,
            param_state(&sae.b_enc)?,
            param_state(&sae.w_dec)?,
            param_state(&sae.b_dec)?,
        ];
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
                })
            }
            _ => None,
        };
        let d_sae = sae.d_sae;
        Ok(Trainer {
            gpu,
            batch_rows,
            adam,
            dead_tokens: dead_tokens.min(u64::from(u32::MAX - 1)) as u32,
            stats: gpu.storage::<f32>("stats", slot::COUNT)?,
            col_mean: gpu.storage::<f32>("col_mean", sae.d_in)?,
            grad_out: gpu.storage::<f32>("grad_x_hat", batch_rows * sae.d_in)?,
            code_grad: gpu.storage::<f32>("code_grad", batch_rows * sae.k)?,
            index: ReverseIndex::new(gpu, shape)?,
            reducer: Reducer::new(gpu)?,
            state,
            batch_fired: gpu.storage::<u32>("batch_fired", d_sae)?,
            fire_window: gpu.storage::<u32>("fire_window", d_sae)?,
            since_fired: gpu.storage::<u32>("since_fired", d_sae)?,
            eligible: gpu.storage::<u32>("dead_latents", d_sae)?,
            dead_count: gpu.storage::<u32>("dead_count", 1)?,
            aux,
            sae,
            fw,
        })
    }

    fn shape(&self) -> BackwardShape {
        BackwardShape {
            rows: self.batch_rows,
            d_in: self.sae.d_in,
            d_sae: self.sae.d_sae,
            k: self.sae.k,
        }
    }

    /// Uploads `x` (exactly `batch_rows` rows) and records and submits one optimiser step with
    /// learning rate `lr`; `step` counts Adam steps from 1.
    pub fn step(&mut self, x: &[f32], lr: f64, step: u64) -> GpuResult<()> {
        let gpu = self.gpu;
        let s = self.shape();
        self.gpu.write(&self.fw.x, x)?;
        let mut rec = Recorder::new(gpu, "train step");
        let (sae, fw) = (&self.sae, &self.fw);

        // Dead latents as of before this step (AuxK's candidates).
        launch_dead_mask(
            &mut rec,
            &self.since_fired,
            &self.eligible,
            &self.dead_count,
            s.d_sae,
            self.dead_tokens,
        )?;
        self.reducer.launch_centered_sq(
            &mut rec,
            &fw.x,
            s.rows,
            s.d_in,
            &self.col_mean,
            &self.stats,
            slot::VARIANCE,
        )?;
        record_forward(&mut rec, sae, fw, s.rows)?;
        self.reducer.launch_sum_sq_diff(
            &mut rec,
            &fw.x_hat,
            &fw.x,
            s.rows * s.d_in,
            &self.stats,
            slot::SSE,
        )?;

        // Backward of FVU.
        let [st_w_enc, st_b_enc, st_w_dec, st_b_dec] = &self.state;
        launch_loss_grad(
            &mut rec,
            &fw.x_hat,
            &fw.x,
            &self.stats,
            LossScale::fvu(slot::VARIANCE),
            &self.grad_out,
            s,
        )?;
        launch_code_grad(
            &mut rec,
            &self.grad_out,
            &fw.top_idx,
            &fw.top_val,
            &sae.w_dec,
            &self.code_grad,
            s,
        )?;
        launch_reverse_index(&mut rec, &fw.top_idx, &self.index)?;
        launch_decoder_weight_grad(
            &mut rec,
            &self.index,
            &fw.top_val,
            &self.grad_out,
            &st_w_dec.grad,
            false,
        )?;
        launch_encoder_weight_grad(
            &mut rec,
            &self.index,
            &self.code_grad,
            &fw.x,
            &sae.b_dec,
            &st_w_enc.grad,
            &st_b_enc.grad,
            false,
        )?;

        if let Some(aux) = &self.aux {
            let k_aux = aux.config.k_aux;
            let aux_shape = BackwardShape { k: k_aux, ..s };
            launch_aux_scale(
                &mut rec,
                &self.dead_count,
                &self.stats,
                slot::AUX_SCALE,
                k_aux,
            )?;
            launch_topk(
                &mut rec,
                &fw.h,
                s.rows,
                s.d_sae,
                k_aux,
                &aux.aux_idx,
                &aux.aux_val,
                Some(&self.eligible),
            )?;
            launch_decode_sparse(
                &mut rec,
                &aux.aux_idx,
                &aux.aux_val,
                &sae.w_dec,
                &aux.zeros_d_in,
                &aux.e_hat,
                s.rows,
                s.d_in,
                s.d_sae,
                k_aux,
            )?;
            launch_aux_residual(&mut rec, &aux.e_hat, &fw.x, &fw.x_hat, &aux.aux_diff, s)?;
            self.reducer.launch_sum_sq(
                &mut rec,
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
                &mut rec,
                &aux.aux_diff,
                &aux.zeros_rows,
                &self.stats,
                scale,
                &aux.grad_aux,
                s,
            )?;
            launch_code_grad(
                &mut rec,
                &aux.grad_aux,
                &aux.aux_idx,
                &aux.aux_val,
                &sae.w_dec,
                &aux.aux_code_grad,
                aux_shape,
            )?;
            launch_reverse_index(&mut rec, &aux.aux_idx, &aux.index)?;
            launch_decoder_weight_grad(
                &mut rec,
                &aux.index,
                &aux.aux_val,
                &aux.grad_aux,
                &st_w_dec.grad,
                true,
            )?;
            launch_encoder_weight_grad(
                &mut rec,
                &aux.index,
                &aux.aux_code_grad,
                &fw.x,
                &sae.b_dec,
                &st_w_enc.grad,
                &st_b_enc.grad,
                true,
            )?;
        }
        launch_bias_dec_grad(
            &mut rec,
            &self.grad_out,
            &sae.w_enc,
            &st_b_enc.grad,
            &st_b_dec.grad,
            s,
        )?;

        // Optimiser: unit-norm decoder constraint around Adam.
        launch_remove_parallel_grad(&mut rec, &sae.w_dec, &st_w_dec.grad, s.d_sae, s.d_in)?;
        for (param, st) in sae.tensors().into_iter().zip(&self.state) {
            launch_adam(
                &mut rec,
                param,
                &st.grad,
                &st.exp_avg,
                &st.exp_avg_sq,
                &self.adam,
                lr,
                step,
            )?;
        }
        launch_normalize_rows(&mut rec, &sae.w_dec, s.d_sae, s.d_in)?;

        // Bookkeeping: which latents fired.
        rec.clear(&self.batch_fired);
        launch_fire_counts(
            &mut rec,
            &fw.top_idx,
            &fw.top_val,
            s.entries(),
            &self.batch_fired,
        )?;
        launch_fire_counts(
            &mut rec,
            &fw.top_idx,
            &fw.top_val,
            s.entries(),
            &self.fire_window,
        )?;
        launch_update_dead(
            &mut rec,
            &self.batch_fired,
            &self.since_fired,
            s.d_sae,
            s.rows,
        )?;
        rec.submit()
    }

    /// Reads the last step's loss figures (waits for the GPU).
    pub fn metrics(&self) -> GpuResult<StepMetrics> {
        let stats: Vec<f32> = self.gpu.read(&self.stats)?;
        let fired: Vec<u32> = self.gpu.read(&self.batch_fired)?;
        let dead: Vec<u32> = self.gpu.read(&self.dead_count)?;
        let variance = f64::from(stats[slot::VARIANCE]).max(f64::MIN_POSITIVE);
        let auxk_loss = if self.aux.is_some() {
            f64::from(stats[slot::AUX_SCALE]) * f64::from(stats[slot::AUX_SSE]) / variance
        } else {
            0.0
        };
        Ok(StepMetrics {
            fvu: f64::from(stats[slot::SSE]) / variance,
            auxk_loss,
            l0: fired.iter().map(|&c| f64::from(c)).sum::<f64>() / self.batch_rows as f64,
            dead: dead.first().copied().unwrap_or(0),
        })
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
        let moments = self
            .state
            .iter()
            .map(|st| Ok((self.gpu.read(&st.exp_avg)?, self.gpu.read(&st.exp_avg_sq)?)))
            .collect::<GpuResult<Vec<_>>>()?;
        Ok(TrainerSnapshot {
            params: self.sae.download(self.gpu)?,
            moments,
            since_fired: self.gpu.read(&self.since_fired)?,
        })
    }

    /// Restores optimiser moments and dead-latent counters (weights come in through `new`).
    pub fn restore(&self, moments: &[(Vec<f32>, Vec<f32>)], since_fired: &[u32]) -> GpuResult<()> {
        for (st, (m, v)) in self.state.iter().zip(moments) {
            self.gpu.write(&st.exp_avg, m)?;
            self.gpu.write(&st.exp_avg_sq, v)?;
        }
        self.gpu.write(&self.since_fired, since_fired)
    }
}
