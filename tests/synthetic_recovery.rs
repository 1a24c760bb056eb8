//! `sae train` on synthetic data from a known dictionary must recover the features, for every
//! architecture: mean max cosine similarity (MMCS) of learned decoder rows to the true features
//! (≥ 0.95 for TopK and ReLU, 0.9 for BatchTopK and JumpReLU, 0.85 for Matryoshka); and `sae eval`
//! of the exported SAE gives the run's held-out figures.

mod common;

use common::training::tiny_config;
use common::{gpu, sae_ok};
use sae_wgpu::data::synth::{mmcs, write_synthetic, SynthConfig};
use sae_wgpu::run::train::{default_format, train, RunOptions};
use sae_wgpu::sae::arch::Architecture;
use sae_wgpu::sae::formats::{load_sae, read_tensor_f32};
use safetensors::SafeTensors;

#[test]
fn training_recovers_a_planted_dictionary() {
    let Some(gpu) = gpu() else { return };
    let dir = std::env::temp_dir().join(format!("sae-synth-recovery-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let synth = SynthConfig {
        d_in: 16,
        n_features: 32,
        rows_per_shard: 20_000,
        shards: 1,
        mean_active: 3.0,
        power_law_exponent: 0.5,
        noise_std: 0.0,
        magnitudes: (0.5, 1.5),
        seed: 1,
        circle: None,
        transcoder: None,
    };
    let shards = write_synthetic(&synth, &dir.join("data")).unwrap();
    let heldout_synth = SynthConfig {
        rows_per_shard: 2_000,
        ..synth.clone()
    };
    let heldout = write_synthetic(&heldout_synth, &dir.join("heldout")).unwrap();
    let truth_path = dir
        .join("data")
        .join(sae_wgpu::data::synth::TRUE_DICTIONARY);
    let bytes = std::fs::read(&truth_path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let truth = read_tensor_f32(&st, "features", &[32, 16], &truth_path).unwrap();
    for architecture in [
        Architecture::TopK,
        Architecture::BatchTopK,
        Architecture::Matryoshka,
        Architecture::Relu,
        Architecture::JumpRelu,
    ] {
        let steps = 1000;
        let k = 4;
        let mut config = tiny_config(shards.clone(), 64, k, steps);
        config.model.architecture = architecture;
        config.output.format = default_format(architecture, false);
        config.data.eval_inputs = heldout.clone();
        if architecture == Architecture::Relu {
            config.model.k = 64; // the cap: every code
            config.model.settings.relu.l1_coefficient = 1.0;
            config.model.settings.relu.l1_warmup_steps = 50;
            config.model.settings.penalized.clip_grad_norm = Some(1.0);
        }
        if architecture == Architecture::JumpRelu {
            config.model.k = 64; // the cap: every code above its threshold
            config.model.settings.jumprelu.l0_coefficient = 0.1;
            config.model.settings.jumprelu.l0_warmup_steps = 50;
            config.model.settings.penalized.clip_grad_norm = Some(1.0);
        }
        if architecture == Architecture::Matryoshka {
            // A prefix as wide as the true dictionary: it alone must reconstruct the data.
            config.model.settings.matryoshka.matryoshka_widths = vec![32];
        }
        let run = dir.join(architecture.name());
        let options = RunOptions {
            run_dir: run.clone(),
            resume: false,
            overwrite: false,
            quiet: true,
            stop_after: None,
            tune: false,
        };
        let report = train(gpu, Some(config), &options).unwrap();
        let learned = load_sae(&run).unwrap();
        let score = mmcs(&truth, &learned.params.w_dec, 16);
        let heldout_figures = report.heldout.unwrap();
        let name = architecture.name();
        eprintln!(
            "{name}: MMCS {score:.4}, held-out FVU {:.4}, L0 {:.2}",
            heldout_figures.fvu, heldout_figures.l0
        );
        // TopK's bar from before the other architectures (ReLU + L1 reaches 0.98); the
        // issue's bar (0.9) for BatchTopK and JumpReLU (0.94 at λ 0.1 with the step penalty).
        // Matryoshka reaches 0.87 here (0.78 with the default prefixes): its prefixes trade
        // per-feature fidelity for nesting, so its bar is 0.85. SAELens 6.54.12 on the same
        // data and settings reaches 0.815–0.845 over three seeds (BatchTopK 0.88–0.92, TopK
        // 0.96; BENCHMARKS.md).
        let bar = match architecture {
            Architecture::TopK | Architecture::Relu => 0.95,
            Architecture::BatchTopK | Architecture::JumpRelu => 0.9,
            _ => 0.85,
        };
        assert!(
            score >= bar,
            "{name}: MMCS {score:.4} < {bar} (held-out FVU {:.4})",
            heldout_figures.fvu
        );
        // Read back by `sae eval` (BatchTopK, Matryoshka and JumpReLU as the exported SAELens
        // jumprelu, ReLU as standard): the held-out figures of the run.
        let exported = match architecture {
            Architecture::TopK => "topk",
            Architecture::Relu => "standard",
            _ => "jumprelu",
        };
        if architecture != Architecture::TopK {
            assert!(
                !run.join("sparsify").exists(),
                "{name} exported as sparsify"
            );
        }
        assert_eq!(learned.provenance.architecture.to_string(), exported);
        let out = sae_ok(&[
            "eval",
            &run.display().to_string(),
            &heldout[0].display().to_string(),
            "--json",
            "--batch-size",
            "128",
        ]);
        let eval: serde_json::Value = serde_json::from_str(&out).unwrap();
        let fvu = eval["fvu"].as_f64().unwrap();
        assert!(
            (fvu - heldout_figures.fvu).abs() <= 1e-6 * heldout_figures.fvu,
            "{name}: sae eval FVU {fvu} against the run's held-out {}",
            heldout_figures.fvu
        );
        assert!((eval["l0"].as_f64().unwrap() - heldout_figures.l0).abs() < 1e-9);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
