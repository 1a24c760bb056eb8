//! Sweeps: every combination of the swept values, trained from one pass over the data
//! ([`train_group`]: each batch read, shuffled and uploaded once, every member stepping on it).
//! Each member is an ordinary run directory `OUT/<dir>/`; `OUT/sweep.json` lists them (with
//! each member's whole configuration, so a sweep resumes from it alone) and, once a member
//! ends, its held-out `fvu`, `l0` and `dead_frac`.
//!
//! `--sweep-part I/N` trains the members whose position in `sweep.json` is I modulo N, so N
//! processes (GPUs, machines) share one sweep directory; `sweep.json` is updated under a lock
//! file by whichever part ends, and is complete once every part has ended.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::config::{default_format, ExportFormat, TrainConfig};
use super::group::MemberSpec;
use super::job::train_group;
use super::report::TrainReport;
use super::run_dir::RunOptions;
use crate::data::parts::Part;
use crate::gpu::Gpu;
use crate::io::write_json_atomic;
use crate::sae::arch::{Architecture, SparsityAxis};

/// The swept values; every combination is a member, in this nesting order (seed innermost).
#[derive(Clone, Debug, Default)]
pub struct SweepAxes {
    pub architecture: Vec<Architecture>,
    /// ReLU + L1's coefficients (empty: the base's).
    pub l1_coefficient: Vec<f64>,
    /// JumpReLU's coefficients (empty: the base's).
    pub l0_coefficient: Vec<f64>,
    /// The ReLU family's codes per row (its members' `k`).
    pub relu_cap: usize,
    pub k: Vec<usize>,
    pub d_sae: Vec<usize>,
    /// Empty: each member's default for its d_sae.
    pub lr: Vec<f64>,
    pub seed: Vec<u64>,
    /// `None`: each member's default for its architecture ([`default_format`]).
    pub format: Option<ExportFormat>,
}

impl SweepAxes {
    /// More than one member.
    pub fn is_sweep(&self) -> bool {
        [
            self.architecture.len(),
            self.l1_coefficient.len(),
            self.l0_coefficient.len(),
            self.k.len(),
            self.d_sae.len(),
            self.lr.len(),
            self.seed.len(),
        ]
        .iter()
        .any(|&n| n > 1)
    }
}

/// One member of a sweep as `sweep.json` lists it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepRun {
    pub dir: String,
    pub architecture: String,
    pub k: usize,
    pub d_sae: usize,
    pub lr: f64,
    pub seed: u64,
    pub l1_coefficient: Option<f64>,
    pub l0_coefficient: Option<f64>,
    /// Held-out figures, once the member has ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fvu: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub l0: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_frac: Option<f64>,
    /// The member's whole configuration (what `--resume` trains from).
    pub config: TrainConfig,
}

/// `sweep.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SweepFile {
    pub runs: Vec<SweepRun>,
    /// Seed of the data order every member shares.
    pub data_seed: u64,
    #[serde(default)]
    pub sae_wgpu_version: String,
}

/// The members of a sweep: `base` with every combination of `axes` (an empty axis keeps the
/// base value), data order shared (`base.data_seed`, or the first seed).
pub fn plan(
    base: &TrainConfig,
    d_in: usize,
    axes: &SweepAxes,
    default_lr: impl Fn(usize) -> f64,
) -> anyhow::Result<SweepFile> {
    let or = |values: &[usize], base: usize| {
        if values.is_empty() {
            vec![base]
        } else {
            values.to_vec()
        }
    };
    let ks = or(&axes.k, base.model.k);
    let sizes = or(&axes.d_sae, base.model.d_sae);
    let seeds = if axes.seed.is_empty() {
        vec![base.init.seed]
    } else {
        axes.seed.clone()
    };
    let data_seed = base.data.data_seed.unwrap_or(seeds[0]);
    let architectures = if axes.architecture.is_empty() {
        vec![base.model.architecture]
    } else {
        axes.architecture.clone()
    };
    let mut runs: Vec<SweepRun> = Vec::new();
    for &architecture in &architectures {
        for sparsity in sparsities(architecture, axes, base, &ks) {
            for &d_sae in &sizes {
                let lrs = if axes.lr.is_empty() {
                    vec![default_lr(d_sae)]
                } else {
                    axes.lr.clone()
                };
                for &lr in &lrs {
                    for &seed in &seeds {
                        let member = Member {
                            architecture,
                            sparsity,
                            d_sae,
                            lr,
                            seed,
                        };
                        let dir = member.dir(d_in, axes.lr.len() > 1, seeds.len() > 1);
                        if runs.iter().any(|r| r.dir == dir) {
                            bail!("the sweep lists {dir} twice; give each value once");
                        }
                        runs.push(member.run(dir, base, axes, data_seed));
                    }
                }
            }
        }
    }
    Ok(SweepFile {
        runs,
        data_seed,
        sae_wgpu_version: env!("CARGO_PKG_VERSION").to_string(),
    })
}

/// What sets a member's sparsity.
#[derive(Clone, Copy)]
enum Sparsity {
    /// k (the TopK family).
    K(usize),
    /// ReLU + L1's λ.
    L1(f64),
    /// JumpReLU's λ.
    L0(f64),
}

/// The sparsity settings `architecture` is swept over: k for the TopK family; for the ReLU
/// family its coefficient (its k is the cap).
fn sparsities(
    architecture: Architecture,
    axes: &SweepAxes,
    base: &TrainConfig,
    ks: &[usize],
) -> Vec<Sparsity> {
    let or_base = |values: &[f64], base: f64| {
        if values.is_empty() {
            vec![base]
        } else {
            values.to_vec()
        }
    };
    let settings = &base.model.settings;
    match architecture.spec().sparsity() {
        SparsityAxis::K => ks.iter().map(|&k| Sparsity::K(k)).collect(),
        SparsityAxis::L1 => or_base(&axes.l1_coefficient, settings.relu.l1_coefficient)
            .into_iter()
            .map(Sparsity::L1)
            .collect(),
        SparsityAxis::L0 => or_base(&axes.l0_coefficient, settings.jumprelu.l0_coefficient)
            .into_iter()
            .map(Sparsity::L0)
            .collect(),
    }
}

/// One combination of the swept values.
struct Member {
    architecture: Architecture,
    sparsity: Sparsity,
    d_sae: usize,
    lr: f64,
    seed: u64,
}

impl Member {
    /// The member's directory name: its architecture and sparsity, its width, and the
    /// learning rate and seed when those are swept.
    fn dir(&self, d_in: usize, lr_swept: bool, seeds_swept: bool) -> String {
        let mut dir = match self.sparsity {
            Sparsity::L1(l1) => format!("relu-l1_{l1}"),
            Sparsity::L0(l0) => format!("jumprelu-l0_{l0}"),
            Sparsity::K(k) => format!("{}-k{k}", self.architecture.name()),
        };
        let d_sae = self.d_sae;
        if d_in > 0 && d_sae.is_multiple_of(d_in) {
            dir.push_str(&format!("-x{}", d_sae / d_in));
        } else {
            dir.push_str(&format!("-d{d_sae}"));
        }
        if lr_swept {
            dir.push_str(&format!("-lr{}", self.lr));
        }
        if seeds_swept {
            dir.push_str(&format!("-s{}", self.seed));
        }
        dir
    }

    /// The member as sweep.json lists it, with its whole configuration.
    fn run(&self, dir: String, base: &TrainConfig, axes: &SweepAxes, data_seed: u64) -> SweepRun {
        let architecture = self.architecture;
        let spec = architecture.spec();
        // The ReLU family's k is its cap, which never exceeds the dictionary.
        let (k, l1, l0) = match self.sparsity {
            Sparsity::K(k) => (k, None, None),
            Sparsity::L1(l1) => (axes.relu_cap.min(self.d_sae), Some(l1), None),
            Sparsity::L0(l0) => (axes.relu_cap.min(self.d_sae), None, Some(l0)),
        };
        let mut config = base.clone();
        let model = &mut config.model;
        model.architecture = architecture;
        model.k = k;
        model.d_sae = self.d_sae;
        if architecture != Architecture::Matryoshka {
            model.settings.matryoshka.matryoshka_widths = Vec::new();
        }
        if let Some(l1) = l1 {
            model.settings.relu.l1_coefficient = l1;
        }
        if let Some(l0) = l0 {
            model.settings.jumprelu.l0_coefficient = l0;
        }
        config.output.format = axes
            .format
            .unwrap_or(default_format(architecture, model.transcoder));
        // Architectures without AuxK say so in config.json.
        if !spec.uses_auxk() {
            config.auxk.auxk_alpha = 0.0;
        }
        config.optim.lr = self.lr;
        config.init.seed = self.seed;
        config.data.data_seed = Some(data_seed);
        SweepRun {
            dir,
            architecture: architecture.name().into(),
            k,
            d_sae: self.d_sae,
            lr: self.lr,
            seed: self.seed,
            l1_coefficient: l1,
            l0_coefficient: l0,
            fvu: None,
            l0: None,
            dead_frac: None,
            config,
        }
    }
}

/// Reads `dir/sweep.json`; a missing or damaged file is a one-line error naming it.
pub fn read_sweep(dir: &Path) -> anyhow::Result<SweepFile> {
    let path = dir.join("sweep.json");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        anyhow!(
            "{}: cannot read ({e}); a sweep resumes from its sweep.json",
            path.display()
        )
    })?;
    let file: SweepFile = serde_json::from_str(&text)
        .map_err(|e| anyhow!("{}: damaged or not a sweep ({e})", path.display()))?;
    if file.runs.is_empty() {
        bail!("{}: damaged (no runs)", path.display());
    }
    for run in &file.runs {
        let name = Path::new(&run.dir);
        if run.dir.is_empty() || name.components().count() != 1 || name.is_absolute() {
            bail!(
                "{}: damaged (run directory {:?} is not a plain name)",
                path.display(),
                run.dir
            );
        }
    }
    Ok(file)
}

/// Holds `dir/.sweep.lock` while it lives, so parts ending together update `sweep.json` in
/// turn. A lock older than a minute is left by a killed process and is taken over.
struct SweepLock(PathBuf);

impl SweepLock {
    fn take(dir: &Path) -> anyhow::Result<SweepLock> {
        let path = dir.join(".sweep.lock");
        let started = Instant::now();
        loop {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(_) => return Ok(SweepLock(path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let stale = std::fs::metadata(&path)
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|t| t.elapsed().ok())
                        .is_some_and(|age| age > Duration::from_secs(60));
                    if stale || started.elapsed() > Duration::from_secs(120) {
                        let _ = std::fs::remove_file(&path);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("{}: cannot create", path.display()))
                }
            }
        }
    }
}

impl Drop for SweepLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Fills each run's held-out figures from its `summary.json` (members still running keep
/// none) and writes `sweep.json` atomically, under the lock.
fn write_with_results(dir: &Path, file: &SweepFile) -> anyhow::Result<SweepFile> {
    let _lock = SweepLock::take(dir)?;
    let mut file = file.clone();
    for run in &mut file.runs {
        let summary = dir.join(&run.dir).join("summary.json");
        let Ok(text) = std::fs::read_to_string(&summary) else {
            continue;
        };
        let Ok(value) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        let heldout = &value["heldout"];
        run.fvu = heldout["fvu"].as_f64();
        run.l0 = heldout["l0"].as_f64();
        run.dead_frac = heldout["dead_frac"].as_f64();
    }
    write_json_atomic(&dir.join("sweep.json"), &file)?;
    Ok(file)
}

/// The members part `part` trains: positions I, I + N, I + 2N, … of the sweep.
pub fn part_members(count: usize, part: Option<Part>) -> anyhow::Result<Vec<usize>> {
    match part {
        None => Ok((0..count).collect()),
        Some(p) if p.count > count => bail!(
            "--sweep-part {}/{}: the sweep has only {count} members",
            p.index,
            p.count
        ),
        Some(p) => Ok((p.index..count).step_by(p.count).collect()),
    }
}

/// What a sweep (or part of one) reports: its members' reports, in `sweep.json` order.
pub struct SweepReport {
    pub dir: PathBuf,
    pub file: SweepFile,
    pub reports: Vec<TrainReport>,
}

/// Trains (or with `options.resume`, resumes) the sweep `plan` in `dir`, or only the members
/// of `part`. On resume `plan` is ignored: the sweep's own `sweep.json` wins.
pub fn train_sweep(
    gpu: &Gpu,
    plan: Option<SweepFile>,
    dir: &Path,
    part: Option<Part>,
    options: &RunOptions,
) -> anyhow::Result<SweepReport> {
    let existing = dir.join("sweep.json");
    let file = if options.resume {
        read_sweep(dir)?
    } else {
        let plan = plan.ok_or_else(|| anyhow!("no sweep given"))?;
        if existing.exists() && !options.overwrite {
            // Parts of one sweep start into the same directory: the same plan is expected.
            let same = read_sweep(dir).ok().is_some_and(|found| {
                found.runs.len() == plan.runs.len()
                    && found.runs.iter().zip(&plan.runs).all(|(a, b)| {
                        a.dir == b.dir
                            && serde_json::to_value(&a.config).ok()
                                == serde_json::to_value(&b.config).ok()
                    })
            });
            if part.is_none() || !same {
                bail!(
                    "{}: already holds a sweep; pass --resume {} to continue it or --overwrite to replace it",
                    dir.display(),
                    dir.display()
                );
            }
        }
        plan
    };
    let chosen = part_members(file.runs.len(), part)?;
    std::fs::create_dir_all(dir)
        .with_context(|| format!("{}: cannot create the sweep directory", dir.display()))?;
    let specs: Vec<MemberSpec> = chosen
        .iter()
        .map(|&i| MemberSpec {
            run_dir: dir.join(&file.runs[i].dir),
            config: Some(file.runs[i].config.clone()),
        })
        .collect();
    let file_for_start = file.clone();
    let reports = train_group(gpu, specs, options, &mut || {
        // Written once the members are checked (memory, shapes), before any trains.
        write_with_results(dir, &file_for_start).map(|_| ())
    })?;
    let file = write_with_results(dir, &file)?;
    Ok(SweepReport {
        dir: dir.to_path_buf(),
        file,
        reports,
    })
}
