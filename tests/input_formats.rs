//! What researchers already have is read as it is: SAELens activation caches (written by
//! SAELens' own shard path), NumPy `.npy` / `.npz` arrays (written by numpy), and sparsify
//! runs holding several hookpoints. Each gives exactly what the same rows in a safetensors
//! shard give; broken files are one-line errors naming the file.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use common::{fixture, random_sae, sae_fails, sae_ok, temp_dir};
use sae_wgpu::sae::formats::save_sparsify;
use sae_wgpu::sae::params::Activation;
use safetensors::SafeTensors;

const D_IN: usize = 24;

/// A small TopK SAE in sparsify's layout for the fixtures' width.
fn sparsify_sae(dir: &Path, seed: u64) -> PathBuf {
    let params = random_sae(seed, D_IN, 40, Activation::TopK { k: 4 });
    save_sparsify(dir, &params).unwrap();
    dir.to_path_buf()
}

fn eval_json(sae: &Path, shards: &[PathBuf]) -> serde_json::Value {
    let mut args: Vec<&OsStr> = vec!["eval".as_ref(), sae.as_os_str()];
    args.extend(shards.iter().map(|s| s.as_os_str()));
    args.push("--json".as_ref());
    serde_json::from_str(sae_ok(&args).trim()).unwrap()
}

fn same_metrics(what: &str, a: &serde_json::Value, b: &serde_json::Value, tol: f64) {
    assert_eq!(a["rows"], b["rows"], "{what}: rows");
    for key in ["fvu", "l0", "mse", "mean_cosine", "dead_frac"] {
        let (x, y) = (a[key].as_f64().unwrap(), b[key].as_f64().unwrap());
        assert!(
            (x - y).abs() <= tol * y.abs().max(1e-12),
            "{what}: {key} {x} vs {y}"
        );
    }
}

fn read_i32(path: &Path, name: &str) -> Vec<i32> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    st.tensor(name)
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `sae encode` of `shards` into `out`; returns the tokens each output file carries.
fn encoded_tokens(sae: &Path, shards: &[PathBuf], out: &Path) -> Vec<i32> {
    let mut args: Vec<&OsStr> = vec!["encode".as_ref(), sae.as_os_str()];
    args.extend(shards.iter().map(|s| s.as_os_str()));
    args.extend(["--out".as_ref(), out.as_os_str(), "--quiet".as_ref()]);
    sae_ok(&args);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("encode.json")).unwrap()).unwrap();
    report["shards"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| read_i32(Path::new(s["output"].as_str().unwrap()), "tokens"))
        .collect()
}

#[test]
fn a_saelens_cache_reads_like_the_same_rows_in_safetensors() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("cache-reads");
    let sae = sparsify_sae(&dir.join("sae"), 3);
    let cache = fixture("saelens-cache");
    let flat = fixture("cache-flat.safetensors");
    let from_cache = eval_json(&sae, std::slice::from_ref(&cache));
    let from_flat = eval_json(&sae, std::slice::from_ref(&flat));
    assert_eq!(from_cache["rows"], 48, "2 files × 3 contexts × 8 tokens");
    same_metrics("cache", &from_cache, &from_flat, 1e-12);
    // The hook's column is found without --tensor, and named explicitly it works too.
    let column = cache.join("data-00001-of-00002.arrow");
    let by_name = sae_ok(&[
        "eval".as_ref(),
        sae.as_os_str(),
        column.as_os_str(),
        "--tensor".as_ref(),
        "blocks.3.hook_resid_post".as_ref(),
        "--json".as_ref(),
    ]);
    let by_name: serde_json::Value = serde_json::from_str(by_name.trim()).unwrap();
    assert_eq!(by_name["rows"], 24);
    // token_ids become the tokens.
    let want = read_i32(&flat, "tokens");
    assert_eq!(encoded_tokens(&sae, &[cache], &dir.join("codes")), want);
}

#[test]
fn numpy_arrays_read_like_the_same_rows_in_safetensors() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("npy-reads");
    let sae = sparsify_sae(&dir.join("sae"), 4);
    let npy = fixture("npy");
    let flat = eval_json(&sae, &[fixture("npy-flat.safetensors")]);
    for name in ["acts_f32.npy", "acts_rank3.npy", "acts.npz"] {
        let got = eval_json(&sae, &[npy.join(name)]);
        same_metrics(name, &got, &flat, 1e-12);
    }
    // f16 rounds the inputs: close, not equal.
    same_metrics(
        "acts_f16.npy",
        &eval_json(&sae, &[npy.join("acts_f16.npy")]),
        &flat,
        1e-2,
    );
    // A sibling *.tokens.npy, and an .npz's `tokens`, become the tokens.
    let want = read_i32(&fixture("npy-flat.safetensors"), "tokens");
    let tokens = encoded_tokens(
        &sae,
        &[npy.join("acts_f32.npy"), npy.join("acts.npz")],
        &dir.join("codes"),
    );
    assert_eq!(tokens, [want.clone(), want].concat());
    // A directory yields its arrays, never the token files beside them.
    let listed = eval_json(&sae, std::slice::from_ref(&npy));
    assert_eq!(listed["rows"], 4 * 19, "f32, f16, rank-3 and .npz arrays");
}

#[test]
fn training_reads_a_cache_and_evaluates_on_numpy() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("train-formats");
    let run = dir.join("run");
    let (cache, npy) = (
        fixture("saelens-cache"),
        fixture("npy").join("acts_f32.npy"),
    );
    sae_ok(&[
        "train".as_ref(),
        cache.as_os_str(),
        "--eval".as_ref(),
        npy.as_os_str(),
        "--out".as_ref(),
        run.as_os_str(),
        "--k".as_ref(),
        "3".as_ref(),
        "--expansion-factor".as_ref(),
        "2".as_ref(),
        "--batch-size".as_ref(),
        "16".as_ref(),
        "--epochs".as_ref(),
        "2".as_ref(),
        "--quiet".as_ref(),
    ]);
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 6, "48 rows × 2 epochs / 16");
    assert_eq!(summary["heldout"]["rows"], 19);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("config.json")).unwrap()).unwrap();
    assert_eq!(config["data"][0]["format"], "arrow");
    assert_eq!(config["eval_data"][0]["format"], "npy");
}

#[test]
fn broken_numpy_and_arrow_files_are_one_line_errors() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("bad-formats");
    let sae = sparsify_sae(&dir.join("sae"), 5);
    let bad = fixture("npy").join("bad");
    let cases = [
        ("fortran.npy", vec!["fortran.npy", "Fortran"]),
        ("object.npy", vec!["object.npy", "object"]),
        ("int.npy", vec!["int.npy", "<i4", "float32"]),
        ("compressed.npz", vec!["compressed.npz", "compressed"]),
    ];
    for (name, expect) in cases {
        let path = bad.join(name);
        sae_fails(
            &["eval".as_ref(), sae.as_os_str(), path.as_os_str()],
            &expect,
        );
    }
    // An Arrow file cut in the middle of a record batch.
    let cache = dir.join("cache");
    std::fs::create_dir_all(&cache).unwrap();
    for entry in std::fs::read_dir(fixture("saelens-cache")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), cache.join(entry.file_name())).unwrap();
    }
    let arrow = cache.join("data-00001-of-00002.arrow");
    let bytes = std::fs::read(&arrow).unwrap();
    std::fs::write(&arrow, &bytes[..bytes.len() - 700]).unwrap();
    sae_fails(
        &["eval".as_ref(), sae.as_os_str(), cache.as_os_str()],
        &["data-00001-of-00002.arrow", "truncated"],
    );
    std::fs::write(&arrow, &bytes).unwrap();
    // dataset_info.json that disagrees with the rows.
    let info_path = cache.join("dataset_info.json");
    let info = std::fs::read_to_string(&info_path).unwrap();
    std::fs::write(&info_path, info.replace("24", "32")).unwrap();
    sae_fails(
        &["eval".as_ref(), sae.as_os_str(), cache.as_os_str()],
        &["dataset_info.json", "[8, 24]", "[8, 32]"],
    );
    std::fs::write(&info_path, info).unwrap();
    // A column that does not exist: the error lists the ones that do.
    sae_fails(
        &[
            "eval".as_ref(),
            sae.as_os_str(),
            cache.as_os_str(),
            "--tensor".as_ref(),
            "blocks.9.hook_resid_post".as_ref(),
        ],
        &[
            "blocks.9.hook_resid_post",
            "blocks.3.hook_resid_post",
            "--tensor",
        ],
    );
}

#[test]
fn a_sparsify_run_with_several_hookpoints_needs_one_chosen() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("hookpoints");
    let run = dir.join("run");
    sparsify_sae(&run.join("layers.3"), 6);
    sparsify_sae(&run.join("layers.7"), 7);
    let rows = fixture("npy-flat.safetensors");
    sae_fails(
        &["eval".as_ref(), run.as_os_str(), rows.as_os_str()],
        &["several hookpoints", "layers.3, layers.7", "--hookpoint"],
    );
    sae_fails(
        &[
            "eval".as_ref(),
            run.as_os_str(),
            rows.as_os_str(),
            "--hookpoint".as_ref(),
            "layers.5".as_ref(),
        ],
        &["layers.5", "layers.3, layers.7"],
    );
    let chosen = sae_ok(&[
        "eval".as_ref(),
        run.as_os_str(),
        rows.as_os_str(),
        "--hookpoint".as_ref(),
        "layers.7".as_ref(),
        "--json".as_ref(),
    ]);
    let chosen: serde_json::Value = serde_json::from_str(chosen.trim()).unwrap();
    assert_eq!(chosen["sae"]["hookpoint"], "layers.7");
    let direct = eval_json(&run.join("layers.7"), &[rows]);
    same_metrics("hookpoint", &chosen, &direct, 0.0);
}
