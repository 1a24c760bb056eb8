//! Every seed and every input the fuzzer ever crashed on (`fuzz/corpus/*`,
//! `fuzz/regressions/*`) goes through the shard (safetensors, NumPy, Arrow) and checkpoint
//! readers: an error or a value, never a panic. Runs in the normal test suite, without the
//! fuzzer.

use std::path::{Path, PathBuf};

use sae_wgpu::data::fuzzing;
use sae_wgpu::sae::checkpoint;

fn inputs(target: &str) -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        if let Ok(entries) = std::fs::read_dir(root.join(kind).join(target)) {
            files.extend(
                entries
                    .filter_map(Result::ok)
                    .map(|e| e.path())
                    .filter(|p| p.is_file()),
            );
        }
    }
    files.sort();
    files
}

/// Runs `reader` on every kept input of `target`.
fn replay(target: &str, reader: fn(&[u8])) {
    let files = inputs(target);
    assert!(!files.is_empty(), "the seed corpus of {target} is missing");
    for path in files {
        reader(&std::fs::read(&path).unwrap());
    }
}

#[test]
fn shard_reader_never_panics_on_kept_inputs() {
    replay("shard_reader", fuzzing::shard_reader);
}

#[test]
fn npy_reader_never_panics_on_kept_inputs() {
    replay("npy_reader", fuzzing::npy_reader);
}

#[test]
fn arrow_reader_never_panics_on_kept_inputs() {
    replay("arrow_reader", fuzzing::arrow_reader);
}

#[test]
fn checkpoint_reader_never_panics_on_kept_inputs() {
    let files = inputs("checkpoint_reader");
    assert!(!files.is_empty(), "the seed corpus is missing");
    let mut loaded = 0;
    for path in files {
        let data = std::fs::read(&path).unwrap();
        if checkpoint::parse(&data, &path).is_ok() {
            loaded += 1;
        }
    }
    assert!(loaded >= 1, "the seed checkpoint should load");
}
