//! Bad input to `sae train`, through the real binary: exit code ≠ 0, one line on stderr that
//! names the file and the problem, no panic, and nothing left behind that looks complete.

mod common;

use common::temp_dir;

use std::path::Path;
use std::process::{Command, Output};

use sae_wgpu::io::{write_safetensors, TensorOut};

fn sae() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sae"))
}

fn shard(path: &Path, rows: usize, d: usize, fill: impl Fn(usize) -> f32) {
    let data: Vec<f32> = (0..rows * d).map(fill).collect();
    write_safetensors(
        path,
        &[TensorOut::f32("activations", &[rows, d], &data)],
        None,
    )
    .unwrap();
}

fn noise(i: usize) -> f32 {
    ((i * 7919) % 101) as f32 / 50.0 - 1.0
}

/// The stderr lines that are ours (drivers may print their own noise).
fn our_lines(output: &Output) -> Vec<String> {
    String::from_utf8_lossy(&output.stderr)
        .lines()
        .filter(|l| l.starts_with("error: ") && !l.contains("XDG_RUNTIME_DIR"))
        .map(String::from)
        .collect()
}

/// Runs `sae train` and checks the failure contract; returns the error line.
fn fails(args: &[&str], out: &Path, expect: &[&str]) -> String {
    if common::gpu().is_none() {
        return String::new();
    }
    let mut full: Vec<&std::ffi::OsStr> = vec!["train".as_ref()];
    full.extend(args.iter().map(std::ffi::OsStr::new));
    full.extend(["--out".as_ref(), out.as_os_str(), "--quiet".as_ref()]);
    let line = common::sae_fails(&full, expect);
    assert!(!out.join("sparsify").exists() && !out.join("summary.json").exists());
    line
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn missing_file_and_empty_directory() {
    let dir = temp_dir("missing");
    let missing = dir.join("nope.safetensors");
    fails(
        &[&s(&missing)],
        &dir.join("run1"),
        &["nope.safetensors", "no such file"],
    );
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails(
        &[&s(&empty)],
        &dir.join("run2"),
        &["empty", "holds no shards (.safetensors, .npy, .npz"],
    );
}

#[test]
fn wrong_tensor_name_rank_and_dtype() {
    let dir = temp_dir("tensor");
    let good = dir.join("good.safetensors");
    shard(&good, 64, 4, noise);
    fails(
        &[&s(&good), "--tensor", "resid"],
        &dir.join("r1"),
        &["good.safetensors", "no tensor named 'resid'", "activations"],
    );

    let rank1 = dir.join("rank1.safetensors");
    write_safetensors(
        &rank1,
        &[TensorOut::f32("activations", &[64], &vec![0.5; 64])],
        None,
    )
    .unwrap();
    fails(
        &[&s(&rank1)],
        &dir.join("r2"),
        &["rank1.safetensors", "shape [64]"],
    );

    let rank4 = dir.join("rank4.safetensors");
    write_safetensors(
        &rank4,
        &[TensorOut::f32("activations", &[2, 2, 2, 8], &vec![0.5; 64])],
        None,
    )
    .unwrap();
    fails(
        &[&s(&rank4)],
        &dir.join("r3"),
        &["rank4.safetensors", "shape [2, 2, 2, 8]"],
    );

    let ints = dir.join("ints.safetensors");
    write_safetensors(
        &ints,
        &[TensorOut::i32("activations", &[16, 4], &vec![1; 64])],
        None,
    )
    .unwrap();
    fails(
        &[&s(&ints)],
        &dir.join("r4"),
        &["ints.safetensors", "dtype I32"],
    );
}

#[test]
fn d_in_differs_between_shards() {
    let dir = temp_dir("din");
    let a = dir.join("a.safetensors");
    let b = dir.join("b.safetensors");
    shard(&a, 64, 4, noise);
    shard(&b, 64, 6, noise);
    fails(
        &[&s(&a), &s(&b)],
        &dir.join("run"),
        &["b.safetensors", "d_in is 6", "d_in 4"],
    );
}

#[test]
fn truncated_and_corrupt_files() {
    let dir = temp_dir("corrupt");
    let good = dir.join("good.safetensors");
    shard(&good, 64, 4, noise);
    let bytes = std::fs::read(&good).unwrap();

    let truncated = dir.join("truncated.safetensors");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    fails(
        &[&s(&truncated)],
        &dir.join("r1"),
        &["truncated.safetensors", "not a valid safetensors file"],
    );

    let huge_header = dir.join("huge_header.safetensors");
    let mut b = bytes.clone();
    b[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    std::fs::write(&huge_header, &b).unwrap();
    fails(
        &[&s(&huge_header)],
        &dir.join("r2"),
        &["huge_header.safetensors", "not a valid safetensors file"],
    );

    let not_json = dir.join("not_json.safetensors");
    let mut b = 16u64.to_le_bytes().to_vec();
    b.extend_from_slice(b"this is not json");
    std::fs::write(&not_json, &b).unwrap();
    fails(
        &[&s(&not_json)],
        &dir.join("r3"),
        &["not_json.safetensors", "not a valid safetensors file"],
    );

    let tiny = dir.join("tiny.safetensors");
    std::fs::write(&tiny, b"abc").unwrap();
    fails(&[&s(&tiny)], &dir.join("r4"), &["tiny.safetensors"]);
}

#[test]
fn non_finite_rows_are_named_or_skipped() {
    let dir = temp_dir("nan");
    let bad = dir.join("nan.safetensors");
    // Row 37 holds a NaN, row 50 an Inf.
    shard(&bad, 128, 4, |i| match i / 4 {
        37 => f32::NAN,
        50 => f32::INFINITY,
        _ => noise(i),
    });
    fails(
        &[&s(&bad), "--batch-size", "16", "--d-sae", "8", "--k", "2"],
        &dir.join("r1"),
        &["nan.safetensors", "row 37", "--skip-nonfinite"],
    );
    if common::gpu().is_none() {
        return;
    }
    let run = dir.join("r2");
    let status = sae()
        .args([
            "train",
            &s(&bad),
            "--batch-size",
            "16",
            "--d-sae",
            "8",
            "--k",
            "2",
            "--skip-nonfinite",
            "--quiet",
        ])
        .args(["--eval-fraction", "0", "--shuffle-buffer", "0"])
        .arg("--out")
        .arg(&run)
        .status()
        .unwrap();
    assert!(status.success());
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.contains("\"skipped_nonfinite\":2"), "{metrics}");
}

#[test]
fn bad_hyperparameters_and_existing_runs() {
    let dir = temp_dir("hyper");
    let good = dir.join("good.safetensors");
    shard(&good, 256, 4, noise);
    let g = s(&good);
    fails(
        &[&g, "--d-sae", "8", "--k", "9", "--batch-size", "32"],
        &dir.join("r1"),
        &["--k 9", "d_sae = 8"],
    );
    fails(
        &[&g, "--d-sae", "8", "--k", "0", "--batch-size", "32"],
        &dir.join("r2"),
        &["--k must be at least 1"],
    );
    fails(
        &[&g, "--batch-size", "0"],
        &dir.join("r3"),
        &["--batch-size"],
    );
    fails(
        &[&g, "--batch-size", "100000"],
        &dir.join("r4"),
        &["smaller than one batch"],
    );
    // Architectures and sweeps.
    let small = ["--d-sae", "8", "--batch-size", "32"];
    let with = |extra: &[&'static str]| -> Vec<&str> {
        let mut args = vec![g.as_str()];
        args.extend(small);
        args.extend(extra);
        args
    };
    fails(
        &with(&[
            "--architecture",
            "batchtopk",
            "--k",
            "2",
            "--format",
            "sparsify",
        ]),
        &dir.join("r5"),
        &["--format sparsify", "batchtopk", "saelens"],
    );
    fails(
        &with(&[
            "--architecture",
            "topk,batchtopk",
            "--k",
            "2",
            "--format",
            "both",
        ]),
        &dir.join("r6"),
        &["--format both", "batchtopk"],
    );
    fails(
        &with(&["--k", "2,9"]),
        &dir.join("r7"),
        &["sweep member topk-k9-x2", "--k 9"],
    );
    fails(
        &with(&["--k", "2,2"]),
        &dir.join("r8"),
        &["topk-k2-x2 twice"],
    );
    fails(
        &with(&["--k", "2,3", "--sweep-part", "0/3"]),
        &dir.join("r9"),
        &["--sweep-part 0/3", "only 2 members"],
    );
    fails(
        &with(&["--k", "2,3", "--sweep-part", "2/2"]),
        &dir.join("r10"),
        &["--sweep-part 2/2", "below N"],
    );
    fails(
        &with(&["--k", "2", "--architecture", "relu"]),
        &dir.join("r11"),
        &["--k", "--architecture relu"],
    );
    fails(
        &with(&["--k", "2", "--l1-coefficient", "5"]),
        &dir.join("r12"),
        &["--l1-coefficient", "relu", "topk"],
    );
    fails(
        &with(&["--architecture", "relu", "--l1-coefficient=-1"]),
        &dir.join("r13"),
        &["--l1-coefficient", "-1"],
    );
    fails(
        &with(&["--architecture", "relu", "--clip-grad-norm=-2"]),
        &dir.join("r14"),
        &["--clip-grad-norm", "-2"],
    );
    fails(
        &with(&["--k", "2", "--architecture", "jumprelu"]),
        &dir.join("r14a"),
        &["--k", "--architecture jumprelu"],
    );
    fails(
        &with(&["--k", "2", "--l0-coefficient", "1"]),
        &dir.join("r14b"),
        &["--l0-coefficient", "jumprelu", "topk"],
    );
    fails(
        &with(&["--architecture", "jumprelu", "--jumprelu-bandwidth", "-0.1"]),
        &dir.join("r14c"),
        &["--jumprelu-bandwidth", "-0.1"],
    );
    fails(
        &with(&["--architecture", "jumprelu", "--l0-coefficient=-3"]),
        &dir.join("r14d"),
        &["--l0-coefficient", "-3"],
    );
    fails(
        &with(&[
            "--architecture",
            "jumprelu",
            "--jumprelu-threshold-param",
            "log",
            "--jumprelu-init-threshold",
            "0",
        ]),
        &dir.join("r14e"),
        &["--jumprelu-init-threshold 0", "logarithm"],
    );
    fails(
        &with(&["--architecture", "jumprelu", "--format", "sparsify"]),
        &dir.join("r14f"),
        &["--format sparsify", "jumprelu"],
    );
    fails(
        &with(&[
            "--architecture",
            "matryoshka",
            "--k",
            "2",
            "--matryoshka-widths",
            "4,3",
        ]),
        &dir.join("r15"),
        &["--matryoshka-widths", "increasing"],
    );
    fails(
        &with(&[
            "--architecture",
            "matryoshka",
            "--k",
            "2",
            "--matryoshka-widths",
            "4,9",
        ]),
        &dir.join("r16"),
        &["--matryoshka-widths", "d_sae = 8"],
    );
    fails(
        &with(&["--architecture", "nonsense"]),
        &dir.join("r17"),
        &["--architecture", "nonsense"],
    );
    for r in ["r7", "r8", "r9"] {
        assert!(
            !dir.join(r).join("sweep.json").exists(),
            "{r}: sweep.json left"
        );
    }

    if common::gpu().is_none() {
        return;
    }
    let run = dir.join("done");
    let small_run = |extra: &[&str]| {
        let mut command = sae();
        command
            .args([
                "train",
                &g,
                "--d-sae",
                "8",
                "--k",
                "2",
                "--batch-size",
                "32",
                "--quiet",
            ])
            .args(extra)
            .arg("--out")
            .arg(&run);
        command.output().unwrap()
    };
    assert!(small_run(&[]).status.success());
    let output = small_run(&[]);
    assert!(!output.status.success());
    let lines = our_lines(&output);
    assert!(
        lines.len() == 1
            && lines[0].contains("already holds a run")
            && lines[0].contains("--overwrite"),
        "{lines:?}"
    );
    assert!(small_run(&["--overwrite"]).status.success());
}

#[test]
fn stream_never_repeats_rows_within_an_epoch() {
    // 100 distinct rows, a shuffle pool larger than the data, one epoch: every row once.
    use sae_wgpu::data::{open_shards, BatchStream, StreamConfig};
    use std::sync::Arc;
    let dir = temp_dir("stream");
    let path = dir.join("ids.safetensors");
    shard(&path, 100, 1, |i| i as f32);
    let shards = Arc::new(open_shards(&[path], "activations", None).unwrap());
    let mut config = StreamConfig::sequential(7);
    config.shuffle_rows = 1000;
    config.seed = 3;
    let mut seen: Vec<f32> = BatchStream::start(shards, config)
        .unwrap()
        .flat_map(|b| b.unwrap().x)
        .collect();
    assert_ne!(
        seen,
        (0..100).map(|i| i as f32).collect::<Vec<_>>(),
        "rows were not shuffled"
    );
    seen.sort_by(f32::total_cmp);
    assert_eq!(seen, (0..100).map(|i| i as f32).collect::<Vec<_>>());
}

#[test]
fn unknown_dtype_string_in_header() {
    let dir = temp_dir("dtype");
    let path = dir.join("weird.safetensors");
    let header = br#"{"activations":{"dtype":"F99","shape":[2,2],"data_offsets":[0,16]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 16]);
    std::fs::write(&path, &bytes).unwrap();
    fails(
        &[&s(&path)],
        &dir.join("run"),
        &["weird.safetensors", "not a valid safetensors file"],
    );
}

#[test]
fn inf_rows_are_named() {
    let dir = temp_dir("inf");
    let bad = dir.join("inf.safetensors");
    shard(&bad, 64, 4, |i| {
        if i / 4 == 9 {
            f32::NEG_INFINITY
        } else {
            noise(i)
        }
    });
    fails(
        &[&s(&bad), "--batch-size", "16", "--d-sae", "8", "--k", "2"],
        &dir.join("r"),
        &["inf.safetensors", "row 9"],
    );
}

#[test]
fn dictionary_beyond_the_binding_limit_and_missing_backend() {
    let Some(gpu) = common::gpu() else { return };
    let dir = temp_dir("limits");
    let good = dir.join("good.safetensors");
    shard(&good, 256, 64, noise);
    // A dictionary past one binding is split into blocks of latents (tests/split_dictionary.rs);
    // only a single latent's column that cannot be bound is refused.
    fails(
        &[
            &s(&good),
            "--d-sae",
            "128",
            "--k",
            "2",
            "--batch-size",
            "32",
            "--max-binding-bytes",
            "200",
        ],
        &dir.join("r"),
        &[
            "one latent's weights (d_in = 64) needs 256 bytes",
            "max_storage_buffer_binding_size",
            "MiB of GPU memory",
        ],
    );
    // More than the adapter's memory: refused before anything is allocated, with the figure.
    if gpu.summary.device_memory_bytes.is_some() {
        fails(
            &[
                &s(&good),
                "--d-sae",
                "100000000",
                "--k",
                "2",
                "--batch-size",
                "32",
            ],
            &dir.join("r"),
            &[
                "the run needs about",
                "MiB of GPU memory but",
                "--batch-size",
            ],
        );
        // A sweep whose members do not fit together: the first that does not is named, and
        // no sweep.json is written.
        fails(
            &[
                &s(&good),
                "--k",
                "2,3",
                "--expansion-factor",
                "2,1000000",
                "--batch-size",
                "32",
            ],
            &dir.join("sweep"),
            &["sweep member topk-k2-x1000000", "MiB of GPU memory but"],
        );
        assert!(!dir.join("sweep").join("sweep.json").exists());
    }
    let backend = if cfg!(target_os = "macos") {
        "dx12"
    } else {
        "metal"
    };
    let output = sae()
        .args(["adapters", "--backend", backend])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let lines = our_lines(&output);
    assert!(
        lines.len() == 1
            && lines[0].contains("no GPU adapter found")
            && lines[0].contains("mesa-vulkan-drivers"),
        "{lines:?}"
    );
}
