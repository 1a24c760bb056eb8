//! Turning the user's arguments (files, directories, globs) into a validated list of shards.

use std::path::{Path, PathBuf};

use super::error::DataError;
use super::shard::Shard;

fn is_glob(arg: &str) -> bool {
    arg.contains(['*', '?', '['])
}

fn safetensors_in(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| DataError::io(dir, e))?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    Ok(files)
}

/// Files, directories (their `*.safetensors`, sorted) and glob patterns, in argument order.
pub fn expand_inputs(args: &[PathBuf]) -> Result<Vec<PathBuf>, DataError> {
    let mut files = Vec::new();
    for arg in args {
        let text = arg.to_string_lossy();
        if is_glob(&text) && !arg.exists() {
            let pattern = glob::glob(&text)
                .map_err(|e| DataError::Input(format!("{text}: bad glob pattern: {e}")))?;
            let mut matched: Vec<PathBuf> = pattern
                .filter_map(Result::ok)
                .filter(|p| p.is_file())
                .collect();
            matched.sort();
            if matched.is_empty() {
                return Err(DataError::Input(format!(
                    "{text}: no files match this pattern"
                )));
            }
            files.extend(matched);
        } else if arg.is_dir() {
            let found = safetensors_in(arg)?;
            if found.is_empty() {
                return Err(DataError::Input(format!(
                    "{}: directory holds no .safetensors shards",
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
