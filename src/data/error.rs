use std::path::{Path, PathBuf};

use thiserror::Error;

/// A problem with input data. Every variant names the file, so the one-line message tells the
/// user where to look.
#[derive(Debug, Error)]
pub enum DataError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a valid {kind} file: {message}", path.display())]
    Format {
        path: PathBuf,
        kind: &'static str,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Tensor { path: PathBuf, message: String },
    #[error("{}: row {row} holds a non-finite value (NaN or Inf); pass --skip-nonfinite to skip such rows", path.display())]
    NonFinite { path: PathBuf, row: usize },
    #[error("{0}")]
    Input(String),
}

impl DataError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn tensor(path: &Path, message: impl Into<String>) -> Self {
        DataError::Tensor {
            path: path.to_path_buf(),
            message: message.into(),
        }
    }
}
