//! Bad input to `sae eval`, `sae encode` and `sae hist`: exit code ≠ 0, one line on stderr
//! naming the file and the problem, no panic, no output left looking complete.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{random_vec, rng, temp_dir};
use sae_wgpu::io::{write_safetensors, TensorOut};
use sae_wgpu::sae::formats::save_sparsify;
use sae_wgpu::sae::params::{Activation, SaeParams};

fn s(p: &Path) -> String {
    p.display().to_string()
}

fn small_sae(dir: &Path, d_in: usize) -> PathBuf {
    let mut r = rng(1);
    let params = SaeParams {
        input_norm: Default::default(),
        d_in,
        d_sae: 12,
        activation: Activation::TopK { k: 3 },
        w_enc: random_vec(&mut r, d_in * 12, 0.5),
        b_enc: vec![0.0; 12],
        w_dec: random_vec(&mut r, 12 * d_in, 0.5),
        b_dec: vec![0.0; d_in],
        transcoder: None,
    };
    let path = dir.join("sae");
    save_sparsify(&path, &params).unwrap();
    path
}

fn shard(path: &Path, rows: usize, d: usize) {
    let x = random_vec(&mut rng(2), rows * d, 1.0);
    write_safetensors(path, &[TensorOut::f32("activations", &[rows, d], &x)], None).unwrap();
}

/// Runs `sae ARGS` and checks the failure contract; `expect` must all appear in the line.
fn fails(args: &[String], expect: &[&str]) {
    if common::gpu().is_none() {
        return;
    }
    common::sae_fails(args, expect);
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|a| a.to_string()).collect()
}

#[test]
fn sae_and_shards_disagree_on_d_in() {
    let dir = temp_dir("din");
    let sae = small_sae(&dir, 5);
    let acts = dir.join("acts.safetensors");
    shard(&acts, 10, 7);
    for cmd in ["eval", "encode", "hist"] {
        let mut a = args(&[cmd, &s(&sae), &s(&acts)]);
        if cmd != "eval" {
            a.extend(args(&["--out", &s(&dir.join(cmd))]));
        }
        fails(&a, &["acts.safetensors", "d_in is 7", "the SAE has d_in 5"]);
        assert!(
            !dir.join(cmd).join("summary.json").exists()
                && !dir.join(cmd).join("acts.safetensors").exists()
        );
    }
}

#[test]
fn broken_sae_directories() {
    let dir = temp_dir("sae");
    let acts = dir.join("acts.safetensors");
    shard(&acts, 10, 5);
    let sae = small_sae(&dir, 5);

    // Unknown SAELens architecture: named, with the known ones listed.
    let unknown = dir.join("matching_pursuit");
    std::fs::create_dir_all(&unknown).unwrap();
    std::fs::write(
        unknown.join("cfg.json"),
        r#"{"d_in": 5, "d_sae": 12, "architecture": "matching_pursuit"}"#,
    )
    .unwrap();
    write_safetensors(
        &unknown.join("sae_weights.safetensors"),
        &[TensorOut::f32("W_enc", &[5, 12], &[0.0; 60])],
        None,
    )
    .unwrap();
    fails(
        &args(&["eval", &s(&unknown), &s(&acts)]),
        &[
            "cfg.json",
            "unknown architecture \"matching_pursuit\"",
            "standard, topk, jumprelu, gated",
        ],
    );

    // Missing tensor.
    let missing = dir.join("missing");
    std::fs::create_dir_all(&missing).unwrap();
    std::fs::copy(sae.join("cfg.json"), missing.join("cfg.json")).unwrap();
    write_safetensors(
        &missing.join("sae.safetensors"),
        &[TensorOut::f32("encoder.weight", &[12, 5], &[0.0; 60])],
        None,
    )
    .unwrap();
    fails(
        &args(&["eval", &s(&missing), &s(&acts)]),
        &["sae.safetensors", "missing tensor 'encoder.bias'"],
    );

    // Transposed tensor.
    let transposed = dir.join("transposed");
    std::fs::create_dir_all(&transposed).unwrap();
    std::fs::copy(sae.join("cfg.json"), transposed.join("cfg.json")).unwrap();
    write_safetensors(
        &transposed.join("sae.safetensors"),
        &[
            TensorOut::f32("encoder.weight", &[5, 12], &[0.0; 60]),
            TensorOut::f32("encoder.bias", &[12], &[0.0; 12]),
            TensorOut::f32("W_dec", &[12, 5], &[0.0; 60]),
            TensorOut::f32("b_dec", &[5], &[0.0; 5]),
        ],
        None,
    )
    .unwrap();
    fails(
        &args(&["eval", &s(&transposed), &s(&acts)]),
        &[
            "sae.safetensors",
            "'encoder.weight' has shape [5, 12], expected [12, 5]",
        ],
    );

    // Not an SAE at all.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails(&args(&["eval", &s(&empty), &s(&acts)]), &["no SAE found"]);
    // A directory of several SAEs (as sparsify saves hookpoints): one must be chosen.
    fails(
        &args(&["eval", &s(&dir), &s(&acts)]),
        &["several hookpoints", "--hookpoint"],
    );
}

#[test]
fn empty_shard_and_bad_hist_options() {
    let dir = temp_dir("hist");
    let sae = small_sae(&dir, 5);
    let empty = dir.join("empty.safetensors");
    write_safetensors(&empty, &[TensorOut::f32("activations", &[0, 5], &[])], None).unwrap();
    fails(
        &args(&["eval", &s(&sae), &s(&empty)]),
        &["empty.safetensors", "empty"],
    );
    let acts = dir.join("acts.safetensors");
    shard(&acts, 10, 5);
    let out = s(&dir.join("h"));
    fails(
        &args(&["hist", &s(&sae), &s(&acts), "--out", &out, "--bins", "0"]),
        &["--bins must be between 1 and 4096"],
    );
    fails(
        &args(&["hist", &s(&sae), &s(&acts), "--out", &out, "--range", "5,1"]),
        &["need 0 < LO < HI"],
    );
    assert!(!dir.join("h/summary.json").exists());
}

#[test]
fn a_headless_machine_gets_no_window_system_noise() {
    if common::gpu().is_none() {
        return;
    }
    // Without XDG_RUNTIME_DIR, Vulkan drivers' window-system probe used to print two
    // "error: XDG_RUNTIME_DIR is invalid" lines before anything of ours.
    let output = Command::new(env!("CARGO_BIN_EXE_sae"))
        .arg("adapters")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        !stderr.contains("XDG_RUNTIME_DIR"),
        "driver noise: {stderr}"
    );
}
