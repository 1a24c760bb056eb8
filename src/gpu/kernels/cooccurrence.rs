//! Chunk co-occurrence counts for `sae categories`: per-chunk presence bitsets of firing
//! features, then chunk counts for a list of feature pairs and for every feature.

use super::{check_len, dim};
use crate::gpu::error::{ensure, GpuResult};
use crate::gpu::params::CooccurrenceParams;
use crate::gpu::{GpuBuffer, PipelineKey, Recorder, Shader};

const WG: u32 = 64;

/// The shape of one batch's co-occurrence work.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkShape {
    /// Rows in this batch; the batch starts at a chunk boundary.
    pub rows: usize,
    /// Entries per row of the sparse codes.
    pub k: usize,
    pub chunk_rows: usize,
    pub d_sae: usize,
}

impl ChunkShape {
    /// Chunks this batch touches (the last may be partial).
    pub fn chunks(&self) -> usize {
        self.rows.div_ceil(self.chunk_rows.max(1))
    }

    /// u32 words in one chunk's bitset.
    pub fn words(&self) -> usize {
        self.d_sae.div_ceil(32)
    }

    /// Length of the presence buffer for a batch of `rows` rows.
    pub fn presence_len(&self) -> usize {
        self.chunks() * self.words()
    }
}

fn key(entry: &'static str) -> PipelineKey {
    PipelineKey::new(Shader::Cooccurrence, entry).define("WG", WG)
}

fn params(
    kernel: &'static str,
    s: ChunkShape,
    pairs: usize,
    fires_above: f32,
) -> GpuResult<CooccurrenceParams> {
    ensure(s.chunk_rows >= 1, kernel, || {
        "chunk_rows must be at least 1".into()
    })?;
    Ok(CooccurrenceParams {
        rows: dim(kernel, "rows", s.rows)?,
        k: dim(kernel, "k", s.k)?,
        chunk_rows: dim(kernel, "chunk_rows", s.chunk_rows)?,
        chunks: dim(kernel, "chunks", s.chunks())?,
        words: dim(kernel, "bitset words", s.words())?,
        d_sae: dim(kernel, "d_sae", s.d_sae)?,
        pairs: dim(kernel, "pairs", pairs)?,
        fires_above,
    })
}

/// Sets bit `feature` of chunk `row / chunk_rows` in `presence` ([chunks, words] u32, cleared
/// by the caller) for every entry of `top_idx`/`top_val` ([rows, k]) above `fires_above`.
pub fn launch_mark_presence(
    rec: &mut Recorder<'_>,
    shape: ChunkShape,
    top_idx: &GpuBuffer,
    top_val: &GpuBuffer,
    fires_above: f32,
    presence: &GpuBuffer,
) -> GpuResult<()> {
    let entries = shape.rows * shape.k;
    check_len("mark_presence", top_idx, entries)?;
    check_len("mark_presence", top_val, entries)?;
    check_len("mark_presence", presence, shape.presence_len())?;
    dim("mark_presence", "entries", entries)?;
    let params = params("mark_presence", shape, 0, fires_above)?;
    let grid = rec.threads_grid(entries, WG);
    rec.launch(
        &key("mark_presence"),
        &params,
        &[(1, top_idx), (2, top_val), (3, presence)],
        grid,
    )
}

/// `pair_chunks[e] +=` the chunks of this batch where both features of pair e
/// (`pair_features` [pairs, 2] u32) fire, and `feature_chunks[f] +=` those where feature f
/// fires (not cleared here: the counts run over the whole pass).
pub fn launch_count_chunks(
    rec: &mut Recorder<'_>,
    shape: ChunkShape,
    presence: &GpuBuffer,
    pair_features: &GpuBuffer,
    pairs: usize,
    pair_chunks: &GpuBuffer,
    feature_chunks: &GpuBuffer,
) -> GpuResult<()> {
    check_len("count_chunks", presence, shape.presence_len())?;
    check_len("count_chunks", pair_features, 2 * pairs)?;
    check_len("count_chunks", pair_chunks, pairs)?;
    check_len("count_chunks", feature_chunks, shape.d_sae)?;
    let params = params("count_chunks", shape, pairs, 0.0)?;
    if pairs > 0 {
        let grid = rec.threads_grid(pairs, WG);
        rec.launch(
            &key("count_pairs"),
            &params,
            &[(3, presence), (4, pair_features), (5, pair_chunks)],
            grid,
        )?;
    }
    let grid = rec.threads_grid(shape.d_sae, WG);
    rec.launch(
        &key("count_features"),
        &params,
        &[(3, presence), (6, feature_chunks)],
        grid,
    )
}
