//! The architectures `sae train` trains, and what each changes in a training step. All share
//! the weights and the backward pass, which follows each row's kept entries. BatchTopK adds a
//! selection over the whole batch after each row's candidates and an inference threshold θ
//! (exported as a SAELens `jumprelu` SAE with θ for every latent); Matryoshka adds the nested
//! prefixes' losses; ReLU + L1 keeps up to a cap of positive codes per row, adds the L1
//! penalty's gradients, drops the unit-norm constraint and clips the gradient norm; JumpReLU
//! does the same with a trained threshold per latent and an L0 penalty
//! (`Trainer::with_batch_topk`, `with_matryoshka`, `with_l1`, `with_jumprelu`).

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
    /// BatchTopK whose nested prefixes of the dictionary each reconstruct the input too
    /// (Bussmann et al. 2025); the loss sums the prefixes' FVUs.
    #[value(name = "matryoshka")]
    Matryoshka,
    /// ReLU with the decoder-norm weighted L1 penalty (Anthropic's April 2024 update; SAELens
    /// `standard`).
    #[value(name = "relu")]
    Relu,
    /// A trained threshold per latent with an L0 penalty, through straight-through estimators
    /// (Rajamanoharan et al. 2024; SAELens `jumprelu`).
    #[value(name = "jumprelu")]
    JumpRelu,
}

/// JumpReLU's sparsity penalty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum L0Penalty {
    /// λ·mean_b Σᵢ H(hᵢ − θᵢ) (DeepMind; SAELens' default).
    #[default]
    Step,
    /// λ·mean_b Σᵢ tanh(4·fᵢ·‖W_dec,i‖) (Anthropic, January 2025).
    Tanh,
}

/// The scale inside the tanh penalty (SAELens' `jumprelu_tanh_scale`).
pub const TANH_SCALE: f32 = 4.0;

/// The ReLU family's defaults, SAELens': the penalty's coefficient λ (L1 and L0 alike), the
/// largest global gradient norm, JumpReLU's bandwidth ε and initial threshold θ₀.
pub const DEFAULT_PENALTY_COEFFICIENT: f64 = 1.0;
pub const DEFAULT_CLIP_GRAD_NORM: f64 = 1.0;
pub const DEFAULT_JUMPRELU_BANDWIDTH: f64 = 0.05;
pub const DEFAULT_JUMPRELU_INIT_THRESHOLD: f64 = 0.01;

/// What JumpReLU's optimiser moves: θ itself, kept non-negative (SAELens since its issue
/// #494: Adam moves log θ by about lr per step, so a small θ₀ barely moves), or log θ
/// (DeepMind's paper).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdParam {
    #[default]
    Direct,
    Log,
}

/// θ ← β·θ + (1 − β)·(smallest kept value) every step (SAELens), starting from the first
/// step's value (dictionary_learning) instead of SAELens' 0.
pub const THETA_BETA: f32 = 0.99;

impl Architecture {
    pub fn name(self) -> &'static str {
        match self {
            Architecture::TopK => "topk",
            Architecture::BatchTopK => "batchtopk",
            Architecture::Matryoshka => "matryoshka",
            Architecture::Relu => "relu",
            Architecture::JumpRelu => "jumprelu",
        }
    }

    /// Whether the selection is over the whole batch (with an inference threshold θ).
    pub fn batch_selection(self) -> bool {
        matches!(self, Architecture::BatchTopK | Architecture::Matryoshka)
    }

    /// The ReLU family (ReLU + L1, JumpReLU): every code above a threshold up to a cap, SAELens'
    /// mean squared error, a penalty instead of k, no unit-norm constraint, gradient clipping.
    pub fn penalized(self) -> bool {
        matches!(self, Architecture::Relu | Architecture::JumpRelu)
    }

    /// Entries each row offers to the selection: k for TopK; for BatchTopK each row's 4k
    /// largest (at most 512 and d_sae), of which the batch keeps k·B in all. A row can hold at
    /// most this many of the batch's kept entries; beyond it, its smallest are dropped.
    pub fn row_candidates(self, k: usize, d_sae: usize) -> usize {
        match self {
            Architecture::TopK => k,
            Architecture::BatchTopK | Architecture::Matryoshka => {
                (4 * k).min(MAX_K).min(d_sae).max(k)
            }
            // ReLU and JumpReLU keep every code above the threshold up to the cap (`k`).
            Architecture::Relu | Architecture::JumpRelu => k.min(d_sae),
        }
    }
}

/// Matryoshka's prefix widths when none are given: the groups [d/16, d/16, d/8, d/4, d/2] of
/// the reference runs (REFERENCE.md), as nested widths d/16, d/8, d/4, d/2 and d.
pub fn default_matryoshka_widths(d_sae: usize) -> Vec<usize> {
    let mut widths: Vec<usize> = [16, 8, 4, 2, 1]
        .iter()
        .map(|f| d_sae / f)
        .filter(|&w| w > 0)
        .collect();
    widths.dedup();
    widths
}

/// The prefix widths of `--matryoshka-widths` checked (strictly increasing, at most d_sae)
/// with the full width appended when missing.
pub fn matryoshka_widths(given: &[usize], d_sae: usize) -> Result<Vec<usize>, String> {
    if given.is_empty() {
        return Ok(default_matryoshka_widths(d_sae));
    }
    if given.contains(&0) || given.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "--matryoshka-widths {given:?}: widths must be positive and strictly increasing"
        ));
    }
    if let Some(&last) = given.last() {
        if last > d_sae {
            return Err(format!(
                "--matryoshka-widths {given:?}: {last} exceeds the dictionary size d_sae = {d_sae}"
            ));
        }
    }
    let mut widths = given.to_vec();
    if widths.last() != Some(&d_sae) {
        widths.push(d_sae);
    }
    Ok(widths)
}
