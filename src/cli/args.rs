//! Argument groups shared by several commands, flattened into each, and the command line's
//! view of the library's named settings ([`Choice`]s become clap's possible values here, so
//! clap appears nowhere outside src/cli).

use std::path::PathBuf;

use clap::builder::PossibleValue;
use clap::{Args, ValueEnum};

use crate::analysis::categories::cluster::LeidenQuality;
use crate::analysis::categories::config::Method;
use crate::analysis::categories::cooccurrence::{CooccurrenceMeasure, CooccurrenceUnit};
use crate::analysis::categories::RankBy;
use crate::choice::Choice;
use crate::data::parts::Part;
use crate::gpu::{AdapterRequest, BackendChoice, MatmulChoice};
use crate::run::encode::ValueDtype;
use crate::run::inputs::{SaeInputs, Targets};
use crate::run::train::{BDecInit, ExportFormat};
use crate::sae::arch::{Architecture, L0Penalty, ThresholdParam};
use crate::sae::forward::DEFAULT_CAP;

/// Implements clap's `ValueEnum` for settings that list their names as a [`Choice`].
macro_rules! value_enums {
    ($($t:ty),* $(,)?) => {$(
        impl ValueEnum for $t {
            fn value_variants<'a>() -> &'a [Self] {
                static VALUES: std::sync::OnceLock<Vec<$t>> = std::sync::OnceLock::new();
                VALUES.get_or_init(|| <$t as Choice>::CHOICES.iter().map(|c| c.1).collect())
            }

            fn to_possible_value(&self) -> Option<PossibleValue> {
                <$t as Choice>::CHOICES
                    .iter()
                    .find(|c| c.1 == *self)
                    .map(|(name, _, help)| PossibleValue::new(*name).help(*help))
            }
        }
    )*};
}

value_enums!(
    MatmulChoice,
    Architecture,
    L0Penalty,
    ThresholdParam,
    BDecInit,
    ExportFormat,
    ValueDtype,
    BackendChoice,
    LeidenQuality,
    Method,
    RankBy,
    CooccurrenceMeasure,
    CooccurrenceUnit,
);

/// Adapter selection shared by every command that runs on the GPU.
#[derive(Args, Debug, Clone, Default)]
pub struct GpuArgs {
    /// Adapter to use: an index from `sae adapters` or part of its name.
    #[arg(long, env = "SAE_ADAPTER", global = true)]
    pub adapter: Option<String>,
    /// Graphics API to go through.
    #[arg(long, value_enum, global = true)]
    pub backend: Option<BackendChoice>,
    /// Treat one storage binding as at most this many bytes (below the adapter's own limit):
    /// dictionaries past it are split into blocks of latents. For testing the split path.
    #[arg(
        long,
        env = "SAE_MAX_BINDING_BYTES",
        global = true,
        hide_short_help = true
    )]
    pub max_binding_bytes: Option<u64>,
}

impl GpuArgs {
    pub fn request(&self) -> AdapterRequest {
        AdapterRequest {
            adapter: self.adapter.clone(),
            backend: self.backend,
            max_binding_override: self.max_binding_bytes,
        }
    }

    pub fn open(&self) -> anyhow::Result<crate::gpu::Gpu> {
        Ok(crate::gpu::Gpu::new(&self.request())?)
    }
}

/// An SAE, the shards to run it over, and which part of them (the analysis commands).
#[derive(Args, Debug)]
pub struct InputArgs {
    /// SAE directory: sparsify, SAELens, or a `sae train` run directory.
    pub sae: Option<PathBuf>,
    /// Activation shards: files, directories or glob patterns.
    pub shards: Vec<PathBuf>,
    /// A sparsify run saved for several hookpoints: the one to use (its subdirectory).
    #[arg(long)]
    pub hookpoint: Option<String>,
    /// Name of the activation tensor in the shards.
    #[arg(long, default_value = "activations")]
    pub tensor: String,
    /// Process only part I of N (0-based) of the shards, sorted by path and split into N
    /// groups of whole shards balanced by rows; the command's `merge` (or, for categories,
    /// --cooccurrence-from) combines the parts into exactly one pass's result.
    #[arg(long, value_name = "I/N")]
    pub part: Option<Part>,
}

impl InputArgs {
    /// The inputs of a job on `gpu`'s adapter with the encoder GEMM as `matmul` says; `usage`
    /// is the error without an SAE.
    pub fn inputs(
        &self,
        gpu: &GpuArgs,
        matmul: MatmulChoice,
        usage: &str,
    ) -> anyhow::Result<SaeInputs> {
        let Some(sae) = self.sae.clone() else {
            anyhow::bail!("{usage}");
        };
        Ok(SaeInputs {
            sae,
            hookpoint: self.hookpoint.clone(),
            shards: self.shards.clone(),
            tensor: self.tensor.clone(),
            targets: None,
            part: self.part,
            adapter: gpu.request(),
            matmul,
        })
    }
}

/// A transcoder's targets, which its evaluation compares the predictions with.
#[derive(Args, Debug)]
pub struct TargetArgs {
    /// A transcoder's targets: files, directories or globs pairing with the shards file for
    /// file, row for row.
    #[arg(long, num_args = 1.., value_name = "TARGETS")]
    pub target: Vec<PathBuf>,
    /// The targets' tensor: in the --target files, or without them in the shards themselves
    /// (e.g. --tensor mlp_in --target-tensor mlp_out).
    #[arg(long, value_name = "NAME")]
    pub target_tensor: Option<String>,
}

impl TargetArgs {
    /// The targets given, if any; `tensor` is the shards' (the targets' too unless named).
    pub fn targets(&self, tensor: &str) -> Option<Targets> {
        if self.target.is_empty() && self.target_tensor.is_none() {
            return None;
        }
        Some(Targets {
            files: self.target.clone(),
            tensor: self
                .target_tensor
                .clone()
                .unwrap_or_else(|| tensor.to_string()),
        })
    }
}

/// How SAEs run over shards: batch rows, the cap of thresholded SAEs, the encoder GEMM.
#[derive(Args, Debug)]
pub struct PassArgs {
    /// Rows per GPU batch.
    #[arg(long, default_value_t = 4096)]
    pub batch_size: usize,
    /// ReLU / JumpReLU SAEs: latents kept per row (the rest are counted as dropped).
    #[arg(long, default_value_t = DEFAULT_CAP)]
    pub cap: usize,
    /// auto: f16 operands on the matrix units (tensor cores) where the adapter has cooperative
    /// matrices, f32 elsewhere, as PyTorch's autocast would; f32; or f16 (an error on an
    /// adapter without them).
    #[arg(long, value_enum, default_value = "auto")]
    pub matmul: MatmulChoice,
}

/// How the encoder GEMM runs (every command that runs the forward pass).
#[derive(Args, Debug, Clone, Copy)]
pub struct MatmulArgs {
    /// auto: f16 operands on the matrix units (tensor cores) where the adapter has cooperative
    /// matrices, f32 elsewhere, as PyTorch's autocast would; f32; or f16 (an error on an
    /// adapter without them).
    #[arg(long, value_enum, default_value = "auto")]
    pub matmul: MatmulChoice,
}
