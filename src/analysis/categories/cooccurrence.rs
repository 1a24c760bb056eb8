//! Co-occurrence affinities (Li, Michaud, Tegmark et al. 2024, "The Geometry of Concepts"):
//! two features are related when they fire in the same chunks of consecutive rows (a chunk of
//! 256 tokens is roughly a passage of text). Counted on the GPU for the kNN graph's pairs only,
//! so the cost stays linear in d_sae: one streaming pass, one presence bitset per chunk.

use std::sync::Arc;

use clap::ValueEnum;
use serde::Serialize;

use crate::data::{BatchStream, Shard, StreamConfig};
use crate::gpu::kernels::cooccurrence::{launch_count_chunks, launch_mark_presence, ChunkShape};
use crate::gpu::{Gpu, Recorder};
use crate::sae::pass::{ForwardPass, PassDepth};
use crate::sae::GpuSae;

/// Which co-occurrence statistic becomes an affinity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CooccurrenceMeasure {
    /// Phi coefficient (the correlation of two binary variables), negative values read as 0.
    Phi,
    /// Jaccard index: chunks with both over chunks with either.
    Jaccard,
}

/// How chunks are formed and when a feature counts as firing in one.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct Chunking {
    /// Consecutive rows per chunk (in file order, across shard boundaries).
    pub chunk_rows: usize,
    /// A feature fires in a chunk when one of its activations there exceeds this.
    pub fires_above: f32,
}

/// Chunk counts over the shards: every feature's, and each pair's joint count.
#[derive(Clone, Debug)]
pub struct ChunkCounts {
    pub chunking: Chunking,
    pub chunks: u64,
    /// [d_sae] chunks in which each feature fires.
    pub feature_chunks: Vec<u32>,
    /// The pairs counted (i < j).
    pub pairs: Vec<(usize, usize)>,
    /// Per pair: chunks in which both fire.
    pub pair_chunks: Vec<u32>,
}

impl ChunkCounts {
    /// Phi coefficient of pair `e`: (N·n₁₁ − n₁·n₂) / √(n₁(N−n₁)·n₂(N−n₂)); 0 when a feature
    /// fires in every chunk or in none (it says nothing then).
    pub fn phi(&self, e: usize) -> f64 {
        let (i, j) = self.pairs[e];
        let n = self.chunks as f64;
        let (a, b) = (
            f64::from(self.feature_chunks[i]),
            f64::from(self.feature_chunks[j]),
        );
        let both = f64::from(self.pair_chunks[e]);
        let spread = a * (n - a) * b * (n - b);
        if spread <= 0.0 {
            return 0.0;
        }
        (n * both - a * b) / spread.sqrt()
    }

    /// Jaccard index of pair `e`: n₁₁ / (n₁ + n₂ − n₁₁); 0 when neither fires.
    pub fn jaccard(&self, e: usize) -> f64 {
        let (i, j) = self.pairs[e];
        let both = f64::from(self.pair_chunks[e]);
        let either = f64::from(self.feature_chunks[i]) + f64::from(self.feature_chunks[j]) - both;
        if either <= 0.0 {
            0.0
        } else {
            both / either
        }
    }

    /// Each pair's affinity in [0, 1] by `measure`.
    pub fn affinity(&self, measure: CooccurrenceMeasure) -> Vec<f64> {
        (0..self.pairs.len())
            .map(|e| match measure {
                CooccurrenceMeasure::Phi => self.phi(e).clamp(0.0, 1.0),
                CooccurrenceMeasure::Jaccard => self.jaccard(e),
            })
            .collect()
    }
}

/// Rows per batch of the co-occurrence pass: a whole number of chunks, at least one, near
/// `batch_rows`.
pub fn chunk_batch_rows(chunk_rows: usize, batch_rows: usize) -> usize {
    chunk_rows * (batch_rows / chunk_rows.max(1)).max(1)
}

/// Streams `shards` through `sae` and counts, per chunk of `chunking.chunk_rows` consecutive
/// rows, which features fire; then for every feature and each of `pairs`, in how many chunks.
/// Batches hold a whole number of chunks (at least one), so chunks never straddle two.
pub fn count_chunks(
    gpu: &Gpu,
    sae: &GpuSae,
    shards: Arc<Vec<Shard>>,
    pairs: Vec<(usize, usize)>,
    chunking: Chunking,
    batch_rows: usize,
    mut on_rows: impl FnMut(u64),
) -> anyhow::Result<ChunkCounts> {
    let chunk_rows = chunking.chunk_rows;
    anyhow::ensure!(chunk_rows >= 1, "--chunk must be at least 1");
    let batch = chunk_batch_rows(chunk_rows, batch_rows);
    let total_rows: u64 = shards.iter().map(|s| s.rows as u64).sum();
    let total_chunks = total_rows.div_ceil(chunk_rows as u64);
    // The GPU counters are u32; each counts chunks, so they cannot overflow below this.
    anyhow::ensure!(
        total_chunks <= u64::from(u32::MAX),
        "{total_chunks} chunks of {chunk_rows} rows exceed the 32-bit chunk counters; use a larger --chunk"
    );
    let (d_sae, k) = (sae.d_sae, sae.k);
    let pass = ForwardPass::new(gpu, sae, batch, PassDepth::Codes)?;
    let full = ChunkShape {
        rows: batch,
        k,
        chunk_rows,
        d_sae,
    };
    let presence = gpu.storage::<u32>("chunk_presence", full.presence_len())?;
    let flat: Vec<u32> = pairs
        .iter()
        .flat_map(|&(i, j)| [i as u32, j as u32])
        .collect();
    // Buffers cannot be empty: a pair-less graph still binds one slot.
    let pair_features = gpu.upload(
        "pair_features",
        if flat.is_empty() { &[0, 0] } else { &flat },
    )?;
    let pair_chunks = gpu.storage::<u32>("pair_chunks", pairs.len().max(1))?;
    let feature_chunks = gpu.storage::<u32>("feature_chunks", d_sae)?;
    let mut rec = Recorder::new(gpu, "co-occurrence: clear counters");
    rec.clear(&pair_chunks);
    rec.clear(&feature_chunks);
    rec.submit()?;
    let mut chunks = 0u64;
    let stream = BatchStream::start(shards, StreamConfig::sequential(batch))?;
    for b in stream {
        let b = b?;
        let shape = ChunkShape {
            rows: b.rows,
            ..full
        };
        pass.run(&b.x, b.rows, |rec, fw| {
            rec.clear(&presence);
            launch_mark_presence(
                rec,
                shape,
                &fw.top_idx,
                &fw.top_val,
                chunking.fires_above,
                &presence,
            )?;
            launch_count_chunks(
                rec,
                shape,
                &presence,
                &pair_features,
                pairs.len(),
                &pair_chunks,
                &feature_chunks,
            )
        })?;
        chunks += shape.chunks() as u64;
        on_rows(b.rows as u64);
    }
    let feature_chunks: Vec<u32> = gpu.read(&feature_chunks)?;
    let mut pair_chunks: Vec<u32> = gpu.read(&pair_chunks)?;
    pair_chunks.truncate(pairs.len());
    Ok(ChunkCounts {
        chunking,
        chunks,
        feature_chunks,
        pairs,
        pair_chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(chunks: u64, features: Vec<u32>, both: u32) -> ChunkCounts {
        ChunkCounts {
            chunking: Chunking {
                chunk_rows: 1,
                fires_above: 0.0,
            },
            chunks,
            feature_chunks: features,
            pairs: vec![(0, 1)],
            pair_chunks: vec![both],
        }
    }

    #[test]
    fn phi_and_jaccard_follow_their_definitions() {
        // Always together: phi 1, Jaccard 1.
        let c = counts(10, vec![4, 4], 4);
        assert!((c.phi(0) - 1.0).abs() < 1e-12);
        assert!((c.jaccard(0) - 1.0).abs() < 1e-12);
        // Never together, each in half the chunks: phi −1 (affinity 0), Jaccard 0.
        let c = counts(10, vec![5, 5], 0);
        assert!((c.phi(0) + 1.0).abs() < 1e-12);
        assert_eq!(c.affinity(CooccurrenceMeasure::Phi), vec![0.0]);
        assert_eq!(c.jaccard(0), 0.0);
        // Independent (2 of 10 and 5 of 10, together in 1): phi 0, Jaccard 1/6.
        let c = counts(10, vec![2, 5], 1);
        assert!(c.phi(0).abs() < 1e-12);
        assert!((c.jaccard(0) - 1.0 / 6.0).abs() < 1e-12);
        // A feature firing in every chunk carries no information.
        assert_eq!(counts(10, vec![10, 3], 3).phi(0), 0.0);
    }
}
