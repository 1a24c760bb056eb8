//! Training an SAE on the GPU: one optimiser step recorded as part of a single submission
//! (`step.rs`), the state it updates, and the figures it reads back.
//!
//! A step is recorded into a caller's recorder: a [`Feed`] uploads each batch once and submits
//! the steps of every trainer that shares it (a sweep) together. Nothing is allocated and
//! nothing waits in a steady-state step: the launches reuse their parameter buffers and bind
//! groups (the feed's `LaunchCache`), and the step's metrics are copied into a ring of mapped
//! buffers that the host reads a few steps later ([`Trainer::ready_metrics`]). What an
//! architecture changes in the step comes in through [`StepHooks`] (src/sae/arch).
//!
//! - `step.rs`: the step itself. `gpu_state.rs`: the trainer and what it holds.
//! - `hooks.rs`: what an architecture may add to the step. `auxk.rs`: AuxK's buffers.
//! - `state.rs`: gradients, Adam moments and the `stats` slots. `metrics.rs`: the read-back
//!   ring. `feed.rs`: one batch for several trainers.

mod auxk;
mod feed;
mod gpu_state;
mod hooks;
mod metrics;
mod state;
mod step;

pub use auxk::AuxKConfig;
pub use feed::{Feed, MAX_IN_FLIGHT};
pub use gpu_state::{Trainer, TrainerSnapshot};
pub use hooks::{Entries, StepContext, StepHooks, TopKStep};
pub use metrics::StepMetrics;
pub use state::{slot, BlockState, ParamState};
pub use step::{MemberStep, Upload};
