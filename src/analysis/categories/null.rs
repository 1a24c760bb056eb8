//! Is a category more than chance? Every loose group of near-orthogonal features has some
//! internal edges and a structure score around 1, so a category is compared with random groups
//! of the same size drawn from the same graph: each grown from a random feature by adding, one
//! at a time, the far end of a random edge leaving the group (so random groups are connected
//! blobs of the graph, as categories are, and dense regions are drawn more often than a
//! uniform draw would). Draws that share more than half their members with the category are
//! left out: a category is not compared with itself. Its statistic against the rest gives a
//! z-score and a one-sided empirical p-value.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::graph::Edges;

/// A category's statistic against its null draws.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct NullScore {
    /// Mean edge weight over all member pairs (missing edges count 0).
    pub density: f64,
    /// The null groups' mean and standard deviation of the density.
    pub null_mean: f64,
    pub null_sd: f64,
    /// (density − null mean) / null sd.
    pub null_z: f64,
    /// (1 + draws at least as dense) / (1 + draws).
    pub null_p: f64,
    pub null_draws: usize,
}

/// The weighted graph as adjacency lists, for drawing groups and measuring densities.
pub struct NullModel {
    neighbours: Vec<Vec<(usize, f64)>>,
    weight: HashMap<(usize, usize), f64>,
    draws: usize,
    seed: u64,
    /// Null groups and their densities per group size, drawn once.
    by_size: HashMap<usize, Vec<(Vec<usize>, f64)>>,
}

impl NullModel {
    pub fn new(n: usize, edges: &Edges, draws: usize, seed: u64) -> Self {
        let mut neighbours = vec![Vec::new(); n];
        let mut weight = HashMap::with_capacity(edges.pairs.len());
        for (&(i, j), &w) in edges.pairs.iter().zip(&edges.weight) {
            neighbours[i].push((j, w));
            neighbours[j].push((i, w));
            weight.insert((i.min(j), i.max(j)), w);
        }
        NullModel {
            neighbours,
            weight,
            draws,
            seed,
            by_size: HashMap::new(),
        }
    }

    /// Mean edge weight over every pair of `members`.
    pub fn density(&self, members: &[usize]) -> f64 {
        let m = members.len();
        if m < 2 {
            return 0.0;
        }
        let mut total = 0.0;
        for (a, &i) in members.iter().enumerate() {
            for &j in &members[a + 1..] {
                total += self
                    .weight
                    .get(&(i.min(j), i.max(j)))
                    .copied()
                    .unwrap_or(0.0);
            }
        }
        total / (m * (m - 1) / 2) as f64
    }

    /// One random connected group of `size` features, or None when the draw lands in a
    /// component too small.
    fn draw(&self, size: usize, rng: &mut ChaCha8Rng) -> Option<Vec<usize>> {
        let n = self.neighbours.len();
        let start = rng.random_range(0..n);
        let mut group = vec![start];
        let mut inside = std::collections::HashSet::from([start]);
        // Edges leaving the group (with repeats: a feature tied to several members is
        // likelier to join).
        let mut boundary: Vec<usize> = self.neighbours[start].iter().map(|&(j, _)| j).collect();
        while group.len() < size {
            boundary.retain(|j| !inside.contains(j));
            if boundary.is_empty() {
                return None;
            }
            let next = boundary[rng.random_range(0..boundary.len())];
            inside.insert(next);
            group.push(next);
            boundary.extend(self.neighbours[next].iter().map(|&(j, _)| j));
        }
        Some(group)
    }

    fn null_groups(&mut self, size: usize) -> &[(Vec<usize>, f64)] {
        if !self.by_size.contains_key(&size) {
            let mut rng = ChaCha8Rng::seed_from_u64(self.seed ^ (size as u64).wrapping_mul(0x9E37));
            let mut values = Vec::with_capacity(self.draws);
            let mut tries = 0;
            while values.len() < self.draws && tries < self.draws * 20 {
                tries += 1;
                if let Some(group) = self.draw(size, &mut rng) {
                    let density = self.density(&group);
                    values.push((group, density));
                }
            }
            self.by_size.insert(size, values);
        }
        &self.by_size[&size]
    }

    /// `members`' density against random connected groups of the same size.
    pub fn score(&mut self, members: &[usize]) -> NullScore {
        let density = self.density(members);
        let own: std::collections::HashSet<usize> = members.iter().copied().collect();
        let half = members.len() / 2;
        let null: Vec<f64> = self
            .null_groups(members.len())
            .iter()
            .filter(|(group, _)| group.iter().filter(|f| own.contains(f)).count() <= half)
            .map(|&(_, d)| d)
            .collect();
        let draws = null.len();
        let mean = null.iter().sum::<f64>() / draws.max(1) as f64;
        let var = null.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / draws.max(2) as f64;
        let sd = var.sqrt();
        let at_least = null.iter().filter(|&&v| v >= density).count();
        NullScore {
            density,
            null_mean: mean,
            null_sd: sd,
            null_z: if sd > 0.0 {
                (density - mean) / sd
            } else if density > mean {
                f64::INFINITY
            } else {
                0.0
            },
            null_p: (1 + at_least) as f64 / (1 + draws) as f64,
            null_draws: draws,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clique_in_a_sparse_ring_beats_chance_and_a_random_group_does_not() {
        // A ring of 200 features (weight 0.3 per edge) with a clique of 8 (weight 0.9).
        let mut edges = Edges::default();
        for i in 0..200 {
            edges.pairs.push((i, (i + 1) % 200));
            edges.weight.push(0.3);
        }
        let clique: Vec<usize> = (50..58).collect();
        for (a, &i) in clique.iter().enumerate() {
            for &j in &clique[a + 1..] {
                if j != i + 1 {
                    edges.pairs.push((i, j));
                    edges.weight.push(0.9);
                }
            }
        }
        let mut null = NullModel::new(200, &edges, 200, 1);
        let s = null.score(&clique);
        assert!(s.null_p < 0.01 && s.null_z > 3.0, "{s:?}");
        let arc: Vec<usize> = (120..128).collect();
        let s = null.score(&arc);
        assert!(s.null_p > 0.05, "{s:?}");
    }
}
