//! Loading any SAE this project reads: a sparsify directory, a SAELens directory, a `sae
//! train` run directory (its export), or one hookpoint of a sparsify run saved for several;
//! the layout is detected from the files.

use std::path::{Path, PathBuf};

use anyhow::bail;

use super::provenance::{Layout, Provenance};
use super::saelens::load_saelens;
use super::sparsify::load_sparsify;
use crate::sae::params::SaeParams;

/// A loaded SAE and where it came from.
pub struct LoadedSae {
    pub params: SaeParams,
    pub layout: Layout,
    pub dir: PathBuf,
    pub provenance: Provenance,
}

/// The hookpoints of a sparsify save directory: subdirectories holding an SAE.
pub fn hookpoints(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            let p = e.path();
            p.join("cfg.json").is_file()
                && (p.join("sae.safetensors").is_file()
                    || p.join("sae_weights.safetensors").is_file())
        })
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .collect();
    found.sort();
    found
}

/// Loads an SAE from a sparsify directory, a SAELens directory, or a `sae train` run
/// directory (its `sparsify/` or `saelens/` export), detecting the layout from the files.
pub fn load_sae(path: &Path) -> anyhow::Result<LoadedSae> {
    load_sae_at(path, None)
}

/// As [`load_sae`]; `hookpoint` picks one SAE of a sparsify run saved for several hookpoints
/// (its subdirectory), which a directory holding several requires.
pub fn load_sae_at(path: &Path, hookpoint: Option<&str>) -> anyhow::Result<LoadedSae> {
    if !path.is_dir() {
        bail!(
            "{}: not a directory (expected an SAE checkpoint directory)",
            path.display()
        );
    }
    if let Some(name) = hookpoint {
        let inner = path.join(name);
        let present = hookpoints(path);
        if !present.iter().any(|h| h == name) {
            bail!(
                "{}: no hookpoint \"{name}\" (hookpoints here: {})",
                path.display(),
                if present.is_empty() {
                    "none".to_string()
                } else {
                    present.join(", ")
                }
            );
        }
        let mut loaded = load_sae_at(&inner, None)?;
        loaded.provenance.hookpoint = Some(name.to_string());
        return Ok(loaded);
    }
    let (params, layout, mut provenance) = if path.join("sae.safetensors").is_file() {
        let (params, provenance) = load_sparsify(path)?;
        (params, Layout::Sparsify, provenance)
    } else if path.join("sae_weights.safetensors").is_file() {
        let (params, provenance) = load_saelens(path)?;
        (params, Layout::SaeLens, provenance)
    } else {
        for sub in ["sparsify", "saelens"] {
            let inner = path.join(sub);
            if inner.join("cfg.json").is_file() {
                return load_sae_at(&inner, None);
            }
        }
        let present = hookpoints(path);
        if !present.is_empty() {
            bail!(
                "{}: holds SAEs for several hookpoints ({}); choose one with --hookpoint",
                path.display(),
                present.join(", ")
            );
        }
        bail!(
            "{}: no SAE found (expected sae.safetensors, sae_weights.safetensors, a run directory with sparsify/ or saelens/, or hookpoint subdirectories)",
            path.display()
        )
    };
    provenance.path = path.display().to_string();
    Ok(LoadedSae {
        params,
        layout,
        dir: path.to_path_buf(),
        provenance,
    })
}
