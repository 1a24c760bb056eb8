//! The ecosystem's transcoders load exactly: SAELens' four transcoder classes (d_out ≠ d_in)
//! and sparsify's transcoders with and without a skip connection, written by the packages
//! themselves (tests/fixtures/transcoders/, made by scripts/make_input_fixtures.py), are
//! evaluated and encoded by `sae eval --target-tensor` and `sae encode`, and compared with each
//! package's own codes and forward output (skip path included) on rows of norms 0.1–10. Each is
//! written back in its layout by our exporter and read again unchanged.

mod common;

use common::fixtures::{encoded_dense, fvu, read_f32};
use common::{fixture, sae_fails, sae_ok, temp_dir};
use sae_wgpu::sae::formats::{load_sae, save_saelens, save_sparsify};

/// (variant, the rows' target tensor, its width).
const VARIANTS: [(&str, &str, usize); 6] = [
    ("transcoder", "target", 17),
    ("skip_transcoder", "target", 17),
    ("jumprelu_transcoder", "target", 17),
    ("jumprelu_skip_transcoder", "target", 17),
    ("sparsify-transcoder", "target_square", 24),
    ("sparsify-skip-transcoder", "target_square", 24),
];

#[test]
fn the_ecosystems_transcoders_match_their_own_forward() {
    if common::gpu().is_none() {
        return;
    }
    let base = fixture("transcoders");
    let rows_path = base.join("rows.safetensors");
    let out = temp_dir("transcoder-loading");
    for (variant, target, d_out) in VARIANTS {
        let dir = base.join(variant);
        let expected = base.join("expected").join(format!("{variant}.safetensors"));
        let (acts, acts_shape) = read_f32(&expected, "feature_acts");
        let (sae_out, out_shape) = read_f32(&expected, "sae_out");
        assert_eq!(out_shape[1], d_out, "{variant}: the fixture's width");
        let (y, _) = read_f32(&rows_path, target);
        let (n, d_sae) = (acts_shape[0], acts_shape[1]);
        let want_fvu = fvu(&y, &sae_out, d_out);
        let want_l0 = acts.iter().filter(|&&a| a != 0.0).count() as f64 / n as f64;
        let json = sae_ok(&[
            "eval".as_ref(),
            dir.as_os_str(),
            rows_path.as_os_str(),
            "--target-tensor".as_ref(),
            target.as_ref(),
            "--json".as_ref(),
        ]);
        let summary: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
        let got_fvu = summary["fvu"].as_f64().unwrap();
        assert!(
            ((got_fvu - want_fvu) / want_fvu).abs() < 1e-5,
            "{variant}: FVU {got_fvu} vs the package's {want_fvu}"
        );
        assert!(
            (summary["l0"].as_f64().unwrap() - want_l0).abs() < 1e-9,
            "{variant}: L0 {} vs the package's {want_l0}",
            summary["l0"]
        );
        assert_eq!(summary["sae"]["transcoder"], true, "{variant}");
        assert_eq!(summary["sae"]["d_out"], d_out, "{variant}");
        let skip = variant.contains("skip");
        assert_eq!(summary["sae"]["skip"], skip, "{variant}");

        // The codes, from the input alone.
        let codes = out.join(variant);
        let dense = encoded_dense(&dir, &rows_path, &codes, n, d_sae);
        let reference: Vec<f64> = acts.iter().map(|&a| f64::from(a)).collect();
        common::assert_close(&format!("{variant}: codes"), &dense, &reference, 1e-5);

        // Written back in its layout and read again: the same transcoder.
        let loaded = load_sae(&dir).unwrap();
        let again = out.join(format!("{variant}-again"));
        match variant.starts_with("sparsify") {
            true => save_sparsify(&again, &loaded.params).unwrap(),
            false => save_saelens(&again, &loaded.params, None, serde_json::json!({})).unwrap(),
        }
        let reread = load_sae(&again).unwrap().params;
        assert_eq!(reread.transcoder, loaded.params.transcoder, "{variant}");
        assert_eq!(reread.w_dec, loaded.params.w_dec, "{variant}");
        assert_eq!(reread.w_enc, loaded.params.w_enc, "{variant}");
        assert_eq!(reread.b_enc, loaded.params.b_enc, "{variant}");
        assert_eq!(reread.activation, loaded.params.activation, "{variant}");
    }
}

#[test]
fn transcoder_inputs_that_cannot_be_computed_are_refused() {
    if common::gpu().is_none() {
        return;
    }
    let base = fixture("transcoders");
    let rows = base.join("rows.safetensors");
    let (sae, rows) = (base.join("skip_transcoder"), rows.as_os_str());
    // Without targets, with targets of another width, with targets for an SAE.
    sae_fails(
        &["eval".as_ref(), sae.as_os_str(), rows],
        &["transcoder", "--target"],
    );
    sae_fails(
        &[
            "eval".as_ref(),
            sae.as_os_str(),
            rows,
            "--target-tensor".as_ref(),
            "target_square".as_ref(),
        ],
        &["target_square", "17"],
    );
    let plain = fixture("saelens").join("standard");
    sae_fails(
        &[
            "eval".as_ref(),
            plain.as_os_str(),
            fixture("saelens").join("rows.safetensors").as_os_str(),
            "--target-tensor".as_ref(),
            "activations".as_ref(),
        ],
        &["SAE", "--target"],
    );
    // A SAELens transcoder that says it centres its input (SAELens itself refuses it).
    let dir = temp_dir("transcoder-b-dec-in");
    for entry in std::fs::read_dir(&sae).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    let cfg_path = dir.join("cfg.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["apply_b_dec_to_input"] = true.into();
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    sae_fails(
        &[
            "eval".as_ref(),
            dir.as_os_str(),
            rows,
            "--target-tensor".as_ref(),
            "target".as_ref(),
        ],
        &["apply_b_dec_to_input", "transcoders"],
    );
}
