//! Every SAELens inference variant computed exactly: SAEs written by the real sae-lens package
//! (tests/fixtures/saelens/, made by scripts/make_input_fixtures.py) are evaluated and encoded
//! by `sae eval` / `sae encode`, and compared with SAELens' own `encode` and `decode` of the
//! same rows (rows whose norms span two orders of magnitude, so a normalisation applied wrong
//! or not at all shows). Unknown values of fields that change the computation are refused.

mod common;

use common::fixtures::{encoded_dense, fvu, read_f32};
use common::{fixture, sae_fails, sae_ok, temp_dir};

/// Every variant the fixture script writes.
const VARIANTS: [&str; 14] = [
    "standard",
    "standard-no-b-dec-in",
    "standard-constant-norm",
    "standard-layer-norm",
    "topk",
    "topk-constant-norm",
    "topk-trained",
    "jumprelu",
    "jumprelu-layer-norm",
    "gated",
    "gated-constant-norm",
    "standard-expected-average",
    "topk-trained-expected-average",
    "jumprelu-whitening",
];

#[test]
fn every_saelens_variant_matches_saelens_own_encode_and_decode() {
    if common::gpu().is_none() {
        return;
    }
    let base = fixture("saelens");
    let rows_path = base.join("rows.safetensors");
    let (x, shape) = read_f32(&rows_path, "activations");
    let (n, d) = (shape[0], shape[1]);
    let out = temp_dir("saelens-variants");
    for variant in VARIANTS {
        let dir = base.join(variant);
        let expected = base.join("expected").join(format!("{variant}.safetensors"));
        let (acts, acts_shape) = read_f32(&expected, "feature_acts");
        let (sae_out, _) = read_f32(&expected, "sae_out");
        let d_sae = acts_shape[1];
        let want_fvu = fvu(&x, &sae_out, d);
        let want_l0 = acts.iter().filter(|&&a| a != 0.0).count() as f64 / n as f64;

        let json = sae_ok(&[
            "eval".as_ref(),
            dir.as_os_str(),
            rows_path.as_os_str(),
            "--json".as_ref(),
        ]);
        let summary: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        let got_fvu = summary["fvu"].as_f64().unwrap();
        assert!(
            ((got_fvu - want_fvu) / want_fvu).abs() < 1e-5,
            "{variant}: FVU {got_fvu} vs SAELens {want_fvu}"
        );
        assert!(
            (summary["l0"].as_f64().unwrap() - want_l0).abs() < 1e-9,
            "{variant}: L0 {} vs SAELens {want_l0}",
            summary["l0"]
        );
        let provenance = &summary["sae"];
        assert_eq!(
            provenance["hook_name"], "blocks.3.hook_resid_post",
            "{variant}"
        );
        assert_eq!(provenance["model_name"], "fixture-model", "{variant}");

        let codes = out.join(variant);
        let dense = encoded_dense(&dir, &rows_path, &codes, n, d_sae);
        let reference: Vec<f64> = acts.iter().map(|&a| f64::from(a)).collect();
        common::assert_close(&format!("{variant}: codes"), &dense, &reference, 1e-5);
    }
}

/// A copy of a fixture variant with `cfg.json` edited, and its other files as they are.
fn edited_variant(
    variant: &str,
    name: &str,
    edit: impl Fn(&mut serde_json::Value),
) -> std::path::PathBuf {
    let source = fixture("saelens").join(variant);
    let dir = temp_dir(name);
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let cfg_path = dir.join("cfg.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    edit(&mut cfg);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    dir
}

#[test]
fn fields_that_change_the_computation_are_never_ignored() {
    if common::gpu().is_none() {
        return;
    }
    let rows = fixture("saelens").join("rows.safetensors");
    let cases: Vec<(std::path::PathBuf, Vec<&str>)> = vec![
        (
            edited_variant("standard", "norm-unknown", |c| {
                c["normalize_activations"] = "batch_norm".into()
            }),
            vec!["normalize_activations", "batch_norm", "layer_norm"],
        ),
        (
            edited_variant("jumprelu", "rescale-jumprelu", |c| {
                c["rescale_acts_by_decoder_norm"] = true.into()
            }),
            vec!["rescale_acts_by_decoder_norm", "jumprelu"],
        ),
        (
            edited_variant("standard", "finetuning", |c| {
                c["finetuning_scaling_factor"] = true.into()
            }),
            vec!["finetuning_scaling_factor"],
        ),
        (
            edited_variant("standard", "reshape", |c| {
                c["reshape_activations"] = "hook_q".into()
            }),
            vec!["reshape_activations", "hook_q"],
        ),
        (
            edited_variant("standard", "arch", |c| {
                c["architecture"] = "matching_pursuit".into()
            }),
            vec!["architecture", "matching_pursuit", "gated"],
        ),
    ];
    for (dir, expect) in cases {
        sae_fails(
            &["eval".as_ref(), dir.as_os_str(), rows.as_os_str()],
            &expect,
        );
    }
    // A training checkpoint whose scaler is missing cannot be computed exactly.
    let no_scaler = edited_variant("standard-expected-average", "no-scaler", |_| {});
    std::fs::remove_file(no_scaler.join("activation_scaler.json")).unwrap();
    sae_fails(
        &["eval".as_ref(), no_scaler.as_os_str(), rows.as_os_str()],
        &["expected_average_only_in", "activation_scaler.json"],
    );
    let no_whitening = edited_variant("jumprelu-whitening", "no-whitening", |_| {});
    std::fs::remove_file(no_whitening.join("activation_whitening.safetensors")).unwrap();
    sae_fails(
        &["eval".as_ref(), no_whitening.as_os_str(), rows.as_os_str()],
        &["covariance_whitening", "activation_whitening.safetensors"],
    );
}

#[test]
fn eval_prints_what_the_sae_is() {
    if common::gpu().is_none() {
        return;
    }
    let base = fixture("saelens");
    let (sae, rows) = (base.join("topk-trained"), base.join("rows.safetensors"));
    let text = sae_ok(&["eval".as_ref(), sae.as_os_str(), rows.as_os_str()]);
    assert!(text.contains("saelens layout"), "{text}");
    assert!(text.contains("topk k 5"), "{text}");
    assert!(text.contains("model fixture-model"), "{text}");
    assert!(text.contains("hook blocks.3.hook_resid_post"), "{text}");
    assert!(text.contains("rescale_acts_by_decoder_norm"), "{text}");
}
