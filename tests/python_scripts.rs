//! The Python scripts' own tests (scripts/test_*.py), run with the virtualenv of
//! scripts/check-python-loaders.sh: `$SAE_PY_VENV`, else
//! `${XDG_CACHE_HOME:-$HOME/.cache}/sae-wgpu/pyloaders`. Where that virtualenv lacks torch or
//! transformers the test says so and passes, unless SAE_REQUIRE_PYTHON=1 (then it fails), so a
//! machine without the Python stack still passes `cargo test` and CI cannot skip silently.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// An environment variable that is set and not empty (as the shell's `${VAR:-default}`).
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The virtualenv's Python interpreter, where scripts/check-python-loaders.sh puts it.
fn venv_python() -> Option<PathBuf> {
    let venv = env_path("SAE_PY_VENV").or_else(|| {
        let cache =
            env_path("XDG_CACHE_HOME").or_else(|| env_path("HOME").map(|h| h.join(".cache")))?;
        Some(cache.join("sae-wgpu").join("pyloaders"))
    })?;
    Some(venv.join("bin").join("python"))
}

/// The interpreter when it imports torch and transformers; otherwise why not.
fn python_with_torch() -> Result<PathBuf, String> {
    let python = venv_python().ok_or("neither SAE_PY_VENV nor HOME is set")?;
    if !python.is_file() {
        return Err(format!("no virtualenv interpreter at {}", python.display()));
    }
    let probe = Command::new(&python)
        .args(["-c", "import torch, transformers"])
        .output()
        .map_err(|e| format!("{}: {e}", python.display()))?;
    if !probe.status.success() {
        return Err(format!(
            "{} cannot import torch and transformers",
            python.display()
        ));
    }
    Ok(python)
}

/// The interpreter, or `None` after printing why the test is skipped (a failure under
/// SAE_REQUIRE_PYTHON=1).
fn python_or_skip(test: &str) -> Option<PathBuf> {
    match python_with_torch() {
        Ok(python) => Some(python),
        Err(why) => {
            if std::env::var("SAE_REQUIRE_PYTHON").as_deref() == Ok("1") {
                panic!("SAE_REQUIRE_PYTHON=1 but {why}");
            }
            eprintln!(
                "SKIP {test}: {why} (scripts/check-python-loaders.sh makes the virtualenv; then pip install transformers)"
            );
            None
        }
    }
}

fn tail(bytes: &[u8], lines: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

fn run_script(python: &Path, script: &str) -> Output {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut command = Command::new(python);
    command.arg(root.join(script)).current_dir(root);
    // Triton needs a CUDA device; sparsify falls back to its eager decoder without it.
    if std::env::var_os("SPARSIFY_DISABLE_TRITON").is_none() {
        command.env("SPARSIFY_DISABLE_TRITON", OsString::from("1"));
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {script}: {e}"))
}

/// Runs a script's own test and passes along its output; a failure shows its last lines.
fn script_passes(test: &str, script: &str) {
    let Some(python) = python_or_skip(test) else {
        return;
    };
    let output = run_script(&python, script);
    assert!(
        output.status.success(),
        "{script} failed ({}):\n{}\n{}",
        output.status,
        tail(&output.stdout, 40),
        tail(&output.stderr, 40)
    );
    println!("{}", tail(&output.stdout, 40));
}

#[test]
fn downstream_loss_script() {
    script_passes("downstream_loss_script", "scripts/test_downstream_loss.py");
}

#[test]
fn cache_components_script() {
    script_passes(
        "cache_components_script",
        "scripts/test_cache_components.py",
    );
}
