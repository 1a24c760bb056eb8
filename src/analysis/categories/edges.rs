//! The graph the categories are clustered from: the decoder-cosine kNN graph, and with
//! shards (or the counts of a split job) the co-occurrence kNN graph over all pairs, their
//! union with blended weights.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::bail;

use super::config::{CategoriesConfig, CategoriesInputs};
use super::cooccurrence::{partners, CooccurrenceUnit, CountSource, Partners};
use super::graph::{knn_graph, unit_rows, Edges, KnnGraph, KnnPairs};
use crate::gpu::Gpu;
use crate::sae::forward::GpuSae;

/// The graph stage's results.
pub struct Graph {
    /// Unit decoder rows [d_sae, d_out].
    pub unit: Vec<f32>,
    pub knn: KnnGraph,
    pub knn_pairs: KnnPairs,
    pub min_cosine: f32,
    /// The co-occurrence partners, when counted.
    pub partners: Option<Partners>,
    /// Per kNN pair, the co-occurrence affinity when counted.
    pub knn_cooccurrence: Option<Vec<f64>>,
    /// What the clustering sees.
    pub edges: Edges,
    /// A phrase naming the graph, for the method's description.
    pub name: String,
}

impl Graph {
    /// Cosine of two features' decoder rows.
    pub fn cosine(&self, a: usize, b: usize) -> f64 {
        let d = self.unit.len() / self.knn.d_sae.max(1);
        self.unit[a * d..(a + 1) * d]
            .iter()
            .zip(&self.unit[b * d..(b + 1) * d])
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    }
}

/// The decoder kNN graph, the co-occurrence counts when asked for, and their union.
pub fn build_graph(
    gpu: &Gpu,
    inputs: &CategoriesInputs<'_>,
    config: &CategoriesConfig,
    sae: Option<&GpuSae>,
    on_rows: &mut dyn FnMut(u64),
) -> anyhow::Result<Graph> {
    let params = inputs.params;
    // Decoder rows live where the decoder writes: d_in for an SAE, d_out for a transcoder.
    let (d_out, d_sae) = (params.d_out(), params.d_sae);
    let neighbours = config.neighbours.min(d_sae - 1);
    let unit = unit_rows(&params.w_dec, d_out);
    let knn = knn_graph(
        gpu,
        &unit,
        d_out,
        d_sae,
        neighbours,
        config.batch_size,
        gpu.matmul(config.matmul)?,
    )?;
    let min_cosine = config
        .min_cosine
        .unwrap_or_else(|| chance_floor(d_out, d_sae))
        .clamp(-1.0, 1.0);
    let knn_pairs = knn.pairs();
    let counted = count_partners(gpu, inputs, config, sae, &knn_pairs, on_rows)?;
    let knn_cooccurrence: Option<Vec<f64>> = counted.as_ref().map(|p| {
        knn_pairs
            .pairs
            .iter()
            .zip(&p.pair_joint)
            .map(|(&(i, j), &joint)| p.affinity(i, j, joint))
            .collect()
    });
    let weight = config.cooccurrence.map_or(0.0, |c| c.weight);
    let mut graph = Graph {
        unit,
        knn,
        knn_pairs,
        min_cosine,
        partners: None,
        knn_cooccurrence,
        edges: Edges::default(),
        name: String::new(),
    };
    graph.edges = union_edges(
        &graph.knn_pairs,
        graph.knn_cooccurrence.as_deref(),
        counted.as_ref(),
        weight,
        min_cosine,
        |a, b| graph.cosine(a, b),
    );
    graph.name = graph_name(neighbours, min_cosine, counted.as_ref(), weight);
    graph.partners = counted;
    Ok(graph)
}

/// The co-occurrence kNN graph over all pairs and the decoder pairs' joint counts: counted on
/// the shards, or from the summed counts of a split job.
fn count_partners(
    gpu: &Gpu,
    inputs: &CategoriesInputs<'_>,
    config: &CategoriesConfig,
    sae: Option<&GpuSae>,
    knn_pairs: &KnnPairs,
    on_rows: &mut dyn FnMut(u64),
) -> anyhow::Result<Option<Partners>> {
    let d_sae = inputs.params.d_sae;
    let Some(c) = config.cooccurrence else {
        return Ok(None);
    };
    let source = match (inputs.counts, sae) {
        (Some(merged), _) => {
            anyhow::ensure!(
                merged.d_sae == d_sae,
                "the co-occurrence parts count {} features but the SAE has {d_sae}",
                merged.d_sae
            );
            CountSource::Merged(merged)
        }
        (None, Some(sae)) => CountSource::Shards {
            sae,
            shards: Arc::clone(&inputs.shards),
            documents: inputs.documents,
            batch_rows: config.batch_size,
        },
        (None, None) => bail!("co-occurrence needs shards: it is counted on data"),
    };
    Ok(Some(partners(
        gpu,
        source,
        c.partners,
        &knn_pairs.pairs,
        on_rows,
    )?))
}

/// How the method's description names the graph.
fn graph_name(
    neighbours: usize,
    min_cosine: f32,
    counted: Option<&Partners>,
    weight: f64,
) -> String {
    match counted {
        Some(p) => format!(
            "the union of the {neighbours}-NN decoder graph (cosine ≥ {min_cosine:.3}) and the {}-NN co-occurrence graph ({:?} per {:?}{}), edges 1 − (1 − decoder)(1 − {:.2}·co-occurrence)",
            p.partners,
            p.config.measure,
            p.config.unit,
            match p.config.unit {
                CooccurrenceUnit::Chunk => format!(" of {} rows", p.config.chunk_rows),
                CooccurrenceUnit::Row | CooccurrenceUnit::Document => String::new(),
            },
            weight
        ),
        None => format!("the {neighbours}-NN decoder graph, edges of cosine ≥ {min_cosine:.3}"),
    }
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
pub fn union_edges(
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
