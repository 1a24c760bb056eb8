//! What defines the model a run trains: the architecture, k, d_sae and the settings particular
//! to each architecture. These are `config.json`'s keys (flattened into the run's
//! configuration), so their names are the interface; each architecture reads only its own.

use serde::{Deserialize, Serialize};

use crate::choice::Choice;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    #[default]
    TopK,
    BatchTopK,
    Matryoshka,
    Relu,
    JumpRelu,
}

impl Choice for Architecture {
    const CHOICES: &'static [(&'static str, Self, &'static str)] = &[
        (
            "topk",
            Architecture::TopK,
            "The k largest ReLU pre-activations of each row (Gao et al. 2024)",
        ),
        (
            "batchtopk",
            Architecture::BatchTopK,
            "The k·B largest ReLU pre-activations of the whole batch of B rows (Bussmann et al. 2024)",
        ),
        (
            "matryoshka",
            Architecture::Matryoshka,
            "BatchTopK whose nested prefixes of the dictionary each reconstruct the input too (Bussmann et al. 2025)",
        ),
        (
            "relu",
            Architecture::Relu,
            "ReLU with the decoder-norm weighted L1 penalty (Anthropic's April 2024 update; SAELens standard)",
        ),
        (
            "jumprelu",
            Architecture::JumpRelu,
            "A trained threshold per latent with an L0 penalty (Rajamanoharan et al. 2024; SAELens jumprelu)",
        ),
    ];
}

/// The model of a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModelConfig {
    /// `topk` for runs written before architectures were recorded.
    #[serde(default)]
    pub architecture: Architecture,
    #[serde(flatten)]
    pub settings: ArchSettings,
    /// Latents kept per row; for the ReLU family, the cap on the codes kept per row.
    pub k: usize,
    pub d_sae: usize,
    /// A transcoder: the decoder writes the run's targets, not its inputs.
    #[serde(default)]
    pub transcoder: bool,
    /// A skip-transcoder: a linear path W_skip from input to output, trained with the rest.
    #[serde(default)]
    pub skip: bool,
}

/// Every architecture's own settings, each under the key its flag names (`--l1-coefficient` is
/// `l1_coefficient`). Missing keys (configurations written before the architecture existed)
/// read as zero.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ArchSettings {
    #[serde(flatten)]
    pub matryoshka: MatryoshkaSettings,
    #[serde(flatten)]
    pub relu: ReluSettings,
    #[serde(flatten)]
    pub penalized: PenalizedSettings,
    #[serde(flatten)]
    pub jumprelu: JumpReluSettings,
}

/// Matryoshka's prefix widths as given (empty: the default groups).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MatryoshkaSettings {
    #[serde(default)]
    pub matryoshka_widths: Vec<usize>,
}

/// ReLU + L1: the penalty's coefficient λ, reached linearly over `l1_warmup_steps`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ReluSettings {
    #[serde(default)]
    pub l1_coefficient: f64,
    #[serde(default)]
    pub l1_warmup_steps: u64,
}

/// The ReLU family (ReLU + L1, JumpReLU): the largest global gradient norm (`None`: no
/// clipping).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct PenalizedSettings {
    #[serde(default)]
    pub clip_grad_norm: Option<f64>,
}

/// JumpReLU: the L0 penalty and its coefficient λ (reached linearly over `l0_warmup_steps`),
/// the estimators' bandwidth ε, θ at the start and what the optimiser moves.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct JumpReluSettings {
    #[serde(default)]
    pub l0_coefficient: f64,
    #[serde(default)]
    pub l0_warmup_steps: u64,
    #[serde(default)]
    pub l0_penalty: L0Penalty,
    #[serde(default)]
    pub jumprelu_bandwidth: f64,
    #[serde(default)]
    pub jumprelu_init_threshold: f64,
    #[serde(default)]
    pub jumprelu_threshold_param: ThresholdParam,
}

/// The ReLU family's defaults, SAELens': the penalty's coefficient λ (L1 and L0 alike), the
/// largest global gradient norm, JumpReLU's bandwidth ε and initial threshold θ₀.
pub const DEFAULT_PENALTY_COEFFICIENT: f64 = 1.0;
pub const DEFAULT_CLIP_GRAD_NORM: f64 = 1.0;
pub const DEFAULT_JUMPRELU_BANDWIDTH: f64 = 0.05;
pub const DEFAULT_JUMPRELU_INIT_THRESHOLD: f64 = 0.01;

impl ArchSettings {
    /// `sae train`'s defaults for a run of `steps` steps: λ 1 reached over 5% of the steps,
    /// clipping at 1, ε 0.05, θ₀ 0.01, the step penalty on θ itself, Matryoshka's default
    /// prefixes.
    pub fn defaults(steps: u64) -> ArchSettings {
        let warmup = (steps / 20).max(1);
        ArchSettings {
            matryoshka: MatryoshkaSettings::default(),
            relu: ReluSettings {
                l1_coefficient: DEFAULT_PENALTY_COEFFICIENT,
                l1_warmup_steps: warmup,
            },
            penalized: PenalizedSettings {
                clip_grad_norm: Some(DEFAULT_CLIP_GRAD_NORM),
            },
            jumprelu: JumpReluSettings {
                l0_coefficient: DEFAULT_PENALTY_COEFFICIENT,
                l0_warmup_steps: warmup,
                l0_penalty: L0Penalty::Step,
                jumprelu_bandwidth: DEFAULT_JUMPRELU_BANDWIDTH,
                jumprelu_init_threshold: DEFAULT_JUMPRELU_INIT_THRESHOLD,
                jumprelu_threshold_param: ThresholdParam::Direct,
            },
        }
    }
}

/// JumpReLU's sparsity penalty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum L0Penalty {
    /// λ·mean_b Σᵢ H(hᵢ − θᵢ) (DeepMind; SAELens' default).
    #[default]
    Step,
    /// λ·mean_b Σᵢ tanh(4·fᵢ·‖W_dec,i‖) (Anthropic, January 2025).
    Tanh,
}

impl Choice for L0Penalty {
    const CHOICES: &'static [(&'static str, Self, &'static str)] = &[
        (
            "step",
            L0Penalty::Step,
            "λ·mean_b Σᵢ H(hᵢ − θᵢ) (DeepMind; SAELens' default)",
        ),
        (
            "tanh",
            L0Penalty::Tanh,
            "λ·mean_b Σᵢ tanh(4·fᵢ·‖W_dec,i‖) (Anthropic, January 2025)",
        ),
    ];
}

/// What JumpReLU's optimiser moves: θ itself, kept non-negative (SAELens since its issue
/// #494: Adam moves log θ by about lr per step, so a small θ₀ barely moves), or log θ
/// (DeepMind's paper).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ThresholdParam {
    #[default]
    Direct,
    Log,
}

impl Choice for ThresholdParam {
    const CHOICES: &'static [(&'static str, Self, &'static str)] = &[
        (
            "direct",
            ThresholdParam::Direct,
            "θ itself, kept non-negative (SAELens)",
        ),
        ("log", ThresholdParam::Log, "log θ (DeepMind's paper)"),
    ];
}
