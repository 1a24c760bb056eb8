//! Transcoder runs keep every property of SAE runs: a skip-transcoder stopped after a checkpoint
//! and resumed ends with the uninterrupted run's weights bit for bit (W_skip and the target's
//! scale included); targets given as separate files train exactly as the same rows given as a
//! second tensor; a sweep's members are transcoders; `sae eval --part` over paired files merges
//! into one pass's figures; and every input that cannot pair, or a transcoder the layouts cannot
//! hold, is one line naming what is wrong.

mod common;

use std::path::{Path, PathBuf};

use common::training::{run_options as options, tiny_config};
use common::{gpu, sae_fails, sae_ok, temp_dir};
use sae_wgpu::data::synth::{write_synthetic, PlantedTranscoder, SynthConfig, TARGET_TENSOR};
use sae_wgpu::io::{write_safetensors, TensorOut};
use sae_wgpu::run::train::{train, ExportFormat, TrainConfig};
use sae_wgpu::sae::arch::Architecture;
use sae_wgpu::sae::formats::load_sae;
use sae_wgpu::sae::params::SaeParams;

const D_IN: usize = 12;
const D_OUT: usize = 9;

/// Two paired shards (inputs `activations`, targets `target`) of 3000 rows.
fn data(dir: &Path, d_out: usize) -> Vec<PathBuf> {
    data_of(dir, d_out, 3000)
}

fn data_of(dir: &Path, d_out: usize, rows: usize) -> Vec<PathBuf> {
    let synth = SynthConfig {
        d_in: D_IN,
        n_features: 24,
        rows_per_shard: rows,
        shards: 2,
        mean_active: 3.0,
        noise_std: 0.05,
        seed: 5,
        transcoder: Some(PlantedTranscoder {
            d_out,
            skip_scale: 0.5,
            target_noise_std: 0.01,
        }),
        ..SynthConfig::default()
    };
    write_synthetic(&synth, dir).unwrap()
}

fn config(shards: Vec<PathBuf>) -> TrainConfig {
    let mut config = tiny_config(shards, 48, 4, 40);
    config.data.batch_size = 64;
    config.data.target_tensor = Some(TARGET_TENSOR.into());
    config.model.architecture = Architecture::BatchTopK;
    config.model.transcoder = true;
    config.model.skip = true;
    config.output.format = ExportFormat::Saelens;
    config.init.normalize_activations = true;
    config.auxk.dead_tokens = 256;
    config.output.checkpoint_every = 10;
    config
}

fn bits(p: &SaeParams) -> Vec<u32> {
    [p.w_enc.as_slice(), &p.b_enc, &p.w_dec, &p.b_dec]
        .into_iter()
        .chain(p.w_skip())
        .flat_map(|v| v.iter().map(|x| x.to_bits()))
        .collect()
}

#[test]
fn a_resumed_skip_transcoder_matches_the_uninterrupted_run() {
    let Some(gpu) = gpu() else { return };
    let root = temp_dir("transcoder-resume");
    let shards = data(&root.join("data"), D_OUT);
    let whole = root.join("whole");
    train(
        gpu,
        Some(config(shards.clone())),
        &options(&whole, false, None),
    )
    .unwrap();
    let interrupted = root.join("interrupted");
    let stopped = train(
        gpu,
        Some(config(shards.clone())),
        &options(&interrupted, false, Some(23)),
    )
    .unwrap();
    assert_eq!(stopped.steps, 23);
    train(gpu, None, &options(&interrupted, true, None)).unwrap();
    let (a, b) = (load_sae(&whole).unwrap(), load_sae(&interrupted).unwrap());
    assert!(a.params.w_skip().is_some(), "a skip-transcoder");
    assert_eq!(a.params.d_out(), D_OUT);
    assert!(
        bits(&a.params) == bits(&b.params),
        "the resumed transcoder differs from the uninterrupted one"
    );

    // The same rows with their targets in separate files: the same run.
    let split = root.join("split");
    std::fs::create_dir_all(&split).unwrap();
    let (mut inputs, mut targets) = (Vec::new(), Vec::new());
    for (i, shard) in shards.iter().enumerate() {
        let bytes = std::fs::read(shard).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        for (name, list) in [("activations", &mut inputs), (TARGET_TENSOR, &mut targets)] {
            let view = st.tensor(name).unwrap();
            let values: Vec<f32> = bytemuck::pod_collect_to_vec(view.data());
            let path = split.join(format!("{name}_{i}.safetensors"));
            let out = TensorOut::f32("activations", view.shape(), &values);
            write_safetensors(&path, &[out], None).unwrap();
            list.push(path);
        }
    }
    let mut separate = config(inputs);
    separate.data.targets = targets;
    separate.data.target_tensor = None;
    let from_files = root.join("from-files");
    train(gpu, Some(separate), &options(&from_files, false, None)).unwrap();
    let c = load_sae(&from_files).unwrap();
    assert!(
        bits(&a.params) == bits(&c.params),
        "targets from separate files train differently from a second tensor"
    );
}

#[test]
fn transcoder_sweeps_parts_and_refusals() {
    if gpu().is_none() {
        return;
    }
    let root = temp_dir("transcoder-cli");
    let shards = data(&root.join("data"), D_OUT);
    let square = data(&root.join("square"), D_IN);
    let s = |p: &Path| p.display().to_string();
    let (a, b) = (s(&shards[0]), s(&shards[1]));
    let common_flags = [
        "--target-tensor",
        "target",
        "--batch-size",
        "64",
        "--tokens",
        "640",
        "--quiet",
        "--no-tune",
    ];
    // A sweep of skip-transcoders over k.
    let sweep = root.join("sweep");
    let mut args = vec!["train", &a, &b, "--skip", "--architecture", "batchtopk"];
    args.extend(["--k", "2,4", "--expansion-factor", "2", "--out"]);
    let sweep_arg = s(&sweep);
    args.push(&sweep_arg);
    args.extend(common_flags);
    sae_ok(&args);
    for member in ["batchtopk-k2-x2", "batchtopk-k4-x2"] {
        let loaded = load_sae(&sweep.join(member)).unwrap();
        assert_eq!(loaded.params.d_out(), D_OUT, "{member}");
        assert!(loaded.params.w_skip().is_some(), "{member}");
    }
    // `sae eval --part` of paired files merges into the whole pass.
    let run = s(&sweep.join("batchtopk-k4-x2"));
    let whole = sae_ok(&["eval", &run, &a, &b, "--target-tensor", "target", "--json"]);
    let mut parts = Vec::new();
    for part in ["0/2", "1/2"] {
        let json = sae_ok(&[
            "eval",
            &run,
            &a,
            &b,
            "--target-tensor",
            "target",
            "--part",
            part,
            "--json",
        ]);
        let path = root.join(format!("part-{}.json", &part[..1]));
        std::fs::write(&path, json).unwrap();
        parts.push(s(&path));
    }
    let merged = sae_ok(&["eval", "merge", &parts[0], &parts[1], "--json"]);
    let (w, m): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&whole).unwrap(),
        serde_json::from_str(&merged).unwrap(),
    );
    assert_eq!(w["sae"]["hook_name_out"], "target", "the target's tensor");
    for key in ["fvu", "mse", "l0", "mean_cosine"] {
        let (x, y) = (w[key].as_f64().unwrap(), m[key].as_f64().unwrap());
        assert!(
            (x - y).abs() <= 1e-9 * x.abs().max(1.0),
            "{key}: {x} vs {y}"
        );
    }

    // Categories of a transcoder: in the space its decoder writes.
    let categories = root.join("categories");
    let cat_arg = s(&categories);
    sae_ok(&["categories", &run, &a, "--out", &cat_arg, "--quiet"]);
    let found: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(categories.join("categories.json")).unwrap())
            .unwrap();
    assert_eq!(found["d_in"], D_IN);
    assert_eq!(found["d_out"], D_OUT);

    // Two SAELens caches of the same rows pair (their token columns agree).
    let cache = common::fixture("saelens-cache");
    let copy = root.join("cache-copy");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(&cache).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    let paired = root.join("paired-caches");
    sae_ok(&[
        "train",
        &s(&cache),
        "--target",
        &s(&copy),
        "--skip",
        "--architecture",
        "batchtopk",
        "--k",
        "2",
        "--expansion-factor",
        "2",
        "--batch-size",
        "16",
        "--tokens",
        "32",
        "--out",
        &s(&paired),
        "--quiet",
        "--no-tune",
    ]);
    assert!(load_sae(&paired).unwrap().params.is_transcoder());

    // Refusals, one line each.
    let train = |extra: &[&str], expect: &[&str]| {
        let mut args = vec!["train", a.as_str(), "--batch-size", "64"];
        args.extend(extra);
        sae_fails(&args, expect);
    };
    train(&["--skip"], &["--skip", "--target"]);
    train(&["--transcoder"], &["--transcoder", "--target"]);
    train(
        &["--target", &b, &a, "--target-tensor", "target"],
        &["1 input shards but 2 target shards"],
    );
    let short = data_of(&root.join("short"), D_OUT, 1000);
    let e = s(&short[0]);
    train(
        &["--target", &e, "--target-tensor", "target", "--quiet"],
        &["3000 rows", "1000", &e],
    );
    // Targets whose tokens are not the inputs' (the same rows in another order).
    let bytes = std::fs::read(&shards[0]).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let target = st.tensor(TARGET_TENSOR).unwrap();
    let values: Vec<f32> = bytemuck::pod_collect_to_vec(target.data());
    let mut tokens: Vec<i32> = bytemuck::pod_collect_to_vec(st.tensor("tokens").unwrap().data());
    tokens.reverse();
    let reordered = root.join("reordered.safetensors");
    let tensors = [
        TensorOut::f32("activations", target.shape(), &values),
        TensorOut::i32("tokens", &[tokens.len()], &tokens),
    ];
    write_safetensors(&reordered, &tensors, None).unwrap();
    let r = s(&reordered);
    train(&["--target", &r, "--quiet"], &["different tokens", &r]);
    let c = s(&square[0]);
    // TopK transcoders: sparsify's layout only, which writes what it reads.
    train(
        &[
            "--target-tensor",
            "target",
            "--format",
            "saelens",
            "--quiet",
        ],
        &["SAELens has no TopK transcoder"],
    );
    train(
        &["--target-tensor", "target", "--quiet"],
        &["sparsify", "d_in 12", "9"],
    );
    // The input file is its own target file (tensor "target"), so the pair is valid and
    // only the missing --eval-target is wrong.
    let eval_without = [
        "train",
        c.as_str(),
        "--target",
        c.as_str(),
        "--target-tensor",
        "target",
        "--eval",
        a.as_str(),
        "--batch-size",
        "64",
        "--quiet",
    ];
    sae_fails(&eval_without, &["--eval-target"]);
}
