//! `sae hist` against a CPU reference computed from the same codes (`sae encode`), with tied
//! rows: fire counts, bin counts and top-M rows exactly, sums to 1e-5; and `sae hist merge`
//! of two disjoint parts equals one pass over both.

mod common;

use std::path::Path;
use std::process::Command;

use common::{random_vec, rng};
use sae_wgpu::io::{write_safetensors, TensorOut};
use sae_wgpu::run::outputs::hist_files::load;
use sae_wgpu::sae::formats::{read_tensor_f32, save_sparsify};
use sae_wgpu::sae::params::{Activation, SaeParams};
use safetensors::SafeTensors;

const D_IN: usize = 6;
const D_SAE: usize = 24;
const K: usize = 4;
const TOP: usize = 5;
const BINS: usize = 7;
const RANGE: (f64, f64) = (0.05, 4.0);

fn sae_cmd(args: &[String]) {
    let output = Command::new(env!("CARGO_BIN_EXE_sae"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sae {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A shard whose rows repeat in blocks, so equal activations tie across rows.
fn write_shard(path: &Path, rows: usize, seed: u64, token_base: i32) {
    let unique = random_vec(&mut rng(seed), (rows / 3 + 1) * D_IN, 1.5);
    let x: Vec<f32> = (0..rows)
        .flat_map(|r| unique[(r / 3) * D_IN..(r / 3 + 1) * D_IN].to_vec())
        .collect();
    let tokens: Vec<i32> = (0..rows as i32).map(|r| token_base + r).collect();
    write_safetensors(
        path,
        &[
            TensorOut::f32("activations", &[rows, D_IN], &x),
            TensorOut::i32("tokens", &[rows], &tokens),
        ],
        None,
    )
    .unwrap();
}

fn random_topk_sae(seed: u64) -> SaeParams {
    let mut r = rng(seed);
    SaeParams {
        input_norm: Default::default(),
        d_in: D_IN,
        d_sae: D_SAE,
        activation: Activation::TopK { k: K },
        w_enc: random_vec(&mut r, D_IN * D_SAE, 0.6),
        b_enc: random_vec(&mut r, D_SAE, 0.2),
        w_dec: random_vec(&mut r, D_SAE * D_IN, 0.6),
        b_dec: random_vec(&mut r, D_IN, 0.2),
        transcoder: None,
    }
}

fn codes(path: &Path, rows: usize) -> (Vec<u32>, Vec<f32>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let idx = bytemuck::pod_collect_to_vec(st.tensor("indices").unwrap().data());
    (
        idx,
        read_tensor_f32(&st, "values", &[rows, K], path).unwrap(),
    )
}

fn hist_args(sae: &Path, shards: &[&Path], out: &Path) -> Vec<String> {
    let mut args = vec!["hist".to_string(), s(sae)];
    args.extend(shards.iter().map(|p| s(p)));
    args.extend([
        "--out".into(),
        s(out),
        "--range".into(),
        format!("{},{}", RANGE.0, RANGE.1),
        "--bins".into(),
        BINS.to_string(),
        "--top".into(),
        TOP.to_string(),
        "--batch-size".into(),
        "16".into(),
        "--quiet".into(),
    ]);
    args
}

#[test]
fn hist_matches_reference_and_merges_exactly() {
    if common::gpu().is_none() {
        return;
    }
    let dir = std::env::temp_dir().join(format!("sae-hist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let params = random_topk_sae(31);
    let sae = dir.join("sae");
    save_sparsify(&sae, &params).unwrap();
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    let (rows_a, rows_b) = (41, 29);
    write_shard(&a, rows_a, 1, 0);
    write_shard(&b, rows_b, 2, 1000);

    sae_cmd(&hist_args(&sae, &[&a, &b], &dir.join("all")));
    sae_cmd(&hist_args(&sae, &[&a], &dir.join("part-a")));
    sae_cmd(&hist_args(&sae, &[&b], &dir.join("part-b")));
    sae_cmd(
        &[
            "hist",
            "merge",
            &s(&dir.join("part-a")),
            &s(&dir.join("part-b")),
            "--out",
            &s(&dir.join("merged")),
        ]
        .map(String::from),
    );
    sae_cmd(
        &[
            "encode",
            &s(&sae),
            &s(&a),
            &s(&b),
            "--out",
            &s(&dir.join("codes")),
            "--values",
            "f32",
            "--quiet",
        ]
        .map(String::from),
    );

    // Reference from the codes, in stream order (shard a, then b).
    let mut fire = vec![0u64; D_SAE];
    let mut sum = [0f64; D_SAE];
    let mut max = vec![0f32; D_SAE];
    let mut bins = vec![0u64; D_SAE * BINS];
    let mut entries: Vec<Vec<(f32, i32, i64, i32)>> = vec![Vec::new(); D_SAE];
    for (shard, (path, rows, token_base)) in [(&a, rows_a, 0), (&b, rows_b, 1000)]
        .into_iter()
        .enumerate()
    {
        let (idx, val) = codes(&dir.join("codes").join(path.file_name().unwrap()), rows);
        for row in 0..rows {
            for j in 0..K {
                let (i, v) = (idx[row * K + j] as usize, val[row * K + j]);
                if v <= 0.0 {
                    continue;
                }
                fire[i] += 1;
                sum[i] += f64::from(v);
                max[i] = max[i].max(v);
                let pos = (f64::from(v).ln() - RANGE.0.ln()) / (RANGE.1.ln() - RANGE.0.ln())
                    * BINS as f64;
                bins[i * BINS + (pos.floor().clamp(0.0, (BINS - 1) as f64) as usize)] += 1;
                entries[i].push((v, shard as i32, row as i64, token_base + row as i32));
            }
        }
    }
    let (all, _) = load(&dir.join("all")).unwrap();
    assert_eq!(all.rows, (rows_a + rows_b) as u64);
    assert_eq!(all.fire_count, fire, "fire counts");
    assert_eq!(all.bin_counts, bins, "bin counts");
    assert_eq!(all.act_max, max, "max activation");
    for i in 0..D_SAE {
        assert!(
            (all.act_sum[i] - sum[i]).abs() <= 1e-5 * sum[i].abs().max(1e-6),
            "sum of latent {i}"
        );
        // Sorted by value descending; a stable sort keeps earlier rows first among ties.
        entries[i].sort_by(|x, y| y.0.partial_cmp(&x.0).unwrap());
        for slot in 0..TOP {
            let at = i * TOP + slot;
            let got = (
                all.top_values[at],
                all.top_shards[at],
                all.top_rows[at],
                all.top_tokens[at],
            );
            let want = entries[i].get(slot).copied().unwrap_or((-1.0, -1, -1, -1));
            assert_eq!(got, want, "top slot {slot} of latent {i}");
        }
    }
    assert!(
        entries
            .iter()
            .any(|e| e.windows(2).any(|w| w[0].0 == w[1].0)),
        "the data should contain ties"
    );

    let (merged, _) = load(&dir.join("merged")).unwrap();
    common::assert_hist_equal(&all, &merged, 1e-6);

    // Co-occurrence between the 6 most frequent features (ties: lower index first).
    let mut args = hist_args(&sae, &[&a, &b], &dir.join("cooc"));
    args.extend(["--cooccurrence".to_string(), "6".to_string()]);
    sae_cmd(&args);
    let (cooc, _) = load(&dir.join("cooc")).unwrap();
    let mut order: Vec<usize> = (0..D_SAE).collect();
    order.sort_by(|&x, &y| fire[y].cmp(&fire[x]).then(x.cmp(&y)));
    order.truncate(6);
    assert_eq!(
        cooc.cooc_features,
        order.iter().map(|&f| f as u32).collect::<Vec<_>>()
    );
    let mut want = vec![0u64; 36];
    for (path, rows) in [(&a, rows_a), (&b, rows_b)] {
        let (idx, val) = codes(&dir.join("codes").join(path.file_name().unwrap()), rows);
        for row in 0..rows {
            let fired: Vec<usize> = (0..K)
                .filter(|&j| val[row * K + j] > 0.0)
                .filter_map(|j| order.iter().position(|&f| f == idx[row * K + j] as usize))
                .collect();
            for &p in &fired {
                for &q in &fired {
                    want[p * 6 + q] += 1;
                }
            }
        }
    }
    assert_eq!(cooc.cooc_counts, want, "co-occurrence counts");
    assert_eq!(cooc.fire_count, all.fire_count);
    assert!(dir.join("all/density.png").is_file() && dir.join("all/features.png").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn top_examples_decode_context_windows_and_reject_unknown_tokens() {
    let Some(data) = common::shared_data() else {
        return;
    };
    if common::gpu().is_none() {
        return;
    }
    let tokenizer = data.join("model/tokenizer.json");
    let dir = std::env::temp_dir().join(format!("sae-hist-tok-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let params = random_topk_sae(5);
    let sae = dir.join("sae");
    save_sparsify(&sae, &params).unwrap();
    let shard = dir.join("acts.safetensors");
    write_shard(&shard, 30, 3, 100);
    let mut args = hist_args(&sae, &[&shard], &dir.join("h"));
    args.extend([
        "--tokenizer".to_string(),
        s(&tokenizer),
        "--context".into(),
        "3".into(),
    ]);
    sae_cmd(&args);
    let text = std::fs::read_to_string(dir.join("h/top_examples.jsonl")).unwrap();
    let (hist, _) = load(&dir.join("h")).unwrap();
    assert_eq!(
        text.lines().count(),
        hist.fire_count.iter().filter(|&&c| c > 0).count()
    );
    let first: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let example = &first["examples"][0];
    assert!(
        example["context"].as_str().unwrap().contains('«'),
        "{first}"
    );
    assert_eq!(
        example["token"].as_i64(),
        Some(100 + example["row"].as_i64().unwrap())
    );

    // Token ids past the vocabulary are an error naming the shard.
    let bad = dir.join("bad.safetensors");
    write_shard(&bad, 30, 3, 60_000);
    let mut args = hist_args(&sae, &[&bad], &dir.join("h2"));
    args.extend(["--tokenizer".to_string(), s(&tokenizer)]);
    let output = Command::new(env!("CARGO_BIN_EXE_sae"))
        .args(&args)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.safetensors") && stderr.contains("outside the tokenizer's vocabulary"),
        "{stderr}"
    );
    assert!(!dir.join("h2/summary.json").exists());
    let _ = std::fs::remove_dir_all(&dir);
}
