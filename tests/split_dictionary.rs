//! Dictionaries split into blocks of latents (for weights larger than one storage binding)
//! give the results of the same dictionary in one buffer: the forward pass (TopK ids and
//! values exactly, reconstructions to rounding), training, and resuming a split run. The split
//! is forced on lavapipe by planning against a tiny binding limit.

mod common;

use std::path::{Path, PathBuf};

use common::training::run_options as options;
use common::{gpu, random_sae, random_vec, rng, temp_dir, POISON};
use sae_wgpu::data::synth::{write_synthetic, SynthConfig};
use sae_wgpu::gpu::{AdapterRequest, Gpu, Recorder};
use sae_wgpu::run::train::{train, ExportFormat, TrainConfig};
use sae_wgpu::sae::arch::{Architecture, L0Penalty};
use sae_wgpu::sae::blocks::LatentBlocks;
use sae_wgpu::sae::formats::load_sae;
use sae_wgpu::sae::forward::{record_forward, ForwardBuffers, GpuSae};
use sae_wgpu::sae::params::{Activation, SaeParams};

struct Forward {
    idx: Vec<u32>,
    val: Vec<f32>,
    x_hat: Vec<f32>,
    active: Option<Vec<u32>>,
}

fn forward(gpu: &Gpu, params: &SaeParams, layout: LatentBlocks, x: &[f32], rows: usize) -> Forward {
    let sae = GpuSae::upload_blocks(gpu, params, 24, layout).unwrap();
    let fw = ForwardBuffers::new(gpu, &sae, rows).unwrap();
    gpu.write(&fw.x, x).unwrap();
    for out in [&fw.top_idx, &fw.top_val, &fw.x_hat] {
        gpu.fill_u32(out, POISON);
    }
    if let Some(active) = &fw.active {
        gpu.fill_u32(active, POISON);
    }
    let mut rec = Recorder::new(gpu, "forward");
    record_forward(&mut rec, &sae, &fw, rows).unwrap();
    rec.submit().unwrap();
    Forward {
        idx: gpu.read(&fw.top_idx).unwrap(),
        val: gpu.read(&fw.top_val).unwrap(),
        x_hat: gpu.read(&fw.x_hat).unwrap(),
        active: fw.active.as_ref().map(|a| gpu.read(a).unwrap()),
    }
}

fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    let (mut diff, mut norm) = (0.0f64, 0.0f64);
    for (x, y) in a.iter().zip(b) {
        assert!(x.is_finite() && y.is_finite(), "non-finite output");
        diff += (f64::from(*x) - f64::from(*y)).powi(2);
        norm += f64::from(*y).powi(2);
    }
    (diff / norm.max(f64::MIN_POSITIVE)).sqrt()
}

#[test]
fn split_forward_matches_one_buffer() {
    let Some(gpu) = gpu() else { return };
    // (d_in, d_sae, rows, activation, latents per block): unaligned widths, blocks shorter
    // than k (each then offers all its latents), ReLU with a cap.
    let cases = [
        (7, 103, 33, Activation::TopK { k: 5 }, 20),
        (16, 64, 9, Activation::TopK { k: 24 }, 12),
        (16, 61, 1, Activation::TopK { k: 61 }, 8),
        (12, 77, 17, Activation::Relu, 16),
        (
            5,
            50,
            6,
            Activation::JumpRelu {
                threshold: vec![0.2; 50],
            },
            7,
        ),
    ];
    for (case, (d_in, d_sae, rows, activation, per_block)) in cases.into_iter().enumerate() {
        let params = random_sae(case as u64, d_in, d_sae, activation);
        let x = random_vec(&mut rng(100 + case as u64), rows * d_in, 1.0);
        let limit = (4 * d_in.max(rows) * per_block + 16) as u64;
        let split = LatentBlocks::plan(d_in, d_in, d_sae, rows, limit).unwrap();
        assert!(split.ranges.len() >= 3, "case {case}: {split:?}");
        let whole = forward(
            gpu,
            &params,
            LatentBlocks::single(d_in, d_in, d_sae),
            &x,
            rows,
        );
        let parts = forward(gpu, &params, split, &x, rows);
        assert_eq!(parts.idx, whole.idx, "case {case}: TopK ids");
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        assert_eq!(
            bits(&parts.val),
            bits(&whole.val),
            "case {case}: TopK values"
        );
        assert_eq!(parts.active, whole.active, "case {case}: active counts");
        let err = rel_diff(&parts.x_hat, &whole.x_hat);
        assert!(err <= 1e-6, "case {case}: x_hat differs by {err:e}");
    }
}

fn data(dir: &Path) -> Vec<PathBuf> {
    let synth = SynthConfig {
        d_in: 64,
        n_features: 80,
        rows_per_shard: 2000,
        shards: 1,
        mean_active: 3.0,
        seed: 9,
        ..SynthConfig::default()
    };
    write_synthetic(&synth, &dir.join("data")).unwrap()
}

fn config(shards: Vec<PathBuf>) -> TrainConfig {
    let mut config = common::training::tiny_config(shards, 64, 6, 30);
    config.data.batch_size = 16;
    config.auxk.auxk_k = 4;
    // Dead latents appear within the run, so AuxK's masked TopK across blocks runs too.
    config.auxk.dead_tokens = 64;
    config.output.checkpoint_every = 10;
    config.init.init_sample_rows = 512;
    config
}

fn all_weights(dir: &Path) -> Vec<f32> {
    let p = load_sae(&dir.join("sparsify")).unwrap().params;
    [p.w_enc, p.b_enc, p.w_dec, p.b_dec].concat()
}

#[test]
fn split_training_matches_one_buffer_and_resumes_exactly() {
    let Some(whole_gpu) = gpu() else { return };
    let root = temp_dir("split-train");
    let shards = data(&root);
    // 16 latents per block: W_enc and W_dec blocks of [64, 16] f32 = 4 KiB (the smallest
    // limit the fixed-size reduction scratch buffers fit in).
    let limit = 4 * 64 * 16 + 16;
    let split_gpu = Gpu::new(&AdapterRequest {
        max_binding_override: Some(limit),
        ..AdapterRequest::default()
    })
    .unwrap();
    let plan = LatentBlocks::plan(64, 64, 64, 16, split_gpu.binding_limit()).unwrap();
    assert_eq!(plan.ranges.len(), 4, "{plan:?}");

    let whole = root.join("whole");
    train(
        whole_gpu,
        Some(config(shards.clone())),
        &options(&whole, false, None),
    )
    .unwrap();
    let split = root.join("split");
    train(
        &split_gpu,
        Some(config(shards.clone())),
        &options(&split, false, None),
    )
    .unwrap();
    let err = rel_diff(&all_weights(&split), &all_weights(&whole));
    eprintln!("split vs one buffer after 30 steps: relative difference {err:e}");
    assert!(
        err <= 1e-4,
        "split training differs from one buffer by {err:e}"
    );

    // Checkpoints of a split run hold the full layout and resume bit for bit.
    let resumed = root.join("resumed");
    train(
        &split_gpu,
        Some(config(shards.clone())),
        &options(&resumed, false, Some(17)),
    )
    .unwrap();
    train(&split_gpu, None, &options(&resumed, true, None)).unwrap();
    let bits = |v: Vec<f32>| v.into_iter().map(f32::to_bits).collect::<Vec<_>>();
    assert!(
        bits(all_weights(&resumed)) == bits(all_weights(&split)),
        "a resumed split run differs from the uninterrupted one"
    );
    // …and a checkpoint written split resumes on a device that needs no split.
    let crossed = root.join("crossed");
    train(
        &split_gpu,
        Some(config(shards)),
        &options(&crossed, false, Some(17)),
    )
    .unwrap();
    train(whole_gpu, None, &options(&crossed, true, None)).unwrap();
    let err = rel_diff(&all_weights(&crossed), &all_weights(&whole));
    assert!(err <= 1e-4, "split → whole resume differs by {err:e}");
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn cli_encode_with_a_forced_split_writes_the_same_codes() {
    if gpu().is_none() {
        return;
    }
    let root = temp_dir("split-encode");
    let synth = SynthConfig {
        d_in: 64,
        n_features: 80,
        rows_per_shard: 300,
        shards: 1,
        mean_active: 3.0,
        seed: 4,
        ..SynthConfig::default()
    };
    let shards = write_synthetic(&synth, &root.join("data")).unwrap();
    let sae_dir = root.join("sae");
    let params = random_sae(7, 64, 96, Activation::TopK { k: 8 });
    sae_wgpu::sae::formats::save_sparsify(&sae_dir, &params).unwrap();
    let encode = |out: &str, limit: Option<&str>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_sae"));
        cmd.arg("encode")
            .arg(&sae_dir)
            .arg(&shards[0])
            .args(["--out", root.join(out).to_str().unwrap(), "--quiet"])
            .args(["--values", "f32", "--batch-size", "16"]);
        if let Some(limit) = limit {
            cmd.args(["--max-binding-bytes", limit]);
        }
        let output = cmd.output().unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let name = shards[0].file_name().unwrap();
        std::fs::read(root.join(out).join(name)).unwrap()
    };
    // 24 latents per block: 4 blocks.
    let whole = encode("whole", None);
    let split = encode("split", Some(&(4 * 64 * 24 + 16).to_string()));
    assert!(whole == split, "codes differ when the dictionary is split");
    let _ = std::fs::remove_dir_all(&root);
}

/// JumpReLU's per-block kernels (the thresholds' gradient, the penalties) on a split
/// dictionary give the one-buffer run's weights and thresholds.
#[test]
fn split_jumprelu_training_matches_one_buffer() {
    let Some(whole_gpu) = gpu() else { return };
    let root = temp_dir("split-jumprelu");
    let shards = data(&root);
    let split_gpu = Gpu::new(&AdapterRequest {
        max_binding_override: Some(4 * 64 * 16 + 16),
        ..AdapterRequest::default()
    })
    .unwrap();
    let jumprelu = |shards: Vec<PathBuf>| {
        let mut config = config(shards);
        config.model.architecture = Architecture::JumpRelu;
        config.output.format = ExportFormat::Saelens;
        config.model.k = 64; // the cap: every code above its threshold
        config.model.settings.jumprelu.l0_coefficient = 0.1;
        config.model.settings.jumprelu.l0_warmup_steps = 5;
        config.model.settings.jumprelu.l0_penalty = L0Penalty::Tanh;
        config.model.settings.penalized.clip_grad_norm = Some(1.0);
        config.model.settings.jumprelu.jumprelu_init_threshold = 0.05;
        config
    };
    let weights = |dir: &Path| {
        let p = load_sae(&dir.join("saelens")).unwrap().params;
        let Activation::JumpRelu { threshold } = p.activation else {
            panic!("{}: not exported as JumpReLU", dir.display())
        };
        [p.w_enc, p.b_enc, p.w_dec, p.b_dec, threshold].concat()
    };
    let whole = root.join("whole");
    train(
        whole_gpu,
        Some(jumprelu(shards.clone())),
        &options(&whole, false, None),
    )
    .unwrap();
    let split = root.join("split");
    train(
        &split_gpu,
        Some(jumprelu(shards)),
        &options(&split, false, None),
    )
    .unwrap();
    let err = rel_diff(&weights(&split), &weights(&whole));
    eprintln!("split JumpReLU vs one buffer after 30 steps: relative difference {err:e}");
    assert!(err <= 1e-4, "split JumpReLU training differs by {err:e}");
    let _ = std::fs::remove_dir_all(&root);
}
