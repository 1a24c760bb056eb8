//! What the categories report shows besides the categories themselves, computed here so the
//! report only formats: the dictionary's 2-D map, each decoder kNN pair's co-occurrence
//! statistics, the clustering hierarchy, and the relation to another dictionary.

use std::collections::{BTreeMap, HashMap};

use super::cluster::{parents, spectral_embedding};
use super::cooccurrence::{CooccurrenceMeasure, Partners};
use super::graph::{KnnPairs, Matching};
use super::result::{Across, KnnCooccurrence, Level, SplitParent};

/// Each feature at eigenvectors 2 and 3 of the whole kNN graph's spectral embedding.
pub fn dictionary_map(
    d_sae: usize,
    knn_pairs: &KnnPairs,
    seed: u64,
) -> anyhow::Result<Vec<(f64, f64)>> {
    let full = knn_pairs.edges(-1.0, None);
    let dims = 3.min(d_sae);
    let embedding = spectral_embedding(d_sae, &full, dims, seed)?;
    Ok((0..d_sae)
        .map(|i| {
            let at = |c: usize| embedding.get(i * dims + c).copied().unwrap_or(0.0);
            (at(1), at(2))
        })
        .collect())
}

/// φ and Jaccard of each decoder kNN slot's pair, from its joint count.
pub fn knn_cooccurrence(knn_pairs: &KnnPairs, p: &Partners) -> KnnCooccurrence {
    let per_slot = |measure: CooccurrenceMeasure| -> Vec<f32> {
        knn_pairs
            .slot_pair
            .iter()
            .map(|&e| {
                let (i, j) = knn_pairs.pairs[e];
                let n = p.pair_joint[e];
                if n == 0 {
                    return 0.0;
                }
                measure.score(
                    f64::from(n),
                    f64::from(p.feature_units[i]),
                    f64::from(p.feature_units[j]),
                    p.units as f64,
                ) as f32
            })
            .collect()
    };
    KnnCooccurrence {
        phi: per_slot(CooccurrenceMeasure::Phi),
        jaccard: per_slot(CooccurrenceMeasure::Jaccard),
    }
}

/// The levels ordered coarse (low resolution) to fine, each cluster's parent.
pub fn hierarchy(levels: &[(f64, Vec<usize>)]) -> Vec<Level> {
    let mut order: Vec<usize> = (0..levels.len()).collect();
    order.sort_by(|&a, &b| levels[a].0.total_cmp(&levels[b].0));
    order
        .iter()
        .enumerate()
        .map(|(pos, &l)| {
            let (resolution, labels) = &levels[l];
            let mut sizes: HashMap<usize, usize> = HashMap::new();
            for &v in labels {
                *sizes.entry(v).or_default() += 1;
            }
            let parent = (pos > 0).then(|| {
                let coarse = &levels[order[pos - 1]].1;
                parents(coarse, labels)
                    .into_iter()
                    .map(|(f, c)| (f.to_string(), c))
                    .collect::<BTreeMap<_, _>>()
            });
            Level {
                resolution: *resolution,
                tensor_row: l,
                clusters_of_2_or_more: sizes.values().filter(|&&s| s >= 2).count(),
                parent,
            }
        })
        .collect()
}

/// Parents, children and novel features between our dictionary (`d_ours` features) and the
/// other (`d_other`).
pub fn across(m: &Matching, d_ours: usize, d_other: usize) -> Across {
    const MATCHED: f32 = 0.5;
    let ours_narrow = d_ours <= d_other;
    let (narrow_to_wide, wide_to_narrow) = if ours_narrow {
        (&m.ours_to_other, &m.other_to_ours)
    } else {
        (&m.other_to_ours, &m.ours_to_other)
    };
    let mut children: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    let mut novel_wide = Vec::new();
    for (w, &(n, c)) in wide_to_narrow.iter().enumerate() {
        if c >= MATCHED {
            children.entry(n).or_default().push(w as u32);
        } else {
            novel_wide.push(w as u32);
        }
    }
    let novel_narrow: Vec<u32> = narrow_to_wide
        .iter()
        .enumerate()
        .filter(|(n, &(_, c))| c < MATCHED && !children.contains_key(&(*n as u32)))
        .map(|(n, _)| n as u32)
        .collect();
    let split_parents = children
        .into_iter()
        .filter(|(_, kids)| kids.len() >= 2)
        .map(|(parent, children)| SplitParent { parent, children })
        .collect();
    Across {
        ours_narrow,
        match_cosine: MATCHED,
        narrow_best_match: narrow_to_wide.clone(),
        wide_best_match: wide_to_narrow.clone(),
        split_parents,
        novel_in_wide: novel_wide,
        unmatched_in_narrow: novel_narrow,
    }
}
