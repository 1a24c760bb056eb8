//! Turning the user's arguments (files, directories, globs) into a validated list of shards.

use std::path::{Path, PathBuf};

use super::error::DataError;
use super::shard::Shard;

fn is_glob(arg: &str) -> bool {
    arg.contains(['*', '?', '['])
}

/// Is this file an activation shard a directory or glob should yield? Sibling token files
/// (`*.tokens.npy`) belong to their shard and are not shards themselves.
fn is_shard_file(path: &Path) -> bool {
    path.is_file()
        && !is_token_file(path)
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("safetensors" | "npy" | "npz")
        )
}

fn is_token_file(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.ends_with(".tokens.npy"))
}

/// Is `dir` a Hugging Face dataset saved to disk (a SAELens activation cache)?
pub fn is_arrow_cache(dir: &Path) -> bool {
    dir.join("state.json").is_file() && dir.join("dataset_info.json").is_file()
}

/// The Arrow files of a saved dataset, in the order `state.json` lists them (sorted
/// `*.arrow` when it lists none).
fn arrow_cache_files(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let state_path = dir.join("state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| DataError::io(&state_path, e))?;
    let state: serde_json::Value = serde_json::from_str(&text).map_err(|e| DataError::Format {
        path: state_path.clone(),
        kind: "JSON",
        message: e.to_string(),
    })?;
    let listed: Vec<PathBuf> = state
        .get("_data_files")
        .and_then(|v| v.as_array())
        .map(|files| {
            files
                .iter()
                .filter_map(|f| f.get("filename").and_then(|n| n.as_str()))
                .map(|name| dir.join(name))
                .collect()
        })
        .unwrap_or_default();
    let files = if listed.is_empty() {
        let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| DataError::io(dir, e))?
            .filter_map(Result::ok)
            .map(|entry| entry.path())
            .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "arrow"))
            .collect();
        found.sort();
        found
    } else {
        listed
    };
    if let Some(missing) = files.iter().find(|f| !f.is_file()) {
        return Err(DataError::Input(format!(
            "{}: {} lists {}, which is missing",
            dir.display(),
            state_path.display(),
            missing.display()
        )));
    }
    Ok(files)
}

fn shards_in(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    if is_arrow_cache(dir) {
        return arrow_cache_files(dir);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| is_shard_file(p))
        .collect();
    files.sort();
    Ok(files)
}

/// Files, directories (their `*.safetensors`, `*.npy` and `*.npz`, sorted; or the Arrow
/// files of a SAELens activation cache) and glob patterns, in argument order.
pub fn expand_inputs(args: &[PathBuf]) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for arg in args {
        let text = arg.to_string_lossy();
        if is_glob(&text) && !arg.exists() {
            let pattern = glob::glob(&text)
                .map_err(|e| DataError::Input(format!("{text}: bad glob pattern: {e}")))?;
            let mut matched: Vec<PathBuf> = pattern
                .filter_map(Result::ok)
                .filter(|p| p.is_file() && !is_token_file(p))
                .collect();
            matched.sort();
            if matched.is_empty() {
                return Err(DataError::Input(format!(
                    "{text}: no files match this pattern"
                )));
            }
            files.extend(matched);
        } else if arg.is_dir() {
            let found = shards_in(arg)?;
            if found.is_empty() {
                return Err(DataError::Input(format!(
                    "{}: directory holds no shards (.safetensors, .npy, .npz, or a SAELens activation cache)",
                    arg.display()
                )));
            }
            files.extend(found);
        } else if arg.is_file() {
            files.push(arg.clone());
        } else {
            return Err(DataError::io(
                arg,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such file or directory"),
            ));
        }
    }
    if files.is_empty() {
        return Err(DataError::Input("no input shards given".into()));
    }
    Ok(files)
}

/// Opens every shard and checks they agree on d_in (and with `expected_d_in`, when given).
pub fn open_shards(
    paths: &[PathBuf],
    tensor: &str,
    expected_d_in: Option<usize>,
) -> Result<Vec<Shard>, DataError> {
    let mut shards: Vec<Shard> = Vec::with_capacity(paths.len());
    for path in paths {
        let shard = Shard::open(path, tensor)?;
        let reference = expected_d_in
            .map(|d| (d, "the SAE".to_string()))
            .or_else(|| {
                shards
                    .first()
                    .map(|first| (first.d_in, first.path.display().to_string()))
            });
        if let Some((d_in, source)) = reference {
            if shard.d_in != d_in {
                return Err(DataError::tensor(
                    path,
                    format!("d_in is {} but {source} has d_in {d_in}", shard.d_in),
                ));
            }
        }
        shards.push(shard);
    }
    Ok(shards)
}
