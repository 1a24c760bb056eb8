//! The files jobs write besides their main results: plots, `sae hist`'s files and top
//! contexts, the `sae categories` and `sae attribute` reports.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub mod attribution_parts;
pub mod attribution_report;
pub mod categories_report;
pub mod hist_files;
pub mod plots;
pub mod top_examples;

/// Creates `out` and removes an earlier run's outputs from it: the files named in `finals`
/// and every page `is_page` recognises by name (their names vary with the run), so that a
/// failed run never leaves an older one looking like its result.
pub fn prepare_output_dir(
    out: &Path,
    finals: &[&str],
    is_page: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let mut stale: Vec<PathBuf> = finals.iter().map(|name| out.join(name)).collect();
    if let Ok(entries) = std::fs::read_dir(out) {
        stale.extend(
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&is_page)),
        );
    }
    for path in stale.into_iter().filter(|p| p.exists()) {
        std::fs::remove_file(&path)
            .with_context(|| format!("{}: cannot replace", path.display()))?;
    }
    Ok(())
}
