//! `sae frontier`: every point is exactly what `sae eval` gives for that SAE (a sweep directory
//! counting as its members, SAELens directories among them), the picture is drawn, and a
//! damaged sweep.json is a one-line error that writes nothing.

mod common;

use common::{random_vec, rng, sae_fails, sae_ok, temp_dir};
use sae_wgpu::io::{write_safetensors, TensorOut};
use sae_wgpu::sae::formats::{save_saelens, save_sparsify};
use sae_wgpu::sae::params::Activation;
use serde_json::Value;

#[test]
fn frontier_points_are_sae_eval_figures() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("frontier");
    let (d_in, d_sae, rows) = (7, 33, 577);
    let shard = dir.join("heldout.safetensors");
    write_safetensors(
        &shard,
        &[TensorOut::f32(
            "activations",
            &[rows, d_in],
            &random_vec(&mut rng(1), rows * d_in, 1.0),
        )],
        None,
    )
    .unwrap();
    let sweep = dir.join("sweep");
    for k in [2, 5] {
        let params = common::random_sae(k as u64, d_in, d_sae, Activation::TopK { k });
        save_sparsify(&sweep.join(format!("topk-k{k}")), &params).unwrap();
    }
    std::fs::write(
        sweep.join("sweep.json"),
        r#"{"runs": [{"dir": "topk-k2", "k": 2}, {"dir": "topk-k5", "k": 5}]}"#,
    )
    .unwrap();
    let relu = dir.join("relu");
    save_saelens(
        &relu,
        &common::random_sae(9, d_in, d_sae, Activation::Relu),
        None,
        serde_json::json!({}),
    )
    .unwrap();
    let s = |p: &std::path::Path| p.display().to_string();
    let out = dir.join("out");
    sae_ok(&[
        "frontier",
        &s(&sweep),
        &s(&relu),
        "--eval",
        &s(&shard),
        "--out",
        &s(&out),
        "--batch-size",
        "64",
        "--quiet",
    ]);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("frontier.json")).unwrap()).unwrap();
    let runs = report["runs"].as_array().unwrap();
    let want = [
        (sweep.join("topk-k2"), "topk"),
        (sweep.join("topk-k5"), "topk"),
        (relu.clone(), "standard"),
    ];
    assert_eq!(runs.len(), want.len());
    for (run, (path, architecture)) in runs.iter().zip(&want) {
        assert_eq!(run["dir"], s(path).as_str());
        assert_eq!(run["architecture"], *architecture);
        assert_eq!(run["d_sae"], d_sae);
        let eval: Value = serde_json::from_str(
            sae_ok(&["eval", &s(path), &s(&shard), "--json", "--batch-size", "64"]).trim(),
        )
        .unwrap();
        for key in ["fvu", "l0", "dead_frac"] {
            assert_eq!(run[key], eval[key], "{key} of {}", s(path));
        }
    }
    assert!(std::fs::metadata(out.join("frontier.png")).unwrap().len() > 10_000);

    // A damaged sweep.json: one line naming it, nothing written.
    let refused = dir.join("refused");
    for (damaged, expect) in [
        (r#"{"runs": [{"k": 2}]}"#, "runs[0] has no \"dir\""),
        ("{", "sweep.json: not JSON"),
    ] {
        std::fs::write(sweep.join("sweep.json"), damaged).unwrap();
        sae_fails(
            &[
                "frontier",
                &s(&sweep),
                "--eval",
                &s(&shard),
                "--out",
                &s(&refused),
            ],
            &["sweep.json", expect],
        );
    }
    assert!(!refused.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
