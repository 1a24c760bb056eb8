//! Shared test support: the adapter-or-skip rule, seeded data, relative-error comparison that
//! treats NaN/Inf explicitly, and CPU f64 references for every kernel.

#![allow(dead_code)]

pub mod attribution;
pub mod fixtures;
pub mod reference;
pub mod training;

use std::sync::OnceLock;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sae_wgpu::gpu::{AdapterRequest, Gpu};

/// NaN as a u32 pattern: outputs are filled with it before a launch, so an element the kernel
/// forgot to write fails the comparison.
pub const POISON: u32 = 0x7fc0_0000;

/// The test GPU, opened once per test binary. `None` (the test skips with a message) when no
/// adapter exists, unless SAE_REQUIRE_GPU=1, which CI sets so a skip cannot pass silently.
pub fn gpu() -> Option<&'static Gpu> {
    static GPU: OnceLock<Option<Gpu>> = OnceLock::new();
    let gpu = GPU.get_or_init(|| match Gpu::new(&AdapterRequest::default()) {
        Ok(gpu) => Some(gpu),
        Err(error) => {
            if std::env::var("SAE_REQUIRE_GPU").as_deref() == Ok("1") {
                panic!("SAE_REQUIRE_GPU=1 but no adapter: {error}");
            }
            eprintln!("SKIP: no GPU adapter ({error})");
            None
        }
    });
    gpu.as_ref()
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn random_vec(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

/// ‖out − ref‖ / ‖ref‖, or +∞ if any output is not finite. ‖ref‖ = 0 compares absolutely.
pub fn rel_error(out: &[f32], reference: &[f64]) -> f64 {
    assert_eq!(out.len(), reference.len(), "length mismatch");
    let mut diff = 0.0;
    let mut norm = 0.0;
    for (o, r) in out.iter().zip(reference) {
        if !o.is_finite() {
            return f64::INFINITY;
        }
        diff += (f64::from(*o) - r).powi(2);
        norm += r * r;
    }
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

/// Fails with the worst element, its values and the tolerance.
#[track_caller]
pub fn assert_close(what: &str, out: &[f32], reference: &[f64], tol: f64) {
    let err = rel_error(out, reference);
    if err <= tol {
        return;
    }
    let (worst, _) = out
        .iter()
        .zip(reference)
        .enumerate()
        .map(|(i, (o, r))| {
            let d = if o.is_finite() {
                (f64::from(*o) - r).abs()
            } else {
                f64::INFINITY
            };
            (i, d)
        })
        .fold(
            (0, -1.0),
            |best, cur| if cur.1 > best.1 { cur } else { best },
        );
    panic!(
        "{what}: relative error {err:.3e} > {tol:.1e}; worst at index {worst}: gpu {} vs reference {}",
        out[worst], reference[worst]
    );
}

pub fn to_f64(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

/// `../shared/data/smollm2-135m-l15`, the real activations and peer checkpoint, when present.
pub fn shared_data() -> Option<std::path::PathBuf> {
    let dir =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/smollm2-135m-l15");
    if dir.join("heldout.safetensors").is_file() {
        Some(dir)
    } else {
        eprintln!(
            "SKIP: {} is absent (the shared real-activation data)",
            dir.display()
        );
        None
    }
}

/// A fresh, empty directory for one test: `sae-test-NAME-PID` under the system temp dir.
pub fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sae-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// An SAE with seeded random weights (biases included), for kernel and CLI tests.
pub fn random_sae(
    seed: u64,
    d_in: usize,
    d_sae: usize,
    activation: sae_wgpu::sae::params::Activation,
) -> sae_wgpu::sae::params::SaeParams {
    let mut r = rng(seed);
    sae_wgpu::sae::params::SaeParams {
        input_norm: Default::default(),
        d_in,
        d_sae,
        activation,
        w_enc: random_vec(&mut r, d_in * d_sae, 0.6),
        b_enc: random_vec(&mut r, d_sae, 0.3),
        w_dec: random_vec(&mut r, d_sae * d_in, 0.6),
        b_dec: random_vec(&mut r, d_in, 0.3),
        transcoder: None,
    }
}

/// `tests/fixtures/NAME`: small inputs written by the Python tools themselves
/// (scripts/make_input_fixtures.py).
pub fn fixture(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// Runs the `sae` binary.
pub fn run_sae<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_sae"))
        .args(args)
        .output()
        .expect("the sae binary runs")
}

/// Runs `sae ARGS`, which must succeed; returns its stdout.
#[track_caller]
pub fn sae_ok<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(args: &[S]) -> String {
    let output = run_sae(args);
    assert!(
        output.status.success(),
        "sae {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Runs `sae ARGS`, which must fail with exactly one `error: …` line (no panic) holding every
/// string of `expect`; returns that line.
#[track_caller]
pub fn sae_fails<S: AsRef<std::ffi::OsStr> + std::fmt::Debug>(
    args: &[S],
    expect: &[&str],
) -> String {
    let output = run_sae(args);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "expected failure for {args:?}");
    assert!(!stderr.contains("panicked"), "panic for {args:?}: {stderr}");
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: ") && !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "want one error line for {args:?}, got: {stderr}"
    );
    for needle in expect {
        assert!(
            lines[0].contains(needle),
            "error for {args:?} lacks '{needle}': {}",
            lines[0]
        );
    }
    lines[0].to_string()
}

/// A merged `sae hist` output equals one pass: counts, bins, maxima and top rows exactly, sums
/// to `sum_tol` relative (each batch's sum is f32 on the GPU; batches are added in f64).
#[track_caller]
pub fn assert_hist_equal(
    one_pass: &sae_wgpu::analysis::hist::Histograms,
    merged: &sae_wgpu::analysis::hist::Histograms,
    sum_tol: f64,
) {
    assert_eq!(one_pass.shards, merged.shards);
    assert_eq!(one_pass.rows, merged.rows);
    assert_eq!(one_pass.fire_count, merged.fire_count);
    assert_eq!(one_pass.bin_counts, merged.bin_counts);
    assert_eq!(one_pass.act_max, merged.act_max);
    assert_eq!(one_pass.top_values, merged.top_values);
    assert_eq!(one_pass.top_shards, merged.top_shards);
    assert_eq!(one_pass.top_rows, merged.top_rows);
    assert_eq!(one_pass.top_tokens, merged.top_tokens);
    for (x, y) in one_pass
        .act_sum
        .iter()
        .zip(&merged.act_sum)
        .chain(one_pass.act_sumsq.iter().zip(&merged.act_sumsq))
    {
        assert!(
            (x - y).abs() <= sum_tol * x.abs().max(y.abs()).max(1e-12),
            "{x} vs {y}"
        );
    }
}

/// Stands in for Slurm's `sbatch` in the recipe's test: runs the script at once (an array's
/// tasks one after another, with the variables Slurm sets), its output to $FAKE_SLURM_LOG, and
/// prints a job id as `--parsable` does.
pub const FAKE_SBATCH: &str = r#"#!/usr/bin/env bash
set -euo pipefail
array="" script=""
for arg in "$@"; do
    case "$arg" in
    --array=*) array="${arg#--array=}" ;;
    -*) ;;
    *) script="$arg" ;;
    esac
done
if [ -n "$array" ]; then
    lo="${array%-*}" hi="${array#*-}"
    for i in $(seq "$lo" "$hi"); do
        SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_COUNT=$((hi - lo + 1)) bash "$script" >>"$FAKE_SLURM_LOG" 2>&1
    done
else
    bash "$script" >>"$FAKE_SLURM_LOG" 2>&1
fi
echo "$RANDOM"
"#;

/// A directory holding the stand-in `sbatch` ([`FAKE_SBATCH`]), to put first on PATH.
pub fn fake_slurm_bin(dir: &std::path::Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let sbatch = bin.join("sbatch");
    std::fs::write(&sbatch, FAKE_SBATCH).unwrap();
    std::fs::set_permissions(&sbatch, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    bin
}

/// A gradient `got` against its reference `want` (finite differences, or an estimator's
/// formula): ‖want − got‖ / ‖want‖ < 1e-3
/// over every `stride`-th element (NaN in `want`, a difference that crossed a selection
/// threshold: left out, at most one in 20), the gradient non-zero.
pub fn assert_gradient_close(name: &str, want: &[f64], got: &[f32], stride: usize) {
    assert_eq!(want.len(), got.len(), "{name}: lengths");
    let compared: Vec<(f64, f64)> = want
        .iter()
        .zip(got)
        .step_by(stride)
        .map(|(a, b)| (*a, f64::from(*b)))
        .collect();
    let left_out = compared.iter().filter(|(a, _)| a.is_nan()).count();
    assert!(
        left_out * 20 <= compared.len(),
        "{name}: {left_out} of {} differences cross a selection threshold",
        compared.len()
    );
    let kept = || compared.iter().filter(|(a, _)| !a.is_nan());
    let norm: f64 = kept().map(|(a, _)| a * a).sum::<f64>().sqrt();
    let err: f64 = kept().map(|(a, b)| (a - b).powi(2)).sum::<f64>().sqrt();
    assert!(norm > 1e-6, "{name}: the gradient is zero");
    assert!(
        err / norm < 1e-3,
        "{name}: relative error {:.2e} against the reference",
        err / norm
    );
}
