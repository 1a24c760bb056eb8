//! What the categories pipeline is asked: how the graph is built and clustered, what is
//! studied on data, and the inputs it reads besides its settings.

use std::sync::Arc;

use serde::Serialize;

use super::category::RankBy;
use super::cluster::LeidenQuality;
use super::cooccurrence::{PartnerConfig, SparseCounts};
use super::families::TokenFamilies;
use super::writers::ModelWeights;
use crate::data::column::RowColumn;
use crate::data::Shard;
use crate::gpu::MatmulChoice;
use crate::sae::params::SaeParams;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
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

impl crate::choice::Choice for Method {
    const CHOICES: &'static [(&'static str, Self, &'static str)] = &[
        (
            "leiden",
            Method::Leiden,
            "Leiden communities of the graph (CPM or modularity at each --resolution)",
        ),
        (
            "engels",
            Method::Engels,
            "Engels et al.: each feature joined to its top --link-top neighbours with cosine above --link-cosine; connected components",
        ),
        (
            "spectral",
            Method::Spectral,
            "Spectral clustering of the graph into --n-clusters groups",
        ),
    ];
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
    /// How the dense products run (the kNN graph, and the encoder on the shards).
    pub matmul: MatmulChoice,
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
