//! One streaming pass over shards through an SAE, serving every analysis: each batch is read
//! in the background, written to the GPU, encoded, selected and (when a consumer asks) decoded,
//! with what each consumer records after the forward pass in the same submission; then each
//! consumer takes what it needs from the batch on the host. `sae eval`, `encode`, `hist`, the
//! passes of `sae categories`, the held-out evaluation of `sae train` and the attribution pass
//! of `sae attribute` (over a component cache's batches) are sets of [`Consumer`]s, not loops
//! of their own.

use crate::data::{Batch, DataError};
use crate::gpu::{GpuResult, Recorder};
use crate::sae::forward::{ForwardBuffers, GpuSae};
use crate::sae::pass::{ForwardPass, PassDepth};

/// What one batch of a scan is, as its consumers see it.
pub struct Scanned<'a> {
    /// The batch as read (tokens, origin of each row).
    pub batch: &'a Batch,
    /// The rows as the SAE saw them (divided by the scan's input scale), [rows, d_in].
    pub x: &'a [f32],
    /// A paired stream's targets (divided by the target scale), [rows, d_out].
    pub y: Option<&'a [f32]>,
    pub rows: usize,
}

/// The factors a scan divides inputs and targets by (a run's activation normalisation).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Scales {
    pub input: f32,
    pub target: f32,
}

impl Scales {
    /// The data as stored.
    pub const NONE: Scales = Scales {
        input: 1.0,
        target: 1.0,
    };
}

/// `values` divided by `scale`, borrowed as they are when it is 1.
fn scaled<'a>(values: &'a [f32], scale: f32, buffer: &'a mut Vec<f32>) -> &'a [f32] {
    if scale == 1.0 {
        return values;
    }
    *buffer = values.iter().map(|v| v / scale).collect();
    buffer
}

/// Something computed from every batch of a scan.
pub trait Consumer {
    /// Whether it needs the reconstructions (otherwise the pass stops at the codes).
    fn needs_reconstruction(&self) -> bool {
        false
    }

    /// GPU work recorded after the batch's forward pass, in the same submission.
    fn record(
        &mut self,
        _rec: &mut Recorder<'_>,
        _fw: &ForwardBuffers,
        _batch: &Scanned<'_>,
    ) -> GpuResult<()> {
        Ok(())
    }

    /// Host work on the batch once its submission is made (reads wait for the GPU).
    fn consume(&mut self, pass: &ForwardPass<'_, '_>, batch: &Scanned<'_>) -> anyhow::Result<()>;
}

/// A forward pass built once, for every batch of every stream it is given.
pub struct Scan<'g, 's> {
    pub pass: ForwardPass<'g, 's>,
}

impl<'g, 's> Scan<'g, 's> {
    /// A scan of batches of up to `batch_rows` rows; `reconstruct` decodes too.
    pub fn new(
        gpu: &'g crate::gpu::Gpu,
        sae: &'s GpuSae,
        batch_rows: usize,
        reconstruct: bool,
    ) -> GpuResult<Self> {
        let depth = if reconstruct {
            PassDepth::Reconstruct
        } else {
            PassDepth::Codes
        };
        Ok(Scan {
            pass: ForwardPass::new(gpu, sae, batch_rows, depth)?,
        })
    }

    /// A scan deep enough for every one of `consumers`.
    pub fn for_consumers(
        gpu: &'g crate::gpu::Gpu,
        sae: &'s GpuSae,
        batch_rows: usize,
        consumers: &[&mut dyn Consumer],
    ) -> GpuResult<Self> {
        let reconstruct = consumers.iter().any(|c| c.needs_reconstruction());
        Scan::new(gpu, sae, batch_rows, reconstruct)
    }

    /// Runs every batch of `stream` (inputs and targets divided by `scales`) through the SAE
    /// and hands it to each consumer in turn; `on_rows` sees each batch's rows. Returns the
    /// rows.
    pub fn run(
        &self,
        stream: impl Iterator<Item = Result<Batch, DataError>>,
        scales: Scales,
        consumers: &mut [&mut dyn Consumer],
        mut on_rows: impl FnMut(u64),
    ) -> anyhow::Result<u64> {
        let mut rows = 0u64;
        let (mut x_buffer, mut y_buffer) = (Vec::new(), Vec::new());
        for batch in stream {
            let batch = batch?;
            let x = scaled(&batch.x, scales.input, &mut x_buffer);
            let y = match batch.y.is_empty() {
                true => None,
                false => Some(scaled(&batch.y, scales.target, &mut y_buffer)),
            };
            let scanned = Scanned {
                batch: &batch,
                x,
                y,
                rows: batch.rows,
            };
            self.pass.run(x, batch.rows, |rec, fw| {
                consumers
                    .iter_mut()
                    .try_for_each(|c| c.record(rec, fw, &scanned))
            })?;
            for consumer in consumers.iter_mut() {
                consumer.consume(&self.pass, &scanned)?;
            }
            rows += batch.rows as u64;
            on_rows(batch.rows as u64);
        }
        Ok(rows)
    }
}
