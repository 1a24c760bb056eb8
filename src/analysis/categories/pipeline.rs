//! The whole `sae categories` pipeline as one function from a config (super::config) to a result: the graph
//! (`edges`: decoder-cosine kNN, with shards the co-occurrence kNN over all pairs, their union
//! with blended weights) → clusters → significance against chance → ranking → structure on
//! data and writers (`study`) → what the report shows (`views`). Writing the files is the job
//! layer's (run::outputs::categories_report).

use anyhow::bail;

use super::category::{categories, rank, RankBy, SIGNIFICANT_P};
use super::cluster::{engels_components, leiden, spectral};
use super::config::{CategoriesConfig, CategoriesInputs, Method};
use super::cooccurrence::count_passes;
use super::edges::{build_graph, Graph};
use super::graph::{match_across, unit_rows};
use super::null::NullModel;
use super::result::CategoriesResult;
use super::study::{score, study};
use super::views;
use crate::gpu::Gpu;
use crate::sae::forward::{GpuSae, DEFAULT_CAP};

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

/// Runs the pipeline. `on_rows` is called with the rows of each batch of every pass over the
/// shards ([`shard_passes`] of them).
pub fn find_categories(
    gpu: &Gpu,
    inputs: &CategoriesInputs<'_>,
    config: &CategoriesConfig,
    mut on_rows: impl FnMut(u64),
) -> anyhow::Result<CategoriesResult> {
    let params = inputs.params;
    // Decoder rows (and the reconstructions' subspaces) are d_out wide: d_in for an SAE.
    let (d_in, d_out, d_sae) = (params.d_in, params.d_out(), params.d_sae);
    let has_shards = !inputs.shards.is_empty();
    if config.cooccurrence.is_some() && !has_shards && inputs.counts.is_none() {
        bail!("co-occurrence needs shards: it is counted on data");
    }
    let sae = match has_shards {
        true => {
            let mut sae = GpuSae::upload_with_cap(gpu, params, DEFAULT_CAP, config.batch_size)?;
            sae.set_matmul(gpu, gpu.matmul(config.matmul)?)?;
            Some(sae)
        }
        false => None,
    };
    let graph = build_graph(gpu, inputs, config, sae.as_ref(), &mut on_rows)?;
    let (levels, method) = cluster(d_sae, &graph, config)?;
    let mut found = categories(&levels[0].1, &graph.unit, d_out);
    // Significance: each category's density against random groups of its size.
    let mut null = NullModel::new(d_sae, &graph.edges, config.null_draws, config.seed);
    for c in found.iter_mut().filter(|c| c.size >= 3) {
        let score = null.score(&c.members);
        c.significant = Some(score.null_p < SIGNIFICANT_P);
        c.null = Some(score);
    }
    // Rank before choosing what to study, so the top categories are the ranking's (Engels'
    // ranking needs the structure: it is re-ranked below).
    rank(&mut found, config.rank_by);
    let studied = study(gpu, inputs, config, sae.as_ref(), &mut found, &mut on_rows)?;
    if config.rank_by == RankBy::Engels {
        rank(&mut found, config.rank_by);
    }
    let families = score(inputs.families, studied.family_counts, &found);
    let matching = inputs
        .across
        .map(|o| {
            match_across(
                gpu,
                &graph.unit,
                &unit_rows(&o.w_dec, d_out),
                d_out,
                config.batch_size,
                gpu.matmul(config.matmul)?,
            )
        })
        .transpose()?;
    Ok(CategoriesResult {
        d_in,
        d_out,
        d_sae,
        categories: found,
        method,
        map: views::dictionary_map(d_sae, &graph.knn_pairs, config.seed)?,
        knn_cooccurrence_stats: graph
            .partners
            .as_ref()
            .map(|p| views::knn_cooccurrence(&graph.knn_pairs, p)),
        hierarchy: views::hierarchy(&levels),
        across: matching
            .as_ref()
            .zip(inputs.across)
            .map(|(m, o)| views::across(m, d_sae, o.d_sae)),
        graph: graph.knn,
        knn_pairs: graph.knn_pairs,
        min_cosine: graph.min_cosine,
        partners: graph.partners,
        knn_cooccurrence: graph.knn_cooccurrence,
        edges: graph.edges,
        levels,
        rows_read: studied.rows_read,
        matching,
        unit: graph.unit,
        families,
    })
}

/// One clustering: (resolution, each feature's label).
type Labels = (f64, Vec<usize>);

/// The clustering(s): every level of a Leiden hierarchy (the first is the primary one), or
/// Engels' components, or spectral clusters; and a sentence saying how.
fn cluster(
    d_sae: usize,
    graph: &Graph,
    config: &CategoriesConfig,
) -> anyhow::Result<(Vec<Labels>, String)> {
    let name = &graph.name;
    match config.method {
        Method::Leiden => {
            let mut levels = Vec::new();
            for &r in &config.resolution {
                let labels = leiden(d_sae, &graph.edges, config.quality, r, config.seed)?;
                levels.push((r, labels));
            }
            let method = format!(
                "Leiden ({:?}, resolution {}) on {name}",
                config.quality, config.resolution[0]
            );
            Ok((levels, method))
        }
        Method::Engels => {
            let labels = engels_components(&graph.knn, config.link_top, config.link_cosine);
            let method = format!(
                "Engels' graph: top {} neighbours with cosine > {}, connected components",
                config.link_top, config.link_cosine
            );
            Ok((vec![(0.0, labels)], method))
        }
        Method::Spectral => {
            let n = config.n_clusters.unwrap_or(2);
            let labels = spectral(d_sae, &graph.edges, n, config.seed)?;
            let method = format!("spectral clustering into {n} clusters on {name}");
            Ok((vec![(0.0, labels)], method))
        }
    }
}
