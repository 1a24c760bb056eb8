//! Everything the categories pipeline finds: the ranked categories, the graphs and counts
//! they came from, and what the report shows besides them. Questions about one feature's ties
//! are answered here, from the result alone.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::category::Category;
use super::cooccurrence::Partners;
use super::families::FamilyScore;
use super::graph::{Edges, KnnGraph, KnnPairs, Matching};
use super::shape::member_gram;

/// Everything found, for the report and the printed summary.
pub struct CategoriesResult {
    pub d_in: usize,
    /// The decoder rows' width (d_in for an SAE; a transcoder's target width).
    pub d_out: usize,
    pub d_sae: usize,
    /// Ranked.
    pub categories: Vec<Category>,
    /// A sentence saying how the categories were found.
    pub method: String,
    pub graph: KnnGraph,
    pub knn_pairs: KnnPairs,
    pub min_cosine: f32,
    pub partners: Option<Partners>,
    /// Per kNN pair (decoder graph), the co-occurrence affinity when counted.
    pub knn_cooccurrence: Option<Vec<f64>>,
    /// The graph the clustering saw.
    pub edges: Edges,
    /// (resolution, labels) per clustering level; the first is the primary one.
    pub levels: Vec<(f64, Vec<usize>)>,
    pub rows_read: Option<u64>,
    pub matching: Option<Matching>,
    /// Unit decoder rows [d_sae, d_out].
    pub unit: Vec<f32>,
    /// Each token family's best-matching category, with precision and recall.
    pub families: Vec<FamilyScore>,
    /// The dictionary's 2-D map: each feature at eigenvectors 2 and 3 of the kNN graph.
    pub map: Vec<(f64, f64)>,
    /// Per decoder kNN slot, its pair's co-occurrence statistics (when counted).
    pub knn_cooccurrence_stats: Option<KnnCooccurrence>,
    /// The clustering levels ordered coarse to fine, with each cluster's parent.
    pub hierarchy: Vec<Level>,
    /// Parents, children and novel features against `--across`'s SAE.
    pub across: Option<Across>,
}

/// Each decoder kNN slot's pair, scored by co-occurrence ([d_sae, neighbours] each).
pub struct KnnCooccurrence {
    pub phi: Vec<f32>,
    pub jaccard: Vec<f32>,
}

/// One clustering level of the hierarchy.
#[derive(Clone, Debug, Serialize)]
pub struct Level {
    pub resolution: f64,
    /// Its row in `levels` (and in categories.safetensors' `labels`).
    pub tensor_row: usize,
    pub clusters_of_2_or_more: usize,
    /// Each cluster's parent at the next coarser level (none for the coarsest).
    pub parent: Option<BTreeMap<String, usize>>,
}

/// How two dictionaries relate: a feature of the wider SAE whose best match in the narrower
/// one has cosine ≥ `match_cosine` is that feature's child; features of either side with no
/// match that close are novel.
#[derive(Clone, Debug, Serialize)]
pub struct Across {
    /// Whether our SAE is the narrower one.
    #[serde(skip)]
    pub ours_narrow: bool,
    pub match_cosine: f32,
    pub narrow_best_match: Vec<(u32, f32)>,
    pub wide_best_match: Vec<(u32, f32)>,
    /// Narrow features with two or more children.
    pub split_parents: Vec<SplitParent>,
    pub novel_in_wide: Vec<u32>,
    pub unmatched_in_narrow: Vec<u32>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SplitParent {
    pub parent: u32,
    pub children: Vec<u32>,
}

/// How one member of a category ties to a given feature.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct MemberTie {
    pub feature: usize,
    /// The clustering graph's edge weight (0 when there is no edge).
    pub edge: f64,
    /// The co-occurrence score, when the pair was counted and scored above 0.
    pub cooccurrence: Option<f64>,
    pub decoder_cosine: f64,
    pub fires: Option<u64>,
}

impl CategoriesResult {
    /// The other members of `feature`'s category, strongest tie first (the blended edge, then
    /// co-occurrence, then decoder cosine).
    pub fn member_ties(&self, feature: usize) -> Vec<MemberTie> {
        let Some(c) = self.category_of(feature) else {
            return Vec::new();
        };
        let ties = self.ties(feature);
        let co = self.cooccurrence_ties(feature);
        let mut members: Vec<MemberTie> = c
            .members
            .iter()
            .enumerate()
            .filter(|&(_, &m)| m != feature)
            .map(|(slot, &m)| MemberTie {
                feature: m,
                edge: ties.get(&m).copied().unwrap_or(0.0),
                cooccurrence: co.get(&m).copied(),
                decoder_cosine: self.cosine(feature, m),
                fires: c.fire_counts.as_ref().map(|f| f[slot]),
            })
            .collect();
        members.sort_by(|a, b| {
            b.edge
                .total_cmp(&a.edge)
                .then(
                    b.cooccurrence
                        .unwrap_or(0.0)
                        .total_cmp(&a.cooccurrence.unwrap_or(0.0)),
                )
                .then(b.decoder_cosine.total_cmp(&a.decoder_cosine))
        });
        members
    }

    pub fn category_of(&self, feature: usize) -> Option<&Category> {
        self.categories
            .iter()
            .find(|c| c.members.contains(&feature))
    }

    /// The decoder cosines between `members`, [m, m].
    pub fn member_cosines(&self, members: &[usize]) -> Vec<f64> {
        member_gram(&self.unit, self.d_out, members)
    }

    /// Cosine of two features' decoder rows.
    pub fn cosine(&self, a: usize, b: usize) -> f64 {
        let d = self.d_out;
        self.unit[a * d..(a + 1) * d]
            .iter()
            .zip(&self.unit[b * d..(b + 1) * d])
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }

    /// Edge weights of the clustering graph from `feature` (0 where there is no edge).
    pub fn ties(&self, feature: usize) -> HashMap<usize, f64> {
        self.edges
            .pairs
            .iter()
            .zip(&self.edges.weight)
            .filter_map(|(&(i, j), &w)| match (i == feature, j == feature) {
                (true, _) => Some((j, w)),
                (_, true) => Some((i, w)),
                _ => None,
            })
            .collect()
    }

    /// The co-occurrence score of `feature` with every feature it is a partner of, or that is
    /// one of its partners, or that is its decoder neighbour with a counted affinity.
    pub fn cooccurrence_ties(&self, feature: usize) -> HashMap<usize, f64> {
        let mut ties: HashMap<usize, f64> = HashMap::new();
        if let Some(p) = &self.partners {
            // Both directions: j among the feature's partners, or the feature among j's.
            for (j, s) in p.of(feature) {
                ties.insert(j, f64::from(s));
            }
            for j in 0..p.d_sae {
                if let Some((_, s)) = p.of(j).find(|&(f, _)| f == feature) {
                    ties.entry(j).or_insert(f64::from(s));
                }
            }
        }
        if let Some(affinity) = &self.knn_cooccurrence {
            for (&(i, j), &a) in self.knn_pairs.pairs.iter().zip(affinity) {
                let other = if i == feature {
                    j
                } else if j == feature {
                    i
                } else {
                    continue;
                };
                if a > 0.0 {
                    ties.entry(other).or_insert(a);
                }
            }
        }
        ties
    }
}
