//! `sae encode` and `sae eval` through the binary on small SAEs in each layout, against CPU
//! references: TopK codes exact, ReLU and JumpReLU SAEs with a per-row cap, dropped counts and
//! true L0.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::reference::{encode, RefSae};
use common::{random_sae, random_vec, rng, temp_dir, to_f64};
use sae_wgpu::io::{write_safetensors, TensorOut};
use sae_wgpu::sae::formats::{read_tensor_f32, save_saelens, save_sparsify};
use sae_wgpu::sae::params::Activation;
use safetensors::SafeTensors;

fn write_shard(path: &Path, rows: usize, d: usize, seed: u64) -> Vec<f32> {
    let x = random_vec(&mut rng(seed), rows * d, 1.5);
    let tokens: Vec<i32> = (0..rows as i32).map(|i| 1000 + i).collect();
    write_safetensors(
        path,
        &[
            TensorOut::f32("activations", &[rows, d], &x),
            TensorOut::i32("tokens", &[rows], &tokens),
        ],
        None,
    )
    .unwrap();
    x
}

fn sae_cmd(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_sae"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sae {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Reference codes: per row, the `cap` largest non-zero activations (value desc, index asc).
fn reference_codes(
    h: &[f64],
    rows: usize,
    d_sae: usize,
    cap: usize,
    threshold: &dyn Fn(usize) -> f64,
) -> (Vec<Vec<(u32, f64)>>, u64, u64) {
    let mut codes = Vec::new();
    let (mut active_total, mut dropped) = (0u64, 0u64);
    for r in 0..rows {
        let mut active: Vec<(u32, f64)> = (0..d_sae)
            .filter_map(|i| {
                let v = h[r * d_sae + i];
                (v > threshold(i) && v > 0.0).then_some((i as u32, v))
            })
            .collect();
        active.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap().then(a.0.cmp(&b.0)));
        active_total += active.len() as u64;
        dropped += active.len().saturating_sub(cap) as u64;
        active.truncate(cap);
        codes.push(active);
    }
    (codes, active_total, dropped)
}

fn read_codes(path: &Path, rows: usize, k: usize) -> (Vec<u32>, Vec<f32>, Vec<i32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let idx = st.tensor("indices").unwrap();
    assert_eq!(idx.shape(), [rows, k]);
    let values = read_tensor_f32(&st, "values", &[rows, k], path).unwrap();
    let tokens = st.tensor("tokens").unwrap();
    (
        bytemuck::pod_collect_to_vec(idx.data()),
        values,
        bytemuck::pod_collect_to_vec(tokens.data()),
    )
}

#[test]
fn encode_topk_sparsify_layout_matches_reference() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("topk");
    let (d_in, d_sae, k, rows) = (6, 20, 3, 77);
    let params = random_sae(1, d_in, d_sae, Activation::TopK { k });
    save_sparsify(&dir.join("sae"), &params).unwrap();
    let x = write_shard(&dir.join("acts.safetensors"), rows, d_in, 2);
    let s = |p: PathBuf| p.display().to_string();
    sae_cmd(&[
        "encode",
        &s(dir.join("sae")),
        &s(dir.join("acts.safetensors")),
        "--out",
        &s(dir.join("codes")),
        "--values",
        "f32",
        "--batch-size",
        "16",
    ]);
    let (idx, val, tokens) = read_codes(&dir.join("codes/acts.safetensors"), rows, k);
    let h = encode(&to_f64(&x), rows, &RefSae::from_params(&params));
    let (codes, _, _) = reference_codes(&h, rows, d_sae, k, &|_| 0.0);
    for r in 0..rows {
        for (j, (i, v)) in codes[r].iter().enumerate() {
            assert_eq!(idx[r * k + j], *i, "row {r} slot {j}");
            assert!(
                (f64::from(val[r * k + j]) - v).abs() <= 1e-5 * v.abs().max(1.0),
                "row {r} slot {j}"
            );
        }
    }
    assert_eq!(
        tokens,
        (0..rows as i32).map(|i| 1000 + i).collect::<Vec<_>>()
    );
    assert!(dir.join("codes/encode.json").is_file());
}

#[test]
fn relu_and_jumprelu_saelens_sae_are_capped_and_counted() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("relu");
    let (d_in, d_sae, rows, cap) = (5, 24, 60, 4);
    let x = write_shard(&dir.join("acts.safetensors"), rows, d_in, 7);
    let s = |p: PathBuf| p.display().to_string();
    let theta: Vec<f32> = random_vec(&mut rng(9), d_sae, 0.3)
        .iter()
        .map(|v| v.abs())
        .collect();
    for (name, activation) in [
        ("standard", Activation::Relu),
        (
            "jumprelu",
            Activation::JumpRelu {
                threshold: theta.clone(),
            },
        ),
    ] {
        let params = random_sae(3, d_in, d_sae, activation.clone());
        let sae_dir = dir.join(name);
        save_saelens(&sae_dir, &params, None, serde_json::json!({})).unwrap();
        let threshold = |i: usize| match &activation {
            Activation::JumpRelu { threshold } => f64::from(threshold[i]),
            _ => 0.0,
        };
        let h = encode(&to_f64(&x), rows, &RefSae::from_params(&params));
        let (codes, active_total, dropped) = reference_codes(&h, rows, d_sae, cap, &threshold);
        assert!(dropped > 0, "{name}: the test should exercise the cap");

        let out = dir.join(format!("codes-{name}"));
        sae_cmd(&[
            "encode",
            &s(sae_dir.clone()),
            &s(dir.join("acts.safetensors")),
            "--out",
            &s(out.clone()),
            "--values",
            "f32",
            "--cap",
            &cap.to_string(),
            "--quiet",
        ]);
        let (idx, val, _) = read_codes(&out.join("acts.safetensors"), rows, cap);
        for r in 0..rows {
            for j in 0..cap {
                match codes[r].get(j) {
                    Some((i, v)) => {
                        assert_eq!(idx[r * cap + j], *i, "{name} row {r} slot {j}");
                        assert!((f64::from(val[r * cap + j]) - v).abs() <= 1e-5 * v.abs().max(1.0));
                    }
                    None => assert_eq!(
                        val[r * cap + j],
                        0.0,
                        "{name} row {r} slot {j} should be empty"
                    ),
                }
            }
        }
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("encode.json")).unwrap())
                .unwrap();
        assert_eq!(
            report["shards"][0]["dropped_activations"].as_u64(),
            Some(dropped),
            "{name}"
        );

        let eval: serde_json::Value = serde_json::from_str(&sae_cmd(&[
            "eval",
            &s(sae_dir),
            &s(dir.join("acts.safetensors")),
            "--cap",
            &cap.to_string(),
            "--json",
        ]))
        .unwrap();
        assert!(
            (eval["l0"].as_f64().unwrap() - active_total as f64 / rows as f64).abs() < 1e-12,
            "{name} L0"
        );
        assert_eq!(
            eval["dropped_activations"].as_u64(),
            Some(dropped),
            "{name}"
        );
        // FVU of the capped reconstruction against the reference.
        let mut sse = 0.0;
        let mut mean = vec![0.0; d_in];
        for r in 0..rows {
            for c in 0..d_in {
                mean[c] += f64::from(x[r * d_in + c]) / rows as f64;
            }
        }
        let mut var = 0.0;
        for r in 0..rows {
            for c in 0..d_in {
                let mut xh = f64::from(params.b_dec[c]);
                for (i, v) in &codes[r] {
                    xh += v * f64::from(params.w_dec[*i as usize * d_in + c]);
                }
                let xv = f64::from(x[r * d_in + c]);
                sse += (xv - xh).powi(2);
                var += (xv - mean[c]).powi(2);
            }
        }
        let fvu = eval["fvu"].as_f64().unwrap();
        assert!(
            (fvu - sse / var).abs() <= 1e-5 * (sse / var),
            "{name}: FVU {fvu} vs {}",
            sse / var
        );
    }
}
