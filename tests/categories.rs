//! `sae categories`: the GPU decoder-cosine kNN graph against an f64 CPU reference, and the
//! whole command on planted structure: the points of a planted circle form one category,
//! ranked first by the subspace score, in their cyclic order.

mod common;

use std::process::Command;

use common::{gpu, random_vec, rng, temp_dir};
use sae_wgpu::analysis::categories::{knn_graph, unit_rows};
use sae_wgpu::data::synth::{make_dictionary, PlantedCircle, SynthConfig};
use sae_wgpu::sae::formats::save_sparsify;
use sae_wgpu::sae::params::{Activation, SaeParams};

fn cpu_cosines(w_dec: &[f32], d_in: usize, i: usize) -> Vec<(usize, f64)> {
    let d_sae = w_dec.len() / d_in;
    let row = |j: usize| &w_dec[j * d_in..(j + 1) * d_in];
    let norm = |j: usize| {
        row(j)
            .iter()
            .map(|&v| f64::from(v).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let mut out: Vec<(usize, f64)> = (0..d_sae)
        .filter(|&j| j != i)
        .map(|j| {
            let dot: f64 = row(i)
                .iter()
                .zip(row(j))
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            (j, (dot / (norm(i) * norm(j))).max(0.0))
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

#[test]
fn knn_graph_matches_cpu_reference() {
    let Some(gpu) = gpu() else { return };
    // (d_in, d_sae, neighbours, batch): batches that do not divide d_sae, unaligned widths.
    for (d_in, d_sae, neighbours, batch) in [(13, 77, 6, 10), (8, 33, 1, 33), (4, 7, 6, 3)] {
        let w_dec = random_vec(&mut rng(d_sae as u64), d_sae * d_in, 1.0);
        let unit = unit_rows(&w_dec, d_in);
        let graph = knn_graph(gpu, &unit, d_in, d_sae, neighbours, batch).unwrap();
        assert_eq!(graph.neighbours, neighbours);
        assert_eq!(graph.index.len(), d_sae * neighbours);
        for i in 0..d_sae {
            let reference = cpu_cosines(&w_dec, d_in, i);
            for (slot, (j, c)) in graph.of(i).enumerate() {
                let (want_j, want_c) = reference[slot];
                assert!(
                    (f64::from(c) - want_c).abs() <= 1e-5,
                    "feature {i} slot {slot}: cosine {c} vs {want_c}"
                );
                // Ids must agree unless two reference cosines are within rounding.
                let tied = reference
                    .iter()
                    .any(|&(k, ck)| k != want_j && (ck - want_c).abs() <= 1e-5);
                assert!(
                    tied || j == want_j,
                    "feature {i} slot {slot}: {j} vs {want_j}"
                );
                assert_ne!(j, i, "a feature is not its own neighbour");
            }
        }
    }
}

#[test]
fn planted_circle_is_the_first_category_in_cyclic_order() {
    if gpu().is_none() {
        return;
    }
    let dir = temp_dir("categories");
    // A dictionary holding 40 random features and a 7-point circle (features 40..47), shuffled
    // so the circle's points are neither contiguous nor in order. In 64 dimensions a random
    // feature's cosine with another exceeds Engels' 0.5 link threshold with odds ~1e-4 (4σ).
    let config = SynthConfig {
        d_in: 64,
        n_features: 40,
        circle: Some(PlantedCircle::default()),
        seed: 3,
        ..SynthConfig::default()
    };
    let truth = make_dictionary(&config, &mut common::rng(3));
    let (d_in, d_sae) = (64, 47);
    let permutation: Vec<usize> = (0..d_sae).map(|i| (i * 17 + 5) % d_sae).collect();
    let mut w_dec = vec![0.0f32; d_sae * d_in];
    for (slot, &feature) in permutation.iter().enumerate() {
        w_dec[slot * d_in..(slot + 1) * d_in]
            .copy_from_slice(&truth.features[feature * d_in..(feature + 1) * d_in]);
    }
    let mut params = SaeParams {
        d_in,
        d_sae,
        activation: Activation::TopK { k: 4 },
        w_enc: Vec::new(),
        b_enc: vec![0.0; d_sae],
        w_dec,
        b_dec: vec![0.0; d_in],
    };
    params.w_enc = params.w_dec_transposed();
    let sae_dir = dir.join("sae");
    save_sparsify(&sae_dir, &params).unwrap();
    let out = dir.join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_sae"))
        .arg("categories")
        .arg(&sae_dir)
        .args([
            "--out",
            out.to_str().unwrap(),
            "--neighbours",
            "8",
            "--batch-size",
            "10",
        ])
        .args(["--feature", "0"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("categories.json")).unwrap())
            .unwrap();
    let first = &report["categories"][0];
    let members: Vec<usize> = first["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let mut planted: Vec<usize> = (0..d_sae).filter(|&s| permutation[s] >= 40).collect();
    planted.sort();
    assert_eq!(members, planted, "first category: {first}");
    let pr = first["participation_ratio"].as_f64().unwrap();
    assert!((pr - 2.0).abs() < 0.05, "participation ratio {pr}");
    // Consecutive members of the cyclic order are neighbouring points of the circle.
    let order: Vec<usize> = first["cyclic_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| permutation[v.as_u64().unwrap() as usize] - 40)
        .collect();
    let step = (order[1] + 7 - order[0]) % 7;
    assert!(step == 1 || step == 6, "cyclic order {order:?}");
    for w in order.windows(2) {
        assert_eq!((w[1] + 7 - w[0]) % 7, step, "cyclic order {order:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn feature_out_of_range_is_one_line_and_writes_nothing() {
    if gpu().is_none() {
        return;
    }
    let dir = temp_dir("categories-bad");
    let mut r = rng(1);
    let params = SaeParams {
        d_in: 4,
        d_sae: 6,
        activation: Activation::TopK { k: 2 },
        w_enc: random_vec(&mut r, 24, 1.0),
        b_enc: vec![0.0; 6],
        w_dec: random_vec(&mut r, 24, 1.0),
        b_dec: vec![0.0; 4],
    };
    save_sparsify(&dir.join("sae"), &params).unwrap();
    let out = dir.join("out");
    let output = Command::new(env!("CARGO_BIN_EXE_sae"))
        .arg("categories")
        .arg(dir.join("sae"))
        .args(["--out", out.to_str().unwrap(), "--feature", "6"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let ours: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("error: ") && !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    assert_eq!(ours.len(), 1, "{stderr}");
    assert!(ours[0].contains("--feature 6 is out of range") && ours[0].contains("0..5"));
    assert!(!out.join("categories.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
