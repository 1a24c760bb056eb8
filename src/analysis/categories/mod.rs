//! Feature categories: which features of a dictionary belong together, and the structure
//! that produces each group (Engels et al. 2024, "Not All Language Model Features Are
//! Linear"; Li, Michaud, Tegmark et al. 2024, "The Geometry of Concepts").
//!
//! 1. [`graph`]: the decoder-cosine kNN graph on the GPU, angular affinities.
//!    [`cooccurrence`]: optionally, how often features fire in the same chunks of rows,
//!    blended into the graph's affinities.
//! 2. [`cluster`]: Leiden (default, several resolutions give a hierarchy), Engels' graph
//!    components, spectral clustering.
//! 3. [`shape`]: per category, the participation ratio of the members' unit decoder rows,
//!    PR = (Σσᵢ²)² / Σσᵢ⁴, and the structure score m − PR: how many fewer dimensions the
//!    members span than their count.
//! 4. [`structure`]: on data, the reconstructions from the category's features, PCA, Engels'
//!    mixture and separability indices, a circle fit, and the cyclic order.
//! 5. [`writers`]: the model weights that write the category's subspace, and its logit lens.
//! 6. [`pipeline`]: the stages in order, from a configuration to a [`CategoriesResult`]
//!    (`edges`: the graph; `study`: the structure on data; `views`: what the report shows
//!    besides the categories). The report itself is the job layer's
//!    (run::outputs::categories_report).

mod category;
pub mod cluster;
pub mod config;
pub mod cooccurrence;
mod edges;
pub mod families;
pub mod gather;
pub mod graph;
pub mod null;
pub mod pipeline;
mod result;
pub mod shape;
pub mod structure;
mod study;
mod views;
pub mod writers;

pub use category::{categories, rank, Category, RankBy, TokenCount, SIGNIFICANT_P};
pub use cluster::{engels_components, leiden, spectral};
pub use graph::{knn_graph, unit_rows, KnnGraph};
pub use result::{Across, CategoriesResult, KnnCooccurrence, Level, MemberTie};
pub use shape::{category_shape, CategoryShape};
