//! A skip-transcoder of every architecture, trained on a planted transcoder (`sae synth
//! --transcoder`: x = Σ sᵢaᵢuᵢ + noise with random signs sᵢ, y = Σ aᵢvᵢ + S·x), recovers the
//! output directions V (decoder rows, mean max cosine ≥ 0.9), the input directions (encoder
//! columns, ≥ 0.9 against U's dual basis up to sign: the encoder reads aᵢ from x through the
//! direction orthogonal to the other features, which is uᵢ itself only for orthogonal features;
//! against U itself it reaches about 0.8 here) and the skip S (relative error ≤ 0.2 for TopK and
//! BatchTopK, which reach 0.07 and 0.14; ≤ 0.4 for the others, at 0.15–0.30: the ReLU family's
//! penalty and Matryoshka's prefixes reward moving some of the features' linear part into the
//! free skip path). Targets are narrower than
//! inputs (d_out 48, d_in 64) except for TopK, whose only transcoder layout (sparsify's) writes
//! what it reads. `sae eval --target-tensor` of each export gives the run's held-out figures,
//! and without the targets it is refused in one line.

mod common;

use std::path::{Path, PathBuf};

use common::training::tiny_config;
use common::{gpu, sae_fails, sae_ok};
use sae_wgpu::data::synth::{
    mmcs, write_synthetic, PlantedTranscoder, SynthConfig, TARGET_TENSOR, TRUE_DICTIONARY,
};
use sae_wgpu::run::train::{default_format, train, RunOptions};
use sae_wgpu::sae::arch::Architecture;
use sae_wgpu::sae::formats::{load_sae, read_tensor_f32};
use safetensors::SafeTensors;

const D_IN: usize = 64;
const FEATURES: usize = 32;

struct Planted {
    train: Vec<PathBuf>,
    heldout: Vec<PathBuf>,
    u: Vec<f32>,
    v: Vec<f32>,
    s: Vec<f32>,
    d_out: usize,
}

fn plant(dir: &Path, d_out: usize) -> Planted {
    let synth = SynthConfig {
        d_in: D_IN,
        n_features: FEATURES,
        rows_per_shard: 20_000,
        shards: 1,
        mean_active: 3.0,
        power_law_exponent: 0.5,
        noise_std: 0.1,
        magnitudes: (0.5, 1.5),
        seed: 1,
        circle: None,
        transcoder: Some(PlantedTranscoder {
            d_out,
            skip_scale: 1.0,
            target_noise_std: 0.0,
        }),
    };
    let train = write_synthetic(&synth, &dir.join("data")).unwrap();
    let heldout_synth = SynthConfig {
        rows_per_shard: 2_000,
        ..synth
    };
    let heldout = write_synthetic(&heldout_synth, &dir.join("heldout")).unwrap();
    let path = dir.join("data").join(TRUE_DICTIONARY);
    let bytes = std::fs::read(&path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let read = |name: &str, shape: &[usize]| read_tensor_f32(&st, name, shape, &path).unwrap();
    Planted {
        train,
        heldout,
        u: read("features", &[FEATURES, D_IN]),
        v: read("output_features", &[FEATURES, d_out]),
        s: read("skip", &[d_out, D_IN]),
        d_out,
    }
}

/// The dual basis of U's rows ([n, d]): rows D with D·Uᵀ = I, in U's span.
fn dual_basis(u: &[f32], n: usize, d: usize) -> Vec<f32> {
    // D = (U Uᵀ)⁻¹ U, by Gauss–Jordan elimination on [U Uᵀ | U] in f64.
    let w = n + d;
    let mut m = vec![0.0f64; n * w];
    for i in 0..n {
        for j in 0..n {
            m[i * w + j] = (0..d)
                .map(|c| f64::from(u[i * d + c]) * f64::from(u[j * d + c]))
                .sum();
        }
        for c in 0..d {
            m[i * w + n + c] = f64::from(u[i * d + c]);
        }
    }
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&a, &b| m[a * w + col].abs().total_cmp(&m[b * w + col].abs()))
            .unwrap();
        for k in 0..w {
            m.swap(col * w + k, pivot * w + k);
        }
        let p = m[col * w + col];
        (0..w).for_each(|k| m[col * w + k] /= p);
        for r in (0..n).filter(|&r| r != col) {
            let f = m[r * w + col];
            for k in 0..w {
                m[r * w + k] -= f * m[col * w + k];
            }
        }
    }
    (0..n)
        .flat_map(|i| (0..d).map(move |c| (i, c)))
        .map(|(i, c)| m[i * w + n + c] as f32)
        .collect()
}

/// Rows and their negatives (a feature of either sign).
fn with_negatives(rows: &[f32]) -> Vec<f32> {
    rows.iter()
        .copied()
        .chain(rows.iter().map(|v| -v))
        .collect()
}

fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    let diff: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| (f64::from(*a) - f64::from(*b)).powi(2))
        .sum();
    let norm: f64 = want.iter().map(|b| f64::from(*b).powi(2)).sum();
    (diff / norm).sqrt()
}

#[test]
fn skip_transcoders_recover_a_planted_transcoder() {
    let Some(gpu) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("sae-transcoder-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let narrow = plant(&dir.join("narrow"), 48);
    let square = plant(&dir.join("square"), D_IN);
    for architecture in [
        Architecture::TopK,
        Architecture::BatchTopK,
        Architecture::Matryoshka,
        Architecture::Relu,
        Architecture::JumpRelu,
    ] {
        let planted = match architecture {
            Architecture::TopK => &square,
            _ => &narrow,
        };
        check(gpu, &dir, architecture, planted);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn check(gpu: &'static sae_wgpu::gpu::Gpu, dir: &Path, architecture: Architecture, p: &Planted) {
    let name = architecture.name();
    // Two latents per feature (one for each sign), and room.
    let mut config = tiny_config(p.train.clone(), 3 * FEATURES, 4, 1000);
    config.data.target_tensor = Some(TARGET_TENSOR.into());
    config.data.eval_inputs = p.heldout.clone();
    config.model.architecture = architecture;
    config.model.transcoder = true;
    config.model.skip = true;
    config.output.format = default_format(architecture, true);
    config.auxk.auxk_k = p.d_out / 2;
    match architecture {
        Architecture::Relu => {
            config.model.k = 3 * FEATURES; // the cap: every code
            config.model.settings.relu.l1_coefficient = 0.03;
            config.model.settings.relu.l1_warmup_steps = 50;
            config.model.settings.penalized.clip_grad_norm = Some(1.0);
        }
        Architecture::JumpRelu => {
            config.model.k = 3 * FEATURES;
            config.model.settings.jumprelu.l0_coefficient = 0.03;
            config.model.settings.jumprelu.l0_warmup_steps = 50;
            config.model.settings.penalized.clip_grad_norm = Some(1.0);
        }
        // A prefix holding a latent for each feature and sign.
        Architecture::Matryoshka => config.model.settings.matryoshka.matryoshka_widths = vec![64],
        _ => {}
    }
    let run = dir.join(name);
    let options = RunOptions {
        run_dir: run.clone(),
        resume: false,
        overwrite: false,
        quiet: true,
        stop_after: None,
        tune: false,
    };
    let report = train(gpu, Some(config), &options).unwrap();
    let heldout = report.heldout.unwrap();
    let learned = load_sae(&run).unwrap().params;
    assert_eq!(learned.d_out(), p.d_out, "{name}: d_out");
    let w_skip = learned.w_skip().expect("a skip-transcoder's W_skip");
    let encoder = learned.w_enc_transposed();
    let v_score = mmcs(&p.v, &learned.w_dec, p.d_out);
    let dual = dual_basis(&p.u, FEATURES, D_IN);
    let u_dual = mmcs(&dual, &with_negatives(&encoder), D_IN);
    let u_plain = mmcs(&p.u, &with_negatives(&encoder), D_IN);
    let skip_error = relative_error(w_skip, &p.s);
    eprintln!(
        "{name}: V {v_score:.4}, U (dual) {u_dual:.4}, U {u_plain:.4}, ‖W_skip − S‖/‖S‖ {skip_error:.4}, held-out FVU {:.4}, L0 {:.2}",
        heldout.fvu, heldout.l0
    );
    assert!(v_score >= 0.9, "{name}: V recovered at {v_score:.4}");
    assert!(u_dual >= 0.9, "{name}: U's dual recovered at {u_dual:.4}");
    let bar = match architecture {
        Architecture::TopK | Architecture::BatchTopK => 0.2,
        _ => 0.4,
    };
    assert!(skip_error <= bar, "{name}: W_skip {skip_error:.4} from S");
    // `sae eval` of the export, against the targets: the run's held-out figures.
    let (run_arg, rows) = (
        run.display().to_string(),
        p.heldout[0].display().to_string(),
    );
    let out = sae_ok(&[
        "eval",
        &run_arg,
        &rows,
        "--target-tensor",
        TARGET_TENSOR,
        "--json",
        "--batch-size",
        "128",
    ]);
    let eval: serde_json::Value = serde_json::from_str(&out).unwrap();
    let fvu = eval["fvu"].as_f64().unwrap();
    assert!(
        (fvu - heldout.fvu).abs() <= 1e-5 * heldout.fvu,
        "{name}: sae eval FVU {fvu} against the run's held-out {}",
        heldout.fvu
    );
    assert_eq!(eval["sae"]["transcoder"], true, "{name}: provenance");
    assert_eq!(eval["sae"]["skip"], true, "{name}: provenance");
    sae_fails(&["eval", &run_arg, &rows], &["transcoder", "--target"]);
}
