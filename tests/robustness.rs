//! Crash safety and faults through the real binary: SIGKILL mid-run then `--resume` gives the
//! weights of an uninterrupted run; a diverging run stops naming the step and the last good
//! checkpoint; a lost device or an out-of-memory mid-run keeps the last checkpoint, which
//! resumes; a full disk, an unwritable output and odd paths are one-line errors.

mod common;

use common::temp_dir;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sae_wgpu::data::synth::{write_synthetic, SynthConfig};

fn sae() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sae"))
}

fn data(dir: &Path) -> Vec<String> {
    let synth = SynthConfig {
        d_in: 8,
        n_features: 16,
        rows_per_shard: 4000,
        shards: 2,
        mean_active: 2.0,
        seed: 3,
        ..SynthConfig::default()
    };
    write_synthetic(&synth, &dir.join("data"))
        .unwrap()
        .iter()
        .map(|p| p.display().to_string())
        .collect()
}

const TRAIN: [&str; 10] = [
    "--d-sae",
    "16",
    "--k",
    "2",
    "--batch-size",
    "32",
    "--epochs",
    "1",
    "--quiet",
    "--seed",
];

fn train_args(shards: &[String], out: &Path) -> Vec<String> {
    train_args_every(shards, out, 10)
}

fn train_args_every(shards: &[String], out: &Path, checkpoint_every: u64) -> Vec<String> {
    let mut args = vec![
        "train".to_string(),
        "--checkpoint-every".to_string(),
        checkpoint_every.to_string(),
    ];
    args.extend(shards.iter().cloned());
    args.extend(TRAIN.iter().map(|s| s.to_string()));
    args.extend([
        "7".to_string(),
        "--out".to_string(),
        out.display().to_string(),
    ]);
    args
}

/// Trains the reference run in `dir/full` to the end; its exported weights.
fn uninterrupted_weights(dir: &Path, shards: &[String]) -> Vec<u8> {
    let full = dir.join("full");
    assert!(sae()
        .args(train_args(shards, &full))
        .status()
        .unwrap()
        .success());
    std::fs::read(full.join("sparsify/sae.safetensors")).unwrap()
}

fn our_errors(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.starts_with("error: ") && !l.contains("XDG_RUNTIME_DIR"))
        .map(String::from)
        .collect()
}

#[test]
fn sigkill_then_resume_matches_an_uninterrupted_run() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("kill");
    let shards = data(&dir);
    let full_weights = uninterrupted_weights(&dir, &shards);

    let killed = dir.join("killed");
    let mut child = sae()
        .args(train_args(&shards, &killed))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill as soon as the second checkpoint exists.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut interrupted = false;
    loop {
        let checkpoints = std::fs::read_dir(killed.join("checkpoints"))
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
                    .count()
            })
            .unwrap_or(0);
        if checkpoints >= 2 || Instant::now() > deadline {
            interrupted = child.try_wait().unwrap().is_none();
            child.kill().unwrap();
            child.wait().unwrap();
            break;
        }
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if interrupted {
        assert!(
            !killed.join("summary.json").exists(),
            "a killed run must not look finished"
        );
    } else {
        eprintln!("the run finished before it could be killed; checking resume of a finished run");
    }
    // Whatever the kill left, every checkpoint file present loads (atomic rename).
    for entry in std::fs::read_dir(killed.join("checkpoints")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "safetensors") {
            sae_wgpu::sae::checkpoint::load(&path).unwrap();
        }
    }
    let output = sae()
        .args(["train", "--quiet", "--resume"])
        .arg(&killed)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let resumed_weights = std::fs::read(killed.join("sparsify/sae.safetensors")).unwrap();
    assert!(
        full_weights == resumed_weights,
        "resumed weights differ from the uninterrupted run"
    );
}

#[test]
fn resume_says_which_step_it_continues_from() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("says");
    let shards = data(&dir);
    let run = dir.join("run");
    let mut args = train_args(&shards, &run);
    args.extend(["--stop-after".to_string(), "20".to_string()]);
    assert!(sae().args(&args).status().unwrap().success());
    let output = sae()
        .args(["train", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("resuming from") && stderr.contains("step 20 of"),
        "{stderr}"
    );
}

#[test]
fn divergence_stops_with_the_step_and_the_last_good_checkpoint() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("diverge");
    let shards = data(&dir);
    let run = dir.join("run");
    let mut args = train_args_every(&shards, &run, 1);
    args.extend(["--lr", "1e30", "--lr-warmup-steps", "0", "--log-every", "1"].map(String::from));
    let output = sae().args(&args).output().unwrap();
    assert!(!output.status.success());
    let errors = our_errors(&output.stderr);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("diverged") && errors[0].contains("at step"),
        "{}",
        errors[0]
    );
    assert!(errors[0].contains("last good checkpoint"), "{}", errors[0]);
    // Every checkpoint on disk is finite (non-finite ones are never written).
    for entry in std::fs::read_dir(run.join("checkpoints")).unwrap() {
        let checkpoint = sae_wgpu::sae::checkpoint::load(&entry.unwrap().path()).unwrap();
        assert!(checkpoint.snapshot.params.first_non_finite().is_none());
    }
}

#[test]
fn full_disk_on_checkpoint_is_a_clear_error() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("full");
    let shards = data(&dir);
    let run = dir.join("run");
    // A 64 KiB file-size limit: config and metrics fit, a checkpoint does not. SIGXFSZ is
    // ignored so the write fails with EFBIG instead of killing the process.
    let command = format!(
        "trap '' XFSZ; ulimit -f 64; exec \"$0\" \"$@\" --d-sae 512 --k 2 --batch-size 32 --checkpoint-every 2 --quiet --out '{}'",
        run.display()
    );
    let mut args = vec![
        "-c".to_string(),
        command,
        env!("CARGO_BIN_EXE_sae").to_string(),
        "train".to_string(),
    ];
    args.extend(shards.iter().cloned());
    let output = Command::new("sh").args(&args).output().unwrap();
    assert!(!output.status.success());
    let errors = our_errors(&output.stderr);
    assert_eq!(
        errors.len(),
        1,
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        errors[0].contains("checkpoints") && errors[0].contains("cannot write"),
        "{}",
        errors[0]
    );
    assert!(!String::from_utf8_lossy(&output.stderr).contains("panicked"));
    // No partial checkpoint is left looking complete.
    for entry in std::fs::read_dir(run.join("checkpoints"))
        .into_iter()
        .flatten()
    {
        let name = entry.unwrap().file_name().to_string_lossy().to_string();
        assert!(!name.ends_with(".safetensors"), "left behind: {name}");
    }
}

#[test]
fn unwritable_output_and_non_utf8_paths() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("paths");
    let shards = data(&dir);
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let output = sae()
        .args(train_args(&shards, &file.join("run")))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let errors = our_errors(&output.stderr);
    assert!(
        errors.len() == 1 && errors[0].contains("a-file/run"),
        "{errors:?}"
    );

    use std::os::unix::ffi::OsStrExt;
    let odd = dir.join(std::ffi::OsStr::from_bytes(b"acts-\xff\xfe.safetensors"));
    let output = sae()
        .arg("train")
        .arg(&odd)
        .args(["--quiet", "--out"])
        .arg(dir.join("r"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let errors = our_errors(&output.stderr);
    assert!(
        errors.len() == 1 && errors[0].contains("acts-") && errors[0].contains("no such file"),
        "{errors:?}"
    );

    // An existing file under a non-UTF-8 name: config.json could not record it, so it is
    // refused with a message, not a panic.
    std::fs::copy(&shards[0], &odd).unwrap();
    let output = sae()
        .arg("train")
        .arg(&odd)
        .args([
            "--d-sae",
            "16",
            "--k",
            "2",
            "--batch-size",
            "64",
            "--quiet",
            "--out",
        ])
        .arg(dir.join("r2"))
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    let errors = our_errors(&output.stderr);
    assert!(
        errors.len() == 1 && errors[0].contains("not valid UTF-8"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn resume_refuses_data_that_changed() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("changed");
    let shards = data(&dir);
    let run = dir.join("run");
    let mut args = train_args(&shards, &run);
    args.extend(["--stop-after".to_string(), "10".to_string()]);
    assert!(sae().args(&args).status().unwrap().success());
    // Replace the first shard with a shorter one.
    let synth = SynthConfig {
        d_in: 8,
        n_features: 16,
        rows_per_shard: 1000,
        shards: 1,
        seed: 9,
        ..SynthConfig::default()
    };
    let other = write_synthetic(&synth, &dir.join("other")).unwrap();
    std::fs::copy(&other[0], &shards[0]).unwrap();
    let output = sae()
        .args(["train", "--quiet", "--resume"])
        .arg(&run)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let errors = our_errors(&output.stderr);
    assert!(
        errors.len() == 1
            && errors[0].contains("changed since the run started")
            && errors[0].contains("synth_0000"),
        "{errors:?}"
    );
}

#[test]
fn device_lost_or_out_of_memory_mid_run_keeps_the_last_checkpoint() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("faults");
    let shards = data(&dir);
    let full_weights = uninterrupted_weights(&dir, &shards);
    // A real loss (the device is destroyed under the run) and what wgpu reports when an
    // allocation or submission runs out of memory, both before step 25 of 250.
    for (fault, says) in [
        ("device-lost@25", "GPU device lost"),
        ("out-of-memory@25", "GPU out of memory"),
    ] {
        let run = dir.join(fault.replace('@', "-"));
        let output = sae()
            .args(train_args(&shards, &run))
            .env("SAE_INJECT_FAULT", fault)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{fault}: the run succeeded");
        assert!(!stderr.contains("panicked"), "{fault}: panic: {stderr}");
        let errors = our_errors(&output.stderr);
        assert_eq!(errors.len(), 1, "{fault}: want one error line: {stderr}");
        for needle in [says, "step 2", "step-000000020.safetensors", "--resume"] {
            assert!(
                errors[0].contains(needle),
                "{fault}: '{needle}' missing from: {}",
                errors[0]
            );
        }
        assert!(!run.join("summary.json").exists() && !run.join("sparsify").exists());
        // The checkpoint named loads, and resuming from it ends where an uninterrupted run does.
        let (latest, checkpoint) = sae_wgpu::sae::checkpoint::latest(&run.join("checkpoints"))
            .unwrap()
            .unwrap();
        assert!(latest.ends_with("step-000000020.safetensors"), "{latest:?}");
        assert_eq!(checkpoint.step, 20);
        let resumed = sae()
            .args(["train", "--quiet", "--resume"])
            .arg(&run)
            .output()
            .unwrap();
        assert!(
            resumed.status.success(),
            "{fault}: {}",
            String::from_utf8_lossy(&resumed.stderr)
        );
        let weights = std::fs::read(run.join("sparsify/sae.safetensors")).unwrap();
        assert!(weights == full_weights, "{fault}: resumed weights differ");
    }
}
