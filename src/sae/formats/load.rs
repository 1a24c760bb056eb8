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

/// A `sae train` run's tensors, where its export does not name them (sparsify's layout has no
/// hook names): the input's as `hook_name` and a transcoder's target as `hook_name_out`.
fn name_run_tensors(run: &Path, provenance: &mut Provenance) {
    let Ok(text) = std::fs::read_to_string(run.join("config.json")) else {
        return;
    };
    let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
        return;
    };
    let config = &value["config"];
    // The default tensor name says nothing about where the activations came from.
    let named = |key: &str| {
        config[key]
            .as_str()
            .filter(|t| *t != crate::data::DEFAULT_TENSOR)
            .map(String::from)
    };
    let unknown = |v: &Option<String>| v.as_deref().is_none_or(|v| v == "unknown");
    if unknown(&provenance.hook_name) {
        provenance.hook_name = named("tensor");
    }
    if provenance.transcoder && unknown(&provenance.hook_name_out) {
        provenance.hook_name_out = named("target_tensor").or_else(|| named("tensor"));
    }
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
                let mut loaded = load_sae_at(&inner, None)?;
                name_run_tensors(path, &mut loaded.provenance);
                return Ok(loaded);
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
