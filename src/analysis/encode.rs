//! Sparse codes of every row: each batch's kept latents (ids and values, [rows, k]) handed to
//! a [`CodeSink`] with the rows' tokens, and the activations a capped SAE dropped.

use super::scan::{Consumer, Scanned};
use crate::sae::pass::ForwardPass;

/// Where the codes of a scan go, in row order.
pub trait CodeSink {
    /// The codes of rows `first_row..first_row + tokens.len()` ([rows, k] each); `tokens` is
    /// empty when the shard has none.
    fn codes(
        &mut self,
        first_row: usize,
        idx: &[u32],
        val: &[f32],
        tokens: &[i32],
    ) -> anyhow::Result<()>;
}

/// The codes of every batch into a sink.
pub struct EncodeConsumer<'a> {
    sink: &'a mut dyn CodeSink,
    /// Latents kept per row (the cap of thresholded SAEs).
    k: usize,
    /// Rows encoded so far.
    pub rows: usize,
    /// Thresholded SAEs: non-zero latents beyond the cap, left out of the codes.
    pub dropped: Option<u64>,
}

impl<'a> EncodeConsumer<'a> {
    /// `thresholded`: the SAE keeps what exceeds its thresholds, up to `k` per row.
    pub fn new(sink: &'a mut dyn CodeSink, k: usize, thresholded: bool) -> Self {
        EncodeConsumer {
            sink,
            k,
            rows: 0,
            dropped: thresholded.then_some(0),
        }
    }
}

impl Consumer for EncodeConsumer<'_> {
    fn consume(&mut self, pass: &ForwardPass<'_, '_>, batch: &Scanned<'_>) -> anyhow::Result<()> {
        let (idx, val) = pass.codes(batch.rows)?;
        if let (Some(total), Some(counts)) =
            (self.dropped.as_mut(), pass.active_counts(batch.rows)?)
        {
            *total += counts
                .iter()
                .map(|&a| u64::from(a).saturating_sub(self.k as u64))
                .sum::<u64>();
        }
        self.sink
            .codes(self.rows, &idx, &val, &batch.batch.tokens)?;
        self.rows += batch.rows;
        Ok(())
    }
}
