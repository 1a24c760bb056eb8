//! The architectures `sae train` trains, and what each changes in a training step. TopK and
//! BatchTopK share the weights, the backward pass (which follows the kept entries) and AuxK;
//! BatchTopK adds a selection over the whole batch after each row's candidates and an
//! inference threshold θ, and is exported as a SAELens `jumprelu` SAE with θ for every latent.

use serde::{Deserialize, Serialize};

use crate::gpu::kernels::topk::MAX_K;

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// The k largest ReLU pre-activations of each row (Gao et al. 2024).
    #[default]
    #[value(name = "topk")]
    TopK,
    /// The k·B largest ReLU pre-activations of the whole batch of B rows (Bussmann et al. 2024).
    #[value(name = "batchtopk")]
    BatchTopK,
}

/// θ ← β·θ + (1 − β)·(smallest kept value), every step from θ = 0 (SAELens).
pub const THETA_BETA: f32 = 0.99;

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::TopK => "topk",
            Architecture::BatchTopK => "batchtopk",
        }
    }

    /// Entries each row offers to the selection: k for TopK; for BatchTopK each row's 4k
    /// largest (at most 512 and d_sae), of which the batch keeps k·B in all. A row can hold at
    /// most this many of the batch's kept entries; beyond it, its smallest are dropped.
    pub fn row_candidates(self, k: usize, d_sae: usize) -> usize {
        match self {
            Architecture::TopK => k,
            Architecture::BatchTopK => (4 * k).min(MAX_K).min(d_sae).max(k),
        }
    }
}
