//! The architectures `sae train` trains, one module each, every one implementing [`ArchSpec`]
//! (and, for what it adds to the training step, the trainer's
//! [`StepHooks`](crate::sae::trainer::StepHooks)). All share the weights, the forward pass
//! and the backward pass through each row's kept entries.
//!
//! Adding an architecture: a file here implementing `ArchSpec`, a variant of
//! [`Architecture`] with its name (settings.rs, beside any settings of its own), and its line
//! in [`Architecture::spec`] (registry.rs). Nothing else names architectures.
//!
//! - `topk`: the k largest per row (the trainer's own step).
//! - `batch_topk`, `matryoshka`: a selection over the whole batch (`batch_selection`), and
//!   Matryoshka's nested prefixes.
//! - `relu`, `jumprelu`: the ReLU family (`penalized`): SAELens' MSE, a penalty weighted by
//!   the decoder norms, clipping; JumpReLU's trained thresholds.

mod batch_selection;
pub mod batch_topk;
mod build;
pub mod jumprelu;
pub mod matryoshka;
mod penalized;
mod registry;
pub mod relu;
mod settings;
mod spec;
pub mod topk;

pub use batch_selection::THETA_BETA;
pub use build::{build_trainer, TrainerOptions};
pub use settings::{
    ArchSettings, Architecture, JumpReluSettings, L0Penalty, MatryoshkaSettings, ModelConfig,
    PenalizedSettings, ReluSettings, ThresholdParam, DEFAULT_CLIP_GRAD_NORM,
    DEFAULT_JUMPRELU_BANDWIDTH, DEFAULT_JUMPRELU_INIT_THRESHOLD, DEFAULT_PENALTY_COEFFICIENT,
};
pub use spec::{ArchResume, ArchSpec, AttachError, SparsityAxis};
