//! The whole `sae categories` pipeline as one function from a config to a result: the graph
//! (decoder-cosine kNN, with shards the co-occurrence kNN over all pairs, their union with
//! blended weights) → clusters → significance against chance → structure on data → writers →
//! ranking. Writing the files is the report module's job ([`super::report::write_outputs`]);
//! the CLI maps flags to a [`CategoriesConfig`] and prints.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::bail;
use clap::ValueEnum;
use serde::Serialize;

use super::cluster::LeidenQuality;
use super::cooccurrence::{
    count_passes, partners, CountSource, PartnerConfig, Partners, SparseCounts,
};
use super::families::{score_families, FamilyScore, TokenFamilies};
use super::graph::{match_across, Edges, KnnPairs, Matching};
use super::null::NullModel;
use super::structure::{analyse, gather, CategorySamples, Sampling};
use super::writers::{writers, ModelWeights, Writers};
use super::{
    categories, engels_components, knn_graph, leiden, rank, spectral, unit_rows, Category,
    KnnGraph, RankBy, TokenCount, SIGNIFICANT_P,
};
use crate::data::column::RowColumn;
use crate::data::Shard;
use crate::gpu::Gpu;
use crate::sae::forward::{GpuSae, DEFAULT_CAP};
use crate::sae::params::SaeParams;
use crate::sae::pass::{ForwardPass, PassDepth};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Method {
    /// Leiden communities of the graph (CPM or modularity at each --resolution).
    Leiden,
    /// Engels et al.: each feature joined to its top --link-top neighbours with cosine above
    /// --link-cosine; categories are connected components.
    Engels,
    /// Spectral clustering of the graph into --n-clusters groups.
    Spectral,
}

/// The co-occurrence half of the graph.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct CooccurrenceConfig {
    /// Weight of the co-occurrence affinity a_co in each edge, 1 − (1 − a_dec)·(1 − w·a_co).
    pub weight: f64,
    pub partners: PartnerConfig,
}

#[derive(Clone, Debug)]
pub struct CategoriesConfig {
    pub neighbours: usize,
    /// Decoder edges need at least this cosine (None: [`chance_floor`]).
    pub min_cosine: Option<f32>,
    pub method: Method,
    pub quality: LeidenQuality,
    pub resolution: Vec<f64>,
    pub link_top: usize,
    pub link_cosine: f32,
    pub n_clusters: Option<usize>,
    /// With shards: count co-occurrence over all pairs and blend it in (None: decoder alone).
    pub cooccurrence: Option<CooccurrenceConfig>,
    pub seed: u64,
    /// A feature whose category is always studied.
    pub feature: Option<usize>,
    pub samples: usize,
    pub top: usize,
    pub rank_by: RankBy,
    /// Random groups drawn per category size for the significance test.
    pub null_draws: usize,
    pub batch_size: usize,
}

/// What the pipeline reads besides its config.
pub struct CategoriesInputs<'a> {
    pub params: &'a SaeParams,
    pub shards: Arc<Vec<Shard>>,
    pub model: Option<&'a ModelWeights>,
    /// The tokenizer's vocabulary size and a decoder of token ids, when one is given.
    pub vocab: Option<(usize, &'a dyn Fn(i32) -> String)>,
    /// Another SAE of the same d_in to match features with.
    pub across: Option<&'a SaeParams>,
    /// Token families to score the categories against (needs shards with tokens).
    pub families: Option<&'a TokenFamilies>,
    /// The shards' document column, for co-occurrence per document.
    pub documents: Option<&'a RowColumn>,
    /// Joint counts summed from the parts of a split job, used instead of counting on the
    /// shards (`--cooccurrence-from`).
    pub counts: Option<&'a SparseCounts>,
}

/// Everything found, for the report and the printed summary.
pub struct CategoriesResult {
    pub d_in: usize,
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
    /// Unit decoder rows [d_sae, d_in].
    pub unit: Vec<f32>,
    /// Each token family's best-matching category, with precision and recall.
    pub families: Vec<FamilyScore>,
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

    /// Cosine of two features' decoder rows.
    pub fn cosine(&self, a: usize, b: usize) -> f64 {
        let d = self.d_in;
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

/// Passes over the shards the pipeline makes (for a progress bar): the co-occurrence count (one
/// per group of count blocks; none when the counts come from `--cooccurrence-from` parts) and
/// the structure pass.
pub fn shard_passes(config: &CategoriesConfig, d_sae: usize, binding: u64, merged: bool) -> u64 {
    let cooccurrence = match config.cooccurrence {
        Some(c) if !merged => count_passes(binding, d_sae, c.partners.memory_bytes) as u64,
        _ => 0,
    };
    cooccurrence + 1
}

/// The decoder affinity of a pair with cosine `c`: the cosine itself when it reaches the chance
/// floor, else 0. (The angular affinity 1 − arccos(c)/π is ½ for orthogonal rows, so a
/// neighbour barely above chance would weigh more than a strong co-occurrence.)
pub fn decoder_affinity(c: f32, floor: f32) -> f64 {
    if c >= floor {
        f64::from(c).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// The default decoder-cosine floor: the larger of 3/√d_in (three standard deviations of the
/// cosine of two random directions) and √(2 ln d_sae / d_in), about the largest cosine a
/// feature has with any of d_sae random directions. Among thousands of features the first
/// alone is reached by chance a few times per feature (2000 random features in 256 dimensions:
/// 2.7 per feature), and such chance neighbours outweigh real co-occurrence.
pub fn chance_floor(d_in: usize, d_sae: usize) -> f32 {
    let d = d_in.max(1) as f64;
    (3.0 / d.sqrt()).max((2.0 * (d_sae.max(2) as f64).ln() / d).sqrt()) as f32
}

/// The union of the decoder kNN graph's pairs and the co-occurrence partners' pairs, each
/// weighted 1 − (1 − a_dec)·(1 − w·a_co): either kind of evidence alone keeps its strength
/// (features that take turns never co-occur, yet their decoder rows may be close; families of
/// one token share firing, not directions), and w = 0 is the decoder graph alone. The decoder
/// affinity is [`decoder_affinity`]; the co-occurrence affinity is the statistic from the
/// pair's joint count (decoder pairs) or its partner score.
fn union_edges(
    result_pairs: &KnnPairs,
    knn_cooccurrence: Option<&[f64]>,
    partners: Option<&Partners>,
    weight: f64,
    min_cosine: f32,
    cosine: impl Fn(usize, usize) -> f64,
) -> Edges {
    let mut blended: HashMap<(usize, usize), (f64, f64)> = HashMap::new();
    for (e, (&pair, &c)) in result_pairs
        .pairs
        .iter()
        .zip(&result_pairs.cosine)
        .enumerate()
    {
        if pair.0 == pair.1 {
            continue;
        }
        let decoder = decoder_affinity(c, min_cosine);
        let co = knn_cooccurrence.map_or(0.0, |a| a[e]);
        blended.insert(pair, (decoder, co));
    }
    if let Some(p) = partners {
        for i in 0..p.d_sae {
            for (j, s) in p.of(i) {
                let key = (i.min(j), i.max(j));
                let entry = blended.entry(key).or_insert_with(|| {
                    (
                        decoder_affinity(cosine(key.0, key.1) as f32, min_cosine),
                        0.0,
                    )
                });
                entry.1 = entry.1.max(f64::from(s).clamp(0.0, 1.0));
            }
        }
    }
    let mut pairs: Vec<((usize, usize), f64)> = blended
        .into_iter()
        .map(|(pair, (d, c))| (pair, 1.0 - (1.0 - d) * (1.0 - weight * c)))
        .filter(|&(_, w)| w > 0.0)
        .collect();
    pairs.sort_by_key(|&(pair, _)| pair);
    Edges {
        pairs: pairs.iter().map(|&(p, _)| p).collect(),
        weight: pairs.iter().map(|&(_, w)| w).collect(),
    }
}

/// Runs the pipeline. `on_rows` is called with the rows of each batch of every pass over the
/// shards ([`shard_passes`] of them).
pub fn find_categories(
    gpu: &Gpu,
    inputs: &CategoriesInputs<'_>,
    config: &CategoriesConfig,
    mut on_rows: impl FnMut(u64),
) -> anyhow::Result<CategoriesResult> {
    let params = inputs.params;
    let (d_in, d_sae) = (params.d_in, params.d_sae);
    let has_shards = !inputs.shards.is_empty();
    if config.cooccurrence.is_some() && !has_shards && inputs.counts.is_none() {
        bail!("co-occurrence needs shards: it is counted on data");
    }
    let neighbours = config.neighbours.min(d_sae - 1);
    let unit = unit_rows(&params.w_dec, d_in);
    let graph = knn_graph(gpu, &unit, d_in, d_sae, neighbours, config.batch_size)?;
    let min_cosine = config
        .min_cosine
        .unwrap_or_else(|| chance_floor(d_in, d_sae))
        .clamp(-1.0, 1.0);
    let knn_pairs = graph.pairs();
    let sae = has_shards
        .then(|| GpuSae::upload_with_cap(gpu, params, DEFAULT_CAP, config.batch_size))
        .transpose()?;

    // The co-occurrence kNN graph over all pairs, and the decoder pairs' joint counts.
    let counted = match (config.cooccurrence, inputs.counts, &sae) {
        (Some(c), Some(merged), _) => {
            anyhow::ensure!(
                merged.d_sae == d_sae,
                "the co-occurrence parts count {} features but the SAE has {d_sae}",
                merged.d_sae
            );
            Some(partners(
                gpu,
                CountSource::Merged(merged),
                c.partners,
                &knn_pairs.pairs,
                &mut on_rows,
            )?)
        }
        (Some(c), None, Some(sae)) => Some(partners(
            gpu,
            CountSource::Shards {
                sae,
                shards: Arc::clone(&inputs.shards),
                documents: inputs.documents,
                batch_rows: config.batch_size,
            },
            c.partners,
            &knn_pairs.pairs,
            &mut on_rows,
        )?),
        _ => None,
    };
    let knn_cooccurrence: Option<Vec<f64>> = counted.as_ref().map(|p| {
        knn_pairs
            .pairs
            .iter()
            .zip(&p.pair_joint)
            .map(|(&(i, j), &joint)| p.affinity(i, j, joint))
            .collect()
    });
    let weight = config.cooccurrence.map_or(0.0, |c| c.weight);
    let cosine = |a: usize, b: usize| -> f64 {
        unit[a * d_in..(a + 1) * d_in]
            .iter()
            .zip(&unit[b * d_in..(b + 1) * d_in])
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    };
    let edges = union_edges(
        &knn_pairs,
        knn_cooccurrence.as_deref(),
        counted.as_ref(),
        weight,
        min_cosine,
        cosine,
    );

    // The clustering(s): the primary labels, and every level of a Leiden hierarchy.
    let mut levels: Vec<(f64, Vec<usize>)> = Vec::new();
    let graph_name = match &counted {
        Some(p) => format!(
            "the union of the {neighbours}-NN decoder graph (cosine ≥ {min_cosine:.3}) and the {}-NN co-occurrence graph ({:?} per {:?}{}), edges 1 − (1 − decoder)(1 − {:.2}·co-occurrence)",
            p.partners,
            p.config.measure,
            p.config.unit,
            match p.config.unit {
                super::cooccurrence::CooccurrenceUnit::Chunk =>
                    format!(" of {} rows", p.config.chunk_rows),
                super::cooccurrence::CooccurrenceUnit::Row
                | super::cooccurrence::CooccurrenceUnit::Document => String::new(),
            },
            weight
        ),
        None => format!("the {neighbours}-NN decoder graph, edges of cosine ≥ {min_cosine:.3}"),
    };
    let (labels, method) = match config.method {
        Method::Leiden => {
            for &r in &config.resolution {
                levels.push((r, leiden(d_sae, &edges, config.quality, r, config.seed)?));
            }
            (
                levels[0].1.clone(),
                format!(
                    "Leiden ({:?}, resolution {}) on {graph_name}",
                    config.quality, config.resolution[0]
                ),
            )
        }
        Method::Engels => (
            engels_components(&graph, config.link_top, config.link_cosine),
            format!(
                "Engels' graph: top {} neighbours with cosine > {}, connected components",
                config.link_top, config.link_cosine
            ),
        ),
        Method::Spectral => {
            let n = config.n_clusters.unwrap_or(2);
            (
                spectral(d_sae, &edges, n, config.seed)?,
                format!("spectral clustering into {n} clusters on {graph_name}"),
            )
        }
    };
    if levels.is_empty() {
        levels.push((0.0, labels.clone()));
    }
    let mut found = categories(&labels, &unit, d_in);

    // Significance: each category's density against random groups of its size.
    let mut null = NullModel::new(d_sae, &edges, config.null_draws, config.seed);
    for c in found.iter_mut().filter(|c| c.size >= 3) {
        let score = null.score(&c.members);
        c.significant = Some(score.null_p < SIGNIFICANT_P);
        c.null = Some(score);
    }
    // Rank before choosing what to study, so the top categories are the ranking's (Engels'
    // ranking needs the structure: it is re-ranked below).
    rank(&mut found, config.rank_by);

    // The structure of the top categories (and the asked-for feature's) on the shards.
    let studied: Vec<usize> = (0..found.len())
        .filter(|&i| {
            (i < config.top && found[i].size >= 3)
                || config
                    .feature
                    .is_some_and(|f| found[i].members.contains(&f))
        })
        .collect();
    let mut rows_read = None;
    let mut family_counts = None;
    if inputs.families.is_some() && sae.is_none() {
        bail!("token families need shards: specific features are counted on data");
    }
    if let Some(sae) = &sae {
        let pass = ForwardPass::new(gpu, sae, config.batch_size, PassDepth::Codes)?;
        let samples: Vec<CategorySamples> = studied
            .iter()
            .map(|&i| CategorySamples::new(&found[i].members, &params.w_dec, d_in))
            .collect();
        let gathered = gather(
            &pass,
            Arc::clone(&inputs.shards),
            samples,
            Sampling {
                per_category: config.samples,
                seed: config.seed,
            },
            inputs.families,
            &mut on_rows,
        )?;
        if let (Some((vocab, _)), Some(max)) = (inputs.vocab, gathered.max_token) {
            if max as usize >= vocab {
                bail!(
                    "the shards hold token id {max} but the tokenizer's vocabulary has {vocab} ids"
                );
            }
        }
        for (&i, cat) in studied.iter().zip(&gathered.categories) {
            let c = &mut found[i];
            c.structure = analyse(cat, d_in);
            let mut counts: HashMap<i32, usize> = HashMap::new();
            for &t in cat.tokens.iter().filter(|&&t| t >= 0) {
                *counts.entry(t).or_default() += 1;
            }
            let mut counts: Vec<(i32, usize)> = counts.into_iter().collect();
            counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            c.top_tokens = counts
                .into_iter()
                .take(20)
                .map(|(token, count)| TokenCount {
                    token,
                    count,
                    text: inputs.vocab.map(|(_, text)| text(token)),
                })
                .collect();
            if let Some(model) = inputs.model {
                c.writers = Some(category_writers(model, cat, c));
            }
        }
        for c in found.iter_mut() {
            c.fire_counts = Some(c.members.iter().map(|&m| gathered.fire_count[m]).collect());
        }
        if let Some(f) = inputs.families {
            if gathered.max_token.is_none() {
                bail!("token families need shards with a `tokens` tensor: these have none");
            }
            family_counts = Some((f, gathered.fire_count.clone(), gathered.family_fires));
        }
        rows_read = Some(gathered.rows);
    } else if let Some(model) = inputs.model {
        for &i in &studied {
            let cat = CategorySamples::new(&found[i].members, &params.w_dec, d_in);
            let c = &mut found[i];
            c.writers = Some(category_writers(model, &cat, c));
        }
    }
    if config.rank_by == RankBy::Engels {
        rank(&mut found, config.rank_by);
    }
    let family_scores = family_counts
        .map(|(f, fires, family_fires)| score_families(f, &fires, &family_fires, &found))
        .unwrap_or_default();

    let matching = inputs
        .across
        .map(|o| -> anyhow::Result<Matching> {
            let other_unit = unit_rows(&o.w_dec, d_in);
            Ok(match_across(
                gpu,
                &unit,
                &other_unit,
                d_in,
                config.batch_size,
            )?)
        })
        .transpose()?;
    Ok(CategoriesResult {
        d_in,
        d_sae,
        categories: found,
        method,
        graph,
        knn_pairs,
        min_cosine,
        partners: counted,
        knn_cooccurrence,
        edges,
        levels,
        rows_read,
        matching,
        unit,
        families: family_scores,
    })
}

fn category_writers(model: &ModelWeights, cat: &CategorySamples, c: &Category) -> Writers {
    // Logit-lens axes: the reconstructions' principal axes when measured, else the basis.
    let axes: Vec<Vec<f64>> = match &c.structure {
        Some(s) => s.axes.clone(),
        None => cat
            .basis
            .chunks_exact(model.d_model)
            .take(5)
            .map(|r| r.to_vec())
            .collect(),
    };
    writers(model, &cat.basis, &axes)
}
