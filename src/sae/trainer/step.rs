//! One optimiser step, recorded into a caller's recorder: the batch widened into the
//! trainer's input, forward, loss, the backward pass through the kept entries (no float
//! atomics), AuxK, Adam with the unit-norm decoder, and dead-latent bookkeeping. The
//! architecture's hooks (super::hooks) are called at fixed points; the order of the launches
//! is the computation, so it never depends on anything else.

use crate::gpu::kernels::backward::{
    launch_aux_residual, launch_bias_dec_grad_block, launch_code_grad_block,
    launch_decoder_weight_grad_block, launch_encoder_weight_grad_block, launch_loss_grad,
    launch_reverse_index, BackwardShape, LossScale,
};
use crate::gpu::kernels::decoder::DecodeBase;
use crate::gpu::kernels::optim::{launch_adam, launch_normalize_rows, launch_remove_parallel_grad};
use crate::gpu::kernels::penalty::{launch_clip_factor, launch_scale_by_slot};
use crate::gpu::kernels::reduce::{
    launch_aux_scale, launch_dead_mask, launch_fire_counts, launch_update_dead,
};
use crate::gpu::kernels::skip::launch_skip_weight_grad;
use crate::gpu::kernels::widen::{launch_widen, UploadDtype};
use crate::gpu::{GpuBuffer, GpuError, GpuResult, Recorder};
use crate::sae::forward::{
    record_decode, record_encode_select, record_reconstruct, record_topk, Selection,
};

use super::gpu_state::Trainer;
use super::hooks::{Entries, StepContext};
use super::metrics::MetricsSource;
use super::state::{slot, ParamState};

/// What one trainer does with a batch.
#[derive(Clone, Copy, Debug)]
pub struct MemberStep {
    /// The factor inputs are divided by (1 when not scaling).
    pub scale: f32,
    /// The factor a transcoder's targets are divided by.
    pub target_scale: f32,
    pub lr: f64,
    /// Adam steps from 1.
    pub step: u64,
    /// Copy the step's figures for [`Trainer::ready_metrics`].
    pub with_metrics: bool,
    /// The sparsity coefficient of this step (ReLU + L1's λ after warmup; 0 for the TopK
    /// family, which ignores it).
    pub penalty: f64,
}

/// A batch as uploaded: which buffer (and a transcoder's targets'), how stored, how many rows.
#[derive(Clone, Copy)]
pub struct Upload<'a> {
    pub raw: &'a GpuBuffer,
    pub target: Option<&'a GpuBuffer>,
    pub dtype: UploadDtype,
    pub rows: usize,
}

impl<'g> Trainer<'g> {
    /// Records one step on an uploaded batch into `rec` (a [`super::Feed`] submits it, with
    /// the other trainers' steps on the same batch): the batch widened and divided by
    /// `args.scale` into this trainer's input, the step, and with `args.with_metrics` a copy
    /// of its figures. Returns the metrics slot to map once submitted
    /// ([`Trainer::submitted`]).
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
        let n = upload.rows * self.sae.d_in;
        launch_widen(rec, upload.raw, upload.dtype, args.scale, &self.fw.x, n)?;
        if let Some(y) = &self.fw.y {
            let raw = upload.target.ok_or_else(|| GpuError::Shape {
                kernel: "train step",
                message: "a transcoder's step needs the batch's targets".into(),
            })?;
            let n = upload.rows * self.sae.d_out;
            launch_widen(rec, raw, upload.dtype, args.target_scale, y, n)?;
        }
        self.record_step(rec, args.lr, args.step, args.penalty as f32)?;
        if let Some(slot) = metrics_slot {
            let source = MetricsSource {
                stats: &self.stats,
                dead_count: &self.dead_count,
                batch_fired: &self.batch_fired,
            };
            self.metrics_ring.record_copy(rec, slot, source)?;
        }
        Ok(metrics_slot)
    }

    /// Called once the step recorded by [`Trainer::record_batch_step`] is submitted.
    pub fn submitted(&mut self, metrics_slot: Option<usize>) {
        if let Some(slot) = metrics_slot {
            self.metrics_ring.map(slot);
        }
    }

    pub(super) fn shape(&self) -> BackwardShape {
        BackwardShape {
            rows: self.batch_rows,
            d_in: self.sae.d_in,
            d_out: self.sae.d_out,
            d_sae: self.sae.d_sae,
            k: self.sae.k,
        }
    }

    fn context(&self, penalty: f32) -> StepContext<'_> {
        StepContext {
            sae: &self.sae,
            fw: &self.fw,
            shape: self.shape(),
            stats: &self.stats,
            grad_out: &self.grad_out,
            blocks: &self.blocks,
            coeff: penalty / self.batch_rows as f32,
        }
    }

    /// Records one optimiser step on the batch in `self.fw.x`; `penalty` is the sparsity
    /// coefficient of this step (ignored by architectures without a penalty).
    pub fn record_step(
        &self,
        rec: &mut Recorder<'_>,
        lr: f64,
        step: u64,
        penalty: f32,
    ) -> GpuResult<()> {
        let ctx = self.context(penalty);
        self.record_forward(rec, &ctx)?;
        self.record_backward(rec, &ctx)?;
        self.record_optimiser(rec, lr, step)?;
        self.record_bookkeeping(rec)
    }

    /// The dead latents as of before this step, the batch's variance, and the forward pass
    /// (the architecture's selection included) with its squared error.
    fn record_forward(&self, rec: &mut Recorder<'_>, ctx: &StepContext<'_>) -> GpuResult<()> {
        let s = ctx.shape;
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
            self.fw.target(),
            s.rows,
            s.d_out,
            &self.col_mean,
            &self.stats,
            slot::VARIANCE,
        )?;
        record_encode_select(rec, &self.sae, &self.fw, s.rows)?;
        self.hooks.select(rec, ctx)?;
        record_reconstruct(rec, &self.sae, &self.fw, s.rows)?;
        rec.stage("backward");
        self.reducer.launch_sum_sq_diff(
            rec,
            &self.fw.x_hat,
            self.fw.target(),
            s.rows * s.d_out,
            &self.stats,
            slot::SSE,
        )
    }

    /// Every gradient: the reconstruction loss through the kept entries (with the
    /// architecture's additions), AuxK's, and b_dec's.
    fn record_backward(&self, rec: &mut Recorder<'_>, ctx: &StepContext<'_>) -> GpuResult<()> {
        let s = ctx.shape;
        let scale = self.hooks.reconstruction_loss(rec, ctx)?;
        let fw = &self.fw;
        launch_loss_grad(
            rec,
            &fw.x_hat,
            fw.target(),
            &self.stats,
            scale,
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
        self.record_weight_grads(rec, &main, false, Some(ctx))?;
        self.hooks.own_grads(rec, ctx)?;
        self.record_auxk(rec)?;
        let centred = self.sae.transcoder.is_none();
        for (block, st) in self.sae.blocks.iter().zip(&self.blocks) {
            launch_bias_dec_grad_block(
                rec,
                &self.grad_out,
                &block.w_enc,
                &st.b_enc.grad,
                block.range,
                &self.b_dec.grad,
                s,
                centred,
            )?;
        }
        if let Some(skip) = &self.skip {
            let g = &self.grad_out;
            launch_skip_weight_grad(rec, &fw.x, g, &skip.grad, s.rows, s.d_in, s.d_out, false)?;
        }
        Ok(())
    }

    /// AuxK: the dead latents' top pre-activations decode the residual of the main
    /// reconstruction; their gradients add to the main ones.
    fn record_auxk(&self, rec: &mut Recorder<'_>) -> GpuResult<()> {
        let Some(aux) = &self.aux else {
            return Ok(());
        };
        let (s, sae, fw) = (self.shape(), &self.sae, &self.fw);
        let k_aux = aux.config.k_aux;
        launch_aux_scale(rec, &self.dead_count, &self.stats, slot::AUX_SCALE, k_aux)?;
        let selection = Selection {
            k: k_aux,
            idx: &aux.aux_idx,
            val: &aux.aux_val,
        };
        let eligible = Some(&self.eligible);
        let candidates = aux.candidates.as_ref();
        record_topk(rec, sae, &fw.h, s.rows, selection, eligible, candidates)?;
        let (idx, val) = (&aux.aux_idx, &aux.aux_val);
        record_decode(
            rec,
            sae,
            idx,
            val,
            k_aux,
            DecodeBase::Bias(&aux.zeros_d_out),
            &aux.e_hat,
            s.rows,
        )?;
        rec.stage("backward");
        launch_aux_residual(rec, &aux.e_hat, fw.target(), &fw.x_hat, &aux.aux_diff, s)?;
        let n = s.rows * s.d_out;
        let stats = &self.stats;
        self.reducer
            .launch_sum_sq(rec, &aux.aux_diff, n, stats, slot::AUX_SSE)?;
        let scale = LossScale {
            constant: 2.0 * aux.config.alpha,
            variance_slot: slot::VARIANCE,
            factor_slot: Some(slot::AUX_SCALE),
        };
        let (diff, zeros, grad) = (&aux.aux_diff, &aux.zeros_rows, &aux.grad_aux);
        launch_loss_grad(rec, diff, zeros, stats, scale, grad, s)?;
        let entries = Entries {
            top_idx: &aux.aux_idx,
            top_val: &aux.aux_val,
            grad_out: &aux.grad_aux,
            code_grad: &aux.aux_code_grad,
            index: &aux.index,
        };
        self.record_weight_grads(rec, &entries, true, None)
    }

    /// Gradients of W_dec, W_enc and b_enc from one set of kept entries (the main selection,
    /// or AuxK's on top of it with `accumulate`), block by block. With `hooks` (the main
    /// selection), the architecture adds to the codes' and decoder rows' gradients before the
    /// encoder's are formed.
    fn record_weight_grads(
        &self,
        rec: &mut Recorder<'_>,
        entries: &Entries<'_>,
        accumulate: bool,
        hooks: Option<&StepContext<'_>>,
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
        if let Some(ctx) = hooks {
            self.hooks.code_grads(rec, ctx, entries)?;
        }
        for (block, st) in self.sae.blocks.iter().zip(&self.blocks) {
            launch_encoder_weight_grad_block(
                rec,
                entries.index,
                entries.code_grad,
                &self.fw.x,
                self.sae.centre(),
                (&st.w_enc.grad, &st.b_enc.grad),
                block.range,
                accumulate,
            )?;
        }
        Ok(())
    }

    /// The unit-norm constraint around Adam (unless the architecture drops it), clipping, Adam
    /// on every trained tensor, then the architecture's own update.
    fn record_optimiser(&self, rec: &mut Recorder<'_>, lr: f64, step: u64) -> GpuResult<()> {
        let (sae, d_out) = (&self.sae, self.sae.d_out);
        let unit_norm = self.unit_norm_decoder();
        rec.stage("optimiser");
        if unit_norm {
            for (block, st) in sae.blocks.iter().zip(&self.blocks) {
                let n = block.range.len;
                launch_remove_parallel_grad(rec, &block.w_dec, &st.w_dec.grad, n, d_out)?;
            }
        }
        if let Some(clip) = self.hooks.clip() {
            self.record_clip(rec, clip)?;
        }
        let own = self.hooks.own_param().map(|(param, _)| param);
        let params = sae.tensors().into_iter().chain(own);
        for (param, st) in params.zip(self.param_states()) {
            let (m, v) = (&st.exp_avg, &st.exp_avg_sq);
            launch_adam(rec, param, &st.grad, m, v, &self.adam, lr, step)?;
        }
        if unit_norm {
            for block in &sae.blocks {
                launch_normalize_rows(rec, &block.w_dec, block.range.len, d_out)?;
            }
        }
        sae.record_pack_weights(rec)?;
        self.hooks.after_optimiser(rec, sae)
    }

    /// Scales every gradient so that their global norm is at most `clip`.
    fn record_clip(&self, rec: &mut Recorder<'_>, clip: f32) -> GpuResult<()> {
        let states = self.param_states();
        for (i, st) in states.iter().enumerate() {
            let (grad, n) = (&st.grad, st.grad.len);
            self.reducer
                .launch_sum_sq(rec, grad, n, &self.stats, slot::GRAD_SQ + i)?;
        }
        let count = states.len();
        launch_clip_factor(rec, &self.stats, slot::GRAD_SQ, count, slot::CLIP, clip)?;
        for st in &states {
            launch_scale_by_slot(rec, &st.grad, st.grad.len, &self.stats, slot::CLIP)?;
        }
        Ok(())
    }

    /// Which latents fired: this batch's counts, the window since the last checkpoint, and
    /// the tokens since each last fired.
    fn record_bookkeeping(&self, rec: &mut Recorder<'_>) -> GpuResult<()> {
        let s = self.shape();
        let (idx, val) = (&self.fw.top_idx, &self.fw.top_val);
        rec.stage("other");
        rec.clear(&self.batch_fired);
        launch_fire_counts(rec, idx, val, s.entries(), &self.batch_fired)?;
        launch_fire_counts(rec, idx, val, s.entries(), &self.fire_window)?;
        launch_update_dead(rec, &self.batch_fired, &self.since_fired, s.d_sae, s.rows)
    }

    /// Parameter states in the order of [`crate::sae::GpuSae::tensors`] (W_skipᵀ last), then
    /// the architecture's own parameter.
    pub(super) fn param_states(&self) -> Vec<&ParamState> {
        self.blocks
            .iter()
            .flat_map(|b| [&b.w_enc, &b.b_enc, &b.w_dec])
            .chain([&self.b_dec])
            .chain(self.skip.as_ref())
            .chain(self.hooks.own_param().map(|(_, state)| state))
            .collect()
    }

    /// Whether W_dec's rows are kept at unit norm: as the architecture says for an SAE; never
    /// for a transcoder (sparsify's rule: its decoder writes another activation, whose scale
    /// the rows carry).
    pub(super) fn unit_norm_decoder(&self) -> bool {
        self.hooks.unit_norm_decoder() && self.sae.transcoder.is_none()
    }
}
