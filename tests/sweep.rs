//! Sweeps: a 4-member sweep trained from one pass over the data ends with each member's
//! weights bit-identical to that member trained alone; a sweep stopped (and one killed while
//! writing a step's checkpoints) resumes to the uninterrupted result; `--sweep-part` over two
//! processes gives the unsplit sweep's weights; a damaged or missing sweep.json is a one-line
//! error.

mod common;

use std::path::{Path, PathBuf};

use common::training::{run_options, tiny_config};
use common::{gpu, sae_fails, temp_dir};
use sae_wgpu::data::parts::Part;
use sae_wgpu::data::synth::{write_synthetic, SynthConfig};
use sae_wgpu::run::train::{plan, read_sweep, train_sweep, SweepAxes, SweepFile};
use sae_wgpu::run::train::{train, RunOptions, TrainConfig};
use sae_wgpu::sae::arch::Architecture;
use sae_wgpu::sae::checkpoint;
use sae_wgpu::sae::formats::load_sae;
use sae_wgpu::sae::params::Activation;

fn data(dir: &Path) -> Vec<PathBuf> {
    let synth = SynthConfig {
        d_in: 12,
        n_features: 24,
        rows_per_shard: 2000,
        shards: 2,
        mean_active: 3.0,
        seed: 9,
        ..SynthConfig::default()
    };
    write_synthetic(&synth, &dir.join("data")).unwrap()
}

fn base(shards: Vec<PathBuf>) -> TrainConfig {
    let mut config = tiny_config(shards, 36, 3, 30);
    config.data.batch_size = 64;
    config.auxk.dead_tokens = 256;
    config.output.checkpoint_every = 10;
    config
}

/// TopK and BatchTopK × seeds 0, 1 at k 3, d_sae 36 (3 × d_in).
fn four_members(shards: Vec<PathBuf>) -> SweepFile {
    let axes = SweepAxes {
        architecture: vec![Architecture::TopK, Architecture::BatchTopK],
        l1_coefficient: vec![],
        l0_coefficient: vec![],
        relu_cap: 256,
        k: vec![3],
        d_sae: vec![36],
        lr: vec![],
        seed: vec![0, 1],
        format: None,
    };
    plan(&base(shards), 12, &axes, |_| 1e-2).unwrap()
}

/// The exported weights' bits, BatchTopK's θ (its JumpReLU threshold) included.
fn bits(dir: &Path) -> Vec<u32> {
    let p = load_sae(dir).unwrap().params;
    let threshold = match &p.activation {
        Activation::JumpRelu { threshold } => threshold.clone(),
        _ => Vec::new(),
    };
    [&p.w_enc, &p.b_enc, &p.w_dec, &p.b_dec, &threshold]
        .iter()
        .flat_map(|v| v.iter().map(|x| x.to_bits()))
        .collect()
}

fn options(dir: &Path, resume: bool, stop_after: Option<u64>) -> RunOptions {
    run_options(dir, resume, stop_after)
}

#[test]
fn sweep_members_equal_runs_alone_and_resume_and_parts() {
    let Some(gpu) = gpu() else { return };
    let root = temp_dir("sweep");
    let shards = data(&root);
    let sweep = four_members(shards.clone());
    let names: Vec<String> = sweep.runs.iter().map(|r| r.dir.clone()).collect();
    assert_eq!(
        names,
        [
            "topk-k3-x3-s0",
            "topk-k3-x3-s1",
            "batchtopk-k3-x3-s0",
            "batchtopk-k3-x3-s1"
        ]
    );

    let whole = root.join("whole");
    let report = train_sweep(
        gpu,
        Some(sweep.clone()),
        &whole,
        None,
        &options(&whole, false, None),
    )
    .unwrap();
    assert_eq!(report.reports.len(), 4);
    let written = read_sweep(&whole).unwrap();
    for run in &written.runs {
        assert!(
            run.fvu.is_some_and(|f| f.is_finite() && f < 1.0) && run.l0.is_some(),
            "{}: no held-out figures in sweep.json",
            run.dir
        );
    }

    // Each member alone: the same configuration (seed 0 members with the default data seed,
    // which is their seed), its own pass over the data.
    for run in &sweep.runs {
        let alone = root.join("alone").join(&run.dir);
        let mut config = run.config.clone();
        if config.init.seed == 0 {
            config.data.data_seed = None;
        }
        train(gpu, Some(config), &options(&alone, false, None)).unwrap();
        assert!(
            bits(&alone) == bits(&whole.join(&run.dir)),
            "{}: the sweep member differs from the run alone",
            run.dir
        );
    }
    let differ = bits(&whole.join(&names[0])) != bits(&whole.join(&names[1]));
    assert!(differ, "members with different seeds are identical");

    // Stopped after step 20 (checkpoints at 10 and 20), then killed while writing step 20's
    // checkpoints: one member lacks it, so the sweep resumes from step 10.
    let stopped = root.join("stopped");
    train_sweep(
        gpu,
        Some(sweep.clone()),
        &stopped,
        None,
        &options(&stopped, false, Some(20)),
    )
    .unwrap();
    let newest = checkpoint::path_for(&stopped.join(&names[2]).join("checkpoints"), 20);
    std::fs::remove_file(&newest).unwrap();
    train_sweep(gpu, None, &stopped, None, &options(&stopped, true, None)).unwrap();
    for name in &names {
        assert!(
            bits(&stopped.join(name)) == bits(&whole.join(name)),
            "{name}: the resumed sweep differs from the uninterrupted one"
        );
    }

    // Two parts into one directory, one after the other as two processes would.
    let split = root.join("split");
    for index in 0..2 {
        let part = Part { index, count: 2 };
        let report = train_sweep(
            gpu,
            Some(sweep.clone()),
            &split,
            Some(part),
            &options(&split, false, None),
        )
        .unwrap();
        assert_eq!(report.reports.len(), 2);
    }
    let merged = read_sweep(&split).unwrap();
    for (run, name) in merged.runs.iter().zip(&names) {
        assert!(
            run.fvu.is_some(),
            "{name}: sweep.json incomplete after both parts"
        );
        assert!(
            bits(&split.join(name)) == bits(&whole.join(name)),
            "{name}: the split sweep differs from the unsplit one"
        );
    }

    // The Slurm recipe (examples/slurm/submit-sweep.sh: a job array of 2 parts, then the
    // frontier), with a stand-in sbatch, against the same sweep unsplit.
    let s = |p: &Path| p.display().to_string();
    let sweep_args = "--architecture topk,batchtopk --k 3 --seed 0,1 --expansion-factor 3 \
        --batch-size 64 --tokens 1280 --eval-fraction 0.05 --checkpoint-every 0 --no-tune";
    let unsplit = root.join("cli-unsplit");
    let mut args = vec![
        "train".to_string(),
        s(&root.join("data")),
        "--out".into(),
        s(&unsplit),
    ];
    args.extend(sweep_args.split_whitespace().map(String::from));
    args.push("--quiet".into());
    common::sae_ok(&args);
    let slurm = root.join("slurm");
    let status = std::process::Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/slurm/submit-sweep.sh"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                s(&common::fake_slurm_bin(&root)),
                std::env::var("PATH").unwrap()
            ),
        )
        .env("SHARDS", root.join("data"))
        .env("OUT", &slurm)
        .env("N", "2")
        .env("EVAL", &shards[0])
        .env("SWEEP_ARGS", sweep_args)
        .env("SAE_BIN", env!("CARGO_BIN_EXE_sae"))
        .env("FAKE_SLURM_LOG", root.join("slurm.log"))
        .status()
        .unwrap();
    assert!(
        status.success(),
        "submit-sweep.sh: see {}",
        s(&root.join("slurm.log"))
    );
    for name in &names {
        assert!(
            bits(&slurm.join(name)) == bits(&unsplit.join(name)),
            "{name}: the Slurm sweep differs from the unsplit one"
        );
    }
    let frontier: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(slurm.join("frontier/frontier.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(frontier["runs"].as_array().map(Vec::len), Some(4));

    // A damaged or missing sweep.json: one line naming it, nothing trained.
    std::fs::write(whole.join("sweep.json"), "{\"runs\": [").unwrap();
    sae_fails(
        &["train", "--resume", &s(&whole)],
        &["sweep.json", "damaged"],
    );
    std::fs::remove_file(whole.join("sweep.json")).unwrap();
    sae_fails(
        &["train", "--resume", &s(&whole)],
        &["sweep.json", "cannot read"],
    );
    let _ = std::fs::remove_dir_all(&root);
}

/// JumpReLU over two L0 coefficients: the members' names, each equal to the run alone, and a
/// stopped sweep resumed from its checkpoints (thresholds and their Adam moments included)
/// equal to the uninterrupted one.
#[test]
fn jumprelu_sweep_equals_runs_alone_and_resumes() {
    let Some(gpu) = gpu() else { return };
    let root = temp_dir("sweep-jumprelu");
    let shards = data(&root);
    let mut base = base(shards);
    base.model.settings.penalized.clip_grad_norm = Some(1.0);
    base.model.settings.jumprelu.l0_warmup_steps = 5;
    base.model.settings.jumprelu.jumprelu_init_threshold = 0.05;
    let axes = SweepAxes {
        architecture: vec![Architecture::JumpRelu],
        l1_coefficient: vec![],
        l0_coefficient: vec![0.1, 0.3],
        relu_cap: 36,
        k: vec![],
        d_sae: vec![36],
        lr: vec![],
        seed: vec![],
        format: None,
    };
    let sweep = plan(&base, 12, &axes, |_| 1e-2).unwrap();
    let names: Vec<String> = sweep.runs.iter().map(|r| r.dir.clone()).collect();
    assert_eq!(names, ["jumprelu-l0_0.1-x3", "jumprelu-l0_0.3-x3"]);
    assert_eq!(sweep.runs[1].l0_coefficient, Some(0.3));

    let whole = root.join("whole");
    train_sweep(
        gpu,
        Some(sweep.clone()),
        &whole,
        None,
        &options(&whole, false, None),
    )
    .unwrap();
    let threshold_of = |dir: &Path| match load_sae(dir).unwrap().params.activation {
        Activation::JumpRelu { threshold } => threshold,
        other => panic!("{}: exported as {other:?}", dir.display()),
    };
    let trained = threshold_of(&whole.join(&names[0]));
    assert!(
        trained.iter().any(|&t| t != 0.05),
        "the thresholds did not train"
    );
    let alone = root.join("alone");
    train(
        gpu,
        Some(sweep.runs[1].config.clone()),
        &options(&alone, false, None),
    )
    .unwrap();
    assert!(
        bits(&alone) == bits(&whole.join(&names[1])),
        "the JumpReLU member differs from the run alone"
    );

    let stopped = root.join("stopped");
    train_sweep(
        gpu,
        Some(sweep),
        &stopped,
        None,
        &options(&stopped, false, Some(20)),
    )
    .unwrap();
    train_sweep(gpu, None, &stopped, None, &options(&stopped, true, None)).unwrap();
    for name in &names {
        assert!(
            bits(&stopped.join(name)) == bits(&whole.join(name)),
            "{name}: the resumed JumpReLU sweep differs from the uninterrupted one"
        );
    }
}
