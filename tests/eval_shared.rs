//! `sae eval` on sparsify's own checkpoint and the real held-out shard must reproduce the
//! figures sparsify computed for it (peer_metrics.json → shared_checkpoint_eval).

mod common;

use std::process::Command;

use serde_json::Value;

fn close(name: &str, ours: f64, theirs: f64, rel: f64) {
    let diff = (ours - theirs).abs() / theirs.abs().max(1e-12);
    assert!(
        diff <= rel,
        "{name}: ours {ours} vs sparsify {theirs} (relative difference {diff:.2e} > {rel:.0e})"
    );
}

#[test]
fn eval_matches_sparsify_on_its_own_checkpoint() {
    let Some(data) = common::shared_data() else {
        return;
    };
    if common::gpu().is_none() {
        return;
    }
    let peer: Value =
        serde_json::from_str(&std::fs::read_to_string(data.join("peer_metrics.json")).unwrap())
            .unwrap();
    let want = &peer["shared_checkpoint_eval"];
    let output = Command::new(env!("CARGO_BIN_EXE_sae"))
        .arg("eval")
        .arg(data.join("sparsify-topk-k32-x8"))
        .arg(data.join("heldout.safetensors"))
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_slice(&output.stdout).unwrap();
    for key in [
        "rows",
        "fvu",
        "mse",
        "l0",
        "dead_frac",
        "dense_frac",
        "mean_cosine",
        "rel_recon_bias",
    ] {
        assert!(got.get(key).is_some(), "missing key {key}");
    }
    let f = |v: &Value, k: &str| v[k].as_f64().unwrap();
    assert_eq!(got["rows"].as_u64(), want["rows"].as_u64());
    close("fvu", f(&got, "fvu"), f(want, "fvu"), 1e-4);
    close("mse", f(&got, "mse"), f(want, "mse"), 1e-4);
    close(
        "mean_cosine",
        f(&got, "mean_cosine"),
        f(want, "mean_cosine"),
        1e-5,
    );
    close(
        "rel_recon_bias",
        f(&got, "rel_recon_bias"),
        f(want, "rel_recon_bias"),
        1e-5,
    );
    assert_eq!(f(&got, "l0"), f(want, "l0"));
    assert_eq!(f(&got, "dead_frac"), f(want, "dead_frac"));
    assert_eq!(f(&got, "dense_frac"), f(want, "dense_frac"));
}
