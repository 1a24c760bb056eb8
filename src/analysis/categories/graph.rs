//! The decoder-cosine k-nearest-neighbour graph, on the GPU, and the weighted undirected edges
//! that the clusterings read.
//!
//! Unit W_dec rows against all of them is the encoder GEMM with W_enc = unit W_decᵀ (split into
//! blocks of latents when the dictionary exceeds one binding), and each feature's neighbours
//! are a TopK of its row: the same kernels `sae train` runs, so the graph costs one encode of
//! d_sae rows.

use std::collections::HashMap;

use crate::gpu::{Gpu, GpuResult, Matmul};
use crate::sae::forward::GpuSae;
use crate::sae::params::{Activation, SaeParams};
use crate::sae::pass::{ForwardPass, PassDepth};

/// Each feature's nearest neighbours by decoder cosine (itself excluded), best first.
#[derive(Clone, Debug)]
pub struct KnnGraph {
    pub d_sae: usize,
    pub neighbours: usize,
    /// [d_sae, neighbours] feature ids.
    pub index: Vec<u32>,
    /// [d_sae, neighbours] cosines (negative cosines read as 0: they are never neighbours
    /// that matter here).
    pub cosine: Vec<f32>,
}

impl KnnGraph {
    /// Each slot's angular affinity ([`angular_affinity`] of its cosine).
    pub fn affinities(&self) -> Vec<f32> {
        self.cosine
            .iter()
            .map(|&c| angular_affinity(c) as f32)
            .collect()
    }

    pub fn of(&self, feature: usize) -> impl Iterator<Item = (usize, f32)> + '_ {
        let at = feature * self.neighbours;
        self.index[at..at + self.neighbours]
            .iter()
            .zip(&self.cosine[at..at + self.neighbours])
            .map(|(&j, &c)| (j as usize, c))
    }
}

/// W_dec [d_sae, d_in] with every row scaled to unit norm (zero rows stay zero).
pub fn unit_rows(w_dec: &[f32], d_in: usize) -> Vec<f32> {
    let mut unit = w_dec.to_vec();
    for row in unit.chunks_exact_mut(d_in) {
        let norm = row
            .iter()
            .map(|&v| f64::from(v).powi(2))
            .sum::<f64>()
            .sqrt();
        if norm > 0.0 {
            row.iter_mut()
                .for_each(|v| *v = (f64::from(*v) / norm) as f32);
        }
    }
    unit
}

/// For each row of `queries` ([n, d_in]), the `k` rows of `keys` ([n_keys, d_in]) with the
/// largest dot products, best first: ids and dot products, [n, k] each. With unit rows the dot
/// products are cosines (negative ones read as 0). `batch_rows` queries go to the GPU at once.
pub fn nearest(
    gpu: &Gpu,
    queries: &[f32],
    keys: &[f32],
    d_in: usize,
    k: usize,
    batch_rows: usize,
    matmul: Matmul,
) -> GpuResult<(Vec<u32>, Vec<f32>)> {
    let n_keys = keys.len() / d_in;
    let n = queries.len() / d_in;
    let k = k.min(n_keys);
    let mut gram = SaeParams {
        input_norm: Default::default(),
        d_in,
        d_sae: n_keys,
        activation: Activation::TopK { k },
        w_enc: Vec::new(),
        b_enc: vec![0.0; n_keys],
        w_dec: keys.to_vec(),
        b_dec: vec![0.0; d_in],
        transcoder: None,
    };
    gram.w_enc = gram.w_dec_transposed();
    let batch_rows = batch_rows.clamp(1, n.max(1));
    let mut sae = GpuSae::upload(gpu, &gram, batch_rows)?;
    sae.set_matmul(gpu, matmul)?;
    let pass = ForwardPass::new(gpu, &sae, batch_rows, PassDepth::Codes)?;
    let mut index = Vec::with_capacity(n * k);
    let mut value = Vec::with_capacity(n * k);
    for start in (0..n).step_by(batch_rows) {
        let rows = batch_rows.min(n - start);
        pass.run(
            &queries[start * d_in..(start + rows) * d_in],
            rows,
            |_, _| Ok(()),
        )?;
        let (idx, val) = pass.codes(rows)?;
        index.extend_from_slice(&idx);
        value.extend_from_slice(&val);
    }
    Ok((index, value))
}

/// The decoder-cosine kNN graph of `unit` (W_dec [d_sae, d_in] with unit rows, see
/// [`unit_rows`]), `batch_rows` features at a time, the dot products as `matmul` says.
pub fn knn_graph(
    gpu: &Gpu,
    unit: &[f32],
    d_in: usize,
    d_sae: usize,
    neighbours: usize,
    batch_rows: usize,
    matmul: Matmul,
) -> GpuResult<KnnGraph> {
    // One extra slot: a feature is its own nearest neighbour, and is dropped below.
    let k = (neighbours + 1).min(d_sae);
    let (idx, val) = nearest(gpu, unit, unit, d_in, k, batch_rows, matmul)?;
    let kept = k - 1;
    let mut index = Vec::with_capacity(d_sae * kept);
    let mut cosine = Vec::with_capacity(d_sae * kept);
    for feature in 0..d_sae {
        let row = (feature * k..(feature + 1) * k).filter(|&e| idx[e] != feature as u32);
        // Normally the feature itself is among the k; otherwise (a duplicate row) the last
        // slot goes.
        for e in row.take(kept) {
            index.push(idx[e]);
            cosine.push(val[e]);
        }
    }
    Ok(KnnGraph {
        d_sae,
        neighbours: kept,
        index,
        cosine,
    })
}

/// Angular affinity of two directions with cosine `cos`: 1 − arccos(cos)/π, in [0, 1].
pub fn angular_affinity(cos: f32) -> f64 {
    1.0 - f64::from(cos).clamp(-1.0, 1.0).acos() / std::f64::consts::PI
}

/// The kNN graph as weighted undirected edges (i < j), each pair once.
#[derive(Clone, Debug, Default)]
pub struct Edges {
    pub pairs: Vec<(usize, usize)>,
    pub weight: Vec<f64>,
}

/// Each unordered pair of the kNN graph once (i < j), with its cosine, and where each kNN slot
/// landed: the candidate edges that co-occurrence is counted for.
#[derive(Clone, Debug, Default)]
pub struct KnnPairs {
    pub pairs: Vec<(usize, usize)>,
    pub cosine: Vec<f32>,
    /// [d_sae, neighbours]: the pair index of each kNN slot.
    pub slot_pair: Vec<usize>,
}

/// A second affinity per pair of [`KnnPairs`] (co-occurrence), mixed in with `weight`.
#[derive(Clone, Copy, Debug)]
pub struct Blend<'a> {
    pub affinity: &'a [f64],
    pub weight: f64,
}

impl KnnGraph {
    pub fn pairs(&self) -> KnnPairs {
        let mut seen: HashMap<(usize, usize), usize> = HashMap::new();
        let mut out = KnnPairs::default();
        for i in 0..self.d_sae {
            for (j, c) in self.of(i) {
                let key = (i.min(j), i.max(j));
                let e = *seen.entry(key).or_insert_with(|| {
                    out.pairs.push(key);
                    out.cosine.push(c);
                    out.pairs.len() - 1
                });
                out.cosine[e] = out.cosine[e].max(c);
                out.slot_pair.push(e);
            }
        }
        out
    }
}

impl KnnPairs {
    /// Weighted edges: (1 − w)·a_dec + w·a_other, where a_dec is the angular affinity of pairs
    /// with cosine ≥ `min_cosine` (else 0) and a_other the blend's; pairs of weight 0 drop out.
    /// Below the floor a neighbour is one by chance (random directions in d_in dimensions have
    /// cosines of spread 1/√d_in), and such edges only blur the clustering.
    pub fn edges(&self, min_cosine: f32, blend: Option<Blend<'_>>) -> Edges {
        let mut edges = Edges::default();
        for (e, (&pair, &c)) in self.pairs.iter().zip(&self.cosine).enumerate() {
            if pair.0 == pair.1 {
                continue;
            }
            let decoder = if c >= min_cosine {
                angular_affinity(c)
            } else {
                0.0
            };
            let w = match blend {
                Some(b) => (1.0 - b.weight) * decoder + b.weight * b.affinity[e],
                None => decoder,
            };
            if w > 0.0 {
                edges.pairs.push(pair);
                edges.weight.push(w);
            }
        }
        edges
    }
}

/// How the features of one SAE map onto another's (`--across`): every feature's best match in
/// the other dictionary by decoder cosine, both ways.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Matching {
    /// For each feature of ours: the other SAE's closest feature and the cosine.
    pub ours_to_other: Vec<(u32, f32)>,
    /// For each feature of the other SAE: our closest feature and the cosine.
    pub other_to_ours: Vec<(u32, f32)>,
}

/// Best matches between two dictionaries of unit rows with the same d_in.
pub fn match_across(
    gpu: &Gpu,
    ours: &[f32],
    other: &[f32],
    d_in: usize,
    batch_rows: usize,
    matmul: Matmul,
) -> GpuResult<Matching> {
    let best = |q: &[f32], k: &[f32]| -> GpuResult<Vec<(u32, f32)>> {
        let (i, v) = nearest(gpu, q, k, d_in, 1, batch_rows, matmul)?;
        Ok(i.into_iter().zip(v).collect())
    };
    Ok(Matching {
        ours_to_other: best(ours, other)?,
        other_to_ours: best(other, ours)?,
    })
}
