//! Clusterings of the kNN graph into categories: Leiden (default; several resolutions give a
//! hierarchy), Engels et al.'s graph components, and spectral clustering.

use anyhow::Context;
use faer::dyn_stack::{MemBuffer, MemStack, StackReq};
use faer::matrix_free::eigen::{
    partial_self_adjoint_eigen, partial_self_adjoint_eigen_scratch, PartialEigenParams,
};
use faer::matrix_free::LinOp;
use faer::{Col, Mat, MatMut, MatRef, Par};
use leiden_rs::{GraphDataBuilder, Leiden, LeidenConfig, QualityType};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::graph::{Edges, KnnGraph};

/// Engels et al.'s graph clustering: features joined to each of their top `top` neighbours
/// whose cosine exceeds `threshold`; categories are the connected components. Returns each
/// feature's component label (singletons included).
pub fn engels_components(graph: &KnnGraph, top: usize, threshold: f32) -> Vec<usize> {
    let mut parent: Vec<usize> = (0..graph.d_sae).collect();
    fn root(parent: &mut [usize], mut i: usize) -> usize {
        while parent[i] != i {
            parent[i] = parent[parent[i]];
            i = parent[i];
        }
        i
    }
    for i in 0..graph.d_sae {
        for (j, c) in graph.of(i).take(top) {
            if c > threshold {
                let (a, b) = (root(&mut parent, i), root(&mut parent, j));
                // The lower id becomes the root, so labels do not depend on edge order.
                parent[a.max(b)] = a.min(b);
            }
        }
    }
    (0..graph.d_sae).map(|i| root(&mut parent, i)).collect()
}

/// What Leiden optimises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeidenQuality {
    /// Constant Potts model: a community is worth keeping while its internal edge density
    /// exceeds the resolution. Free of modularity's resolution limit, so a ring of 7
    /// features stays whole in a graph that is otherwise nearly empty.
    Cpm,
    /// Modularity (Newman–Girvan, with resolution): the null model scales with the whole
    /// graph's weight, so on a sparse graph it cuts rings and chains into arcs.
    Modularity,
}

impl crate::choice::Choice for LeidenQuality {
    const CHOICES: &'static [(&'static str, Self, &'static str)] = &[
        (
            "cpm",
            LeidenQuality::Cpm,
            "Constant Potts model: a community is worth keeping while its internal edge density exceeds the resolution",
        ),
        (
            "modularity",
            LeidenQuality::Modularity,
            "Modularity (Newman–Girvan, with resolution)",
        ),
    ];
}

/// Leiden communities (`quality` at `resolution`, seeded) of the undirected weighted graph
/// `edges` over `n` features. Isolated features are their own community.
pub fn leiden(
    n: usize,
    edges: &Edges,
    quality: LeidenQuality,
    resolution: f64,
    seed: u64,
) -> anyhow::Result<Vec<usize>> {
    let mut builder = GraphDataBuilder::new(n);
    for (&(i, j), &w) in edges.pairs.iter().zip(&edges.weight) {
        builder.add_edge(i, j, w).context("Leiden graph")?;
    }
    let graph = builder.build().context("Leiden graph")?;
    let config = LeidenConfig::builder()
        .resolution(resolution)
        .seed(seed)
        .quality(match quality {
            LeidenQuality::Cpm => QualityType::CPM,
            LeidenQuality::Modularity => QualityType::RBConfiguration,
        })
        .build();
    let found = Leiden::new(config)
        .run(&graph)
        .with_context(|| format!("Leiden at resolution {resolution}"))?;
    Ok(canonical_labels(found.partition.as_slice()))
}

/// Relabels clusters by their lowest member, so labels do not depend on a solver's numbering.
pub fn canonical_labels(labels: &[usize]) -> Vec<usize> {
    let mut first = std::collections::HashMap::new();
    labels
        .iter()
        .enumerate()
        .map(|(i, &l)| *first.entry(l).or_insert(i))
        .collect()
}

/// Parent links between two clusterings of the same features, `coarse` then `fine`: each fine
/// cluster's parent is the coarse cluster holding most of its members.
pub fn parents(coarse: &[usize], fine: &[usize]) -> std::collections::BTreeMap<usize, usize> {
    let mut overlap: std::collections::HashMap<(usize, usize), usize> = Default::default();
    for (&f, &c) in fine.iter().zip(coarse) {
        *overlap.entry((f, c)).or_default() += 1;
    }
    let mut best: std::collections::BTreeMap<usize, (usize, usize)> = Default::default();
    for (&(f, c), &count) in &overlap {
        let entry = best.entry(f).or_insert((c, 0));
        if count > entry.1 || (count == entry.1 && c < entry.0) {
            *entry = (c, count);
        }
    }
    best.into_iter().map(|(f, (c, _))| (f, c)).collect()
}

/// Graphs up to this many features get a dense eigendecomposition.
const DENSE_EIGEN_MAX: usize = 512;

/// The normalised adjacency D^-1/2 A D^-1/2 shifted to (I + ·)/2, whose largest eigenvalues
/// belong to the smallest eigenvalues of the normalised Laplacian, all in [0, 1].
#[derive(Debug)]
struct ShiftedAdjacency {
    n: usize,
    /// (i, j, D^-1/2 w D^-1/2), both directions.
    entries: Vec<(usize, usize, f64)>,
}

impl LinOp<f64> for ShiftedAdjacency {
    fn apply_scratch(&self, _rhs_ncols: usize, _par: Par) -> StackReq {
        StackReq::EMPTY
    }
    fn nrows(&self) -> usize {
        self.n
    }
    fn ncols(&self) -> usize {
        self.n
    }
    fn apply(&self, out: MatMut<'_, f64>, rhs: MatRef<'_, f64>, _par: Par, _stack: &mut MemStack) {
        let mut out = out;
        for c in 0..rhs.ncols() {
            for i in 0..self.n {
                out[(i, c)] = 0.5 * rhs[(i, c)];
            }
            for &(i, j, w) in &self.entries {
                out[(i, c)] += 0.5 * w * rhs[(j, c)];
            }
        }
    }
    fn conj_apply(
        &self,
        out: MatMut<'_, f64>,
        rhs: MatRef<'_, f64>,
        par: Par,
        stack: &mut MemStack,
    ) {
        self.apply(out, rhs, par, stack)
    }
}

/// The `dims` leading eigenvectors of the normalised adjacency D^-1/2 A D^-1/2 ([n, dims],
/// row-major), by a Krylov–Schur partial eigensolver on the sparse graph. The first is the
/// trivial one (∝ √degree on a connected graph).
pub fn spectral_embedding(
    n: usize,
    edges: &Edges,
    dims: usize,
    seed: u64,
) -> anyhow::Result<Vec<f64>> {
    let mut degree = vec![0.0f64; n];
    for (&(i, j), &w) in edges.pairs.iter().zip(&edges.weight) {
        degree[i] += w;
        degree[j] += w;
    }
    let scale: Vec<f64> = degree
        .iter()
        .map(|&d| if d > 0.0 { d.powf(-0.5) } else { 0.0 })
        .collect();
    let mut entries = Vec::with_capacity(2 * edges.pairs.len());
    for (&(i, j), &w) in edges.pairs.iter().zip(&edges.weight) {
        let v = scale[i] * w * scale[j];
        entries.push((i, j, v));
        entries.push((j, i, v));
    }
    let dims = dims.min(n);
    // The Krylov solver needs room for its subspace (it refuses graphs of ≤ 64 nodes); a
    // dense decomposition is exact and instant at such sizes.
    if n <= DENSE_EIGEN_MAX {
        let mut dense = Mat::<f64>::zeros(n, n);
        for &(i, j, v) in &entries {
            dense[(i, j)] += v;
        }
        let eigen = dense
            .self_adjoint_eigen(faer::Side::Lower)
            .map_err(|e| anyhow::anyhow!("spectral embedding: {e:?}"))?;
        // Eigenvalues ascend: the leading ones are the last columns.
        let u = eigen.U();
        let mut out = vec![0.0f64; n * dims];
        for i in 0..n {
            for c in 0..dims {
                out[i * dims + c] = u[(i, n - 1 - c)];
            }
        }
        return Ok(out);
    }
    let op = ShiftedAdjacency { n, entries };
    let mut vectors = Mat::<f64>::zeros(n, dims);
    let mut values = vec![0.0f64; dims];
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let start = Col::<f64>::from_fn(n, |_| rng.random::<f64>() + 0.5);
    let params = PartialEigenParams::default();
    let mut buffer = MemBuffer::new(partial_self_adjoint_eigen_scratch(
        &op,
        dims,
        Par::Seq,
        params,
    ));
    let info = partial_self_adjoint_eigen(
        vectors.as_mut(),
        &mut values,
        &op,
        start.as_ref(),
        1e-10,
        Par::Seq,
        MemStack::new(&mut buffer),
        params,
    );
    anyhow::ensure!(
        info.n_converged_eigen >= dims,
        "spectral embedding: only {} of {dims} eigenvectors converged",
        info.n_converged_eigen
    );
    // The solver returns the largest first; order explicitly in case it does not.
    let mut order: Vec<usize> = (0..dims).collect();
    order.sort_by(|&a, &b| values[b].total_cmp(&values[a]));
    let mut out = vec![0.0f64; n * dims];
    for i in 0..n {
        for (c, &o) in order.iter().enumerate() {
            out[i * dims + c] = vectors[(i, o)];
        }
    }
    Ok(out)
}

/// Spectral clustering (Ng, Jordan and Weiss): the `n_clusters` leading eigenvectors of the
/// normalised adjacency, rows normalised, then seeded k-means++ (best of several restarts).
pub fn spectral(
    n: usize,
    edges: &Edges,
    n_clusters: usize,
    seed: u64,
) -> anyhow::Result<Vec<usize>> {
    anyhow::ensure!(
        n_clusters >= 2 && n_clusters <= n,
        "--n-clusters must be between 2 and the number of features ({n})"
    );
    let k = n_clusters;
    let vectors = spectral_embedding(n, edges, k, seed)?;
    // Row-normalised embedding (features without edges sit at the origin).
    let mut points = vec![0.0f64; n * k];
    for i in 0..n {
        let row = &vectors[i * k..(i + 1) * k];
        let norm = row.iter().map(|v| v * v).sum::<f64>().sqrt();
        if norm > 1e-12 {
            for c in 0..k {
                points[i * k + c] = row[c] / norm;
            }
        }
    }
    Ok(canonical_labels(&kmeans(&points, k, k, seed)))
}

/// k-means++ on `points` ([n, dim]) into `k` clusters: the lowest-inertia of 8 seeded runs.
pub fn kmeans(points: &[f64], dim: usize, k: usize, seed: u64) -> Vec<usize> {
    let n = points.len() / dim;
    let point = |i: usize| &points[i * dim..(i + 1) * dim];
    let dist = |a: &[f64], b: &[f64]| a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum::<f64>();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut best: Option<(f64, Vec<usize>)> = None;
    for _restart in 0..8 {
        // k-means++ seeding: each next centre drawn with odds ∝ squared distance.
        let mut centres: Vec<f64> = point(rng.random_range(0..n)).to_vec();
        let mut nearest = vec![f64::INFINITY; n];
        while centres.len() < k * dim {
            let last = &centres[centres.len() - dim..];
            for (i, d) in nearest.iter_mut().enumerate() {
                *d = d.min(dist(point(i), last));
            }
            let total: f64 = nearest.iter().sum();
            let pick = if total > 0.0 {
                let mut target = rng.random::<f64>() * total;
                nearest
                    .iter()
                    .position(|&d| {
                        target -= d;
                        target <= 0.0
                    })
                    .unwrap_or(n - 1)
            } else {
                rng.random_range(0..n)
            };
            centres.extend_from_slice(point(pick));
        }
        let mut labels = vec![0usize; n];
        for _iteration in 0..100 {
            let mut changed = false;
            for (i, label) in labels.iter_mut().enumerate() {
                let c = (0..k)
                    .min_by(|&a, &b| {
                        dist(point(i), &centres[a * dim..(a + 1) * dim])
                            .total_cmp(&dist(point(i), &centres[b * dim..(b + 1) * dim]))
                    })
                    .unwrap_or(0);
                changed |= c != *label;
                *label = c;
            }
            let mut sums = vec![0.0f64; k * dim];
            let mut counts = vec![0usize; k];
            for (i, &c) in labels.iter().enumerate() {
                counts[c] += 1;
                for (s, v) in sums[c * dim..(c + 1) * dim].iter_mut().zip(point(i)) {
                    *s += v;
                }
            }
            for c in 0..k {
                if counts[c] > 0 {
                    for d in 0..dim {
                        centres[c * dim + d] = sums[c * dim + d] / counts[c] as f64;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let inertia: f64 = labels
            .iter()
            .enumerate()
            .map(|(i, &c)| dist(point(i), &centres[c * dim..(c + 1) * dim]))
            .sum();
        if best.as_ref().is_none_or(|(b, _)| inertia < *b) {
            best = Some((inertia, labels));
        }
    }
    best.map(|(_, labels)| labels).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two 5-cliques joined by one weak edge.
    fn two_cliques() -> Edges {
        let mut edges = Edges::default();
        for base in [0, 5] {
            for i in 0..5 {
                for j in i + 1..5 {
                    edges.pairs.push((base + i, base + j));
                    edges.weight.push(0.9);
                }
            }
        }
        edges.pairs.push((4, 5));
        edges.weight.push(0.1);
        edges
    }

    #[test]
    fn leiden_and_spectral_find_two_cliques() {
        let edges = two_cliques();
        let want = [0, 0, 0, 0, 0, 5, 5, 5, 5, 5];
        let labels = leiden(10, &edges, LeidenQuality::Modularity, 1.0, 7).unwrap();
        assert_eq!(labels, want);
        let labels = leiden(10, &edges, LeidenQuality::Cpm, 0.05, 7).unwrap();
        assert_eq!(labels, want);
        let labels = spectral(10, &edges, 2, 7).unwrap();
        assert_eq!(labels, want);
        // Coarser resolution merges them; the parent of both fine clusters is the merged one.
        let coarse = leiden(10, &edges, LeidenQuality::Modularity, 0.01, 7).unwrap();
        assert_eq!(coarse, vec![0; 10]);
        let up = parents(&coarse, &labels);
        assert_eq!(up.into_iter().collect::<Vec<_>>(), vec![(0, 0), (5, 0)]);
    }

    #[test]
    fn engels_components_join_top_neighbours_above_threshold() {
        // 0–1 and 1–2 are close, 3 is far from all.
        let graph = KnnGraph {
            d_sae: 4,
            neighbours: 2,
            index: vec![1, 2, 0, 2, 1, 0, 0, 1],
            cosine: vec![0.9, 0.2, 0.9, 0.8, 0.8, 0.2, 0.1, 0.1],
        };
        assert_eq!(engels_components(&graph, 2, 0.5), vec![0, 0, 0, 3]);
    }
}
