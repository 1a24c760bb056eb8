//! What every analysis job starts from: an SAE (any layout this project reads), the shards it
//! runs over (checked against its d_in) and a transcoder's targets beside them, this part's
//! share of them when the job is split, and the GPU with the SAE uploaded.

use std::path::PathBuf;

use crate::data::parts::{split, Part, PartInfo};
use crate::data::{check_pairs, expand_inputs, open_shards, Shard};
use crate::gpu::{AdapterRequest, Gpu, MatmulChoice};
use crate::sae::formats::{load_sae_at, LoadedSae};
use crate::sae::forward::GpuSae;

/// An SAE and the shards to run it over.
#[derive(Clone, Debug, Default)]
pub struct SaeInputs {
    /// A sparsify, SAELens or `sae train` directory.
    pub sae: PathBuf,
    /// A sparsify run saved for several hookpoints: the one to use.
    pub hookpoint: Option<String>,
    /// Files, directories or globs.
    pub shards: Vec<PathBuf>,
    pub tensor: String,
    /// A transcoder's targets beside the shards (only evaluation reads them).
    pub targets: Option<Targets>,
    /// Only part I of N of the shards (sorted by path, whole shards balanced by rows).
    pub part: Option<Part>,
    pub adapter: AdapterRequest,
    /// How the encoder GEMM runs.
    pub matmul: MatmulChoice,
}

/// Where a transcoder's targets are: files beside the shards, file for file (none: the shards
/// themselves), and the tensor in them.
#[derive(Clone, Debug, Default)]
pub struct Targets {
    pub files: Vec<PathBuf>,
    pub tensor: String,
}

impl Targets {
    /// Opens the targets beside the input `shards` (opened from `paths`: the same files when
    /// no target files were given) and checks that they pair; returns them and their width.
    pub fn open_beside(
        &self,
        paths: &[PathBuf],
        shards: &[Shard],
    ) -> anyhow::Result<(Vec<Shard>, usize)> {
        let files = match self.files.is_empty() {
            true => paths.to_vec(),
            false => expand_inputs(&self.files)?,
        };
        let opened = open_shards(&files, &self.tensor, None)?;
        let width = check_pairs(shards, &opened)?;
        Ok((opened, width))
    }
}

/// The SAE loaded and the shards opened.
pub struct Opened {
    pub loaded: LoadedSae,
    pub shards: Vec<Shard>,
    /// The targets, shard for shard beside `shards`.
    pub targets: Option<Vec<Shard>>,
    /// The part of a split job these shards are.
    pub part: Option<PartInfo>,
}

impl Opened {
    /// Rows over every shard.
    pub fn rows(&self) -> u64 {
        self.shards.iter().map(|s| s.rows as u64).sum()
    }
}

impl SaeInputs {
    /// Loads the SAE and opens the shards (this part of them), before any GPU work.
    pub fn open(&self) -> anyhow::Result<Opened> {
        let loaded = load_sae_at(&self.sae, self.hookpoint.as_deref())?;
        let paths = expand_inputs(&self.shards)?;
        let mut shards = open_shards(&paths, &self.tensor, Some(loaded.params.d_in))?;
        let mut targets = match &self.targets {
            None => None,
            Some(t) => {
                let (opened, width) = t.open_beside(&paths, &shards)?;
                let d_out = loaded.params.d_out();
                if width != d_out {
                    anyhow::bail!(
                        "{}: the targets ('{}') have width {width} but {} writes {d_out} values",
                        opened[0].path.display(),
                        t.tensor,
                        self.sae.display()
                    );
                }
                Some(opened)
            }
        };
        let mut part = None;
        if let Some(p) = self.part {
            let all: Vec<PathBuf> = shards.iter().map(|s| s.path.clone()).collect();
            let (mine, info) = split(shards, p)?;
            // The targets of the shards this part kept, in the part's order.
            targets = targets.map(|t| {
                let mut by_input: Vec<Option<Shard>> = t.into_iter().map(Some).collect();
                mine.iter()
                    .filter_map(|s| {
                        let at = all.iter().position(|p| *p == s.path)?;
                        by_input[at].take()
                    })
                    .collect()
            });
            shards = mine;
            part = Some(info);
        }
        Ok(Opened {
            loaded,
            shards,
            targets,
            part,
        })
    }

    /// The GPU asked for.
    pub fn gpu(&self) -> anyhow::Result<Gpu> {
        Ok(Gpu::new(&self.adapter)?)
    }
}

impl SaeInputs {
    /// The SAE on the GPU for batches of `batch_rows` rows, thresholded SAEs keeping `cap`
    /// latents per row, its encoder GEMM as asked.
    pub fn upload(
        &self,
        gpu: &Gpu,
        opened: &Opened,
        cap: usize,
        batch_rows: usize,
    ) -> anyhow::Result<GpuSae> {
        let params = &opened.loaded.params;
        let mut sae = GpuSae::upload_with_cap(gpu, params, cap, batch_rows)?;
        sae.set_matmul(gpu, gpu.matmul(self.matmul)?)?;
        Ok(sae)
    }
}
