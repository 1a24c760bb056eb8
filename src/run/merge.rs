//! Merging the outputs of a job split with `--part I/N` (src/data/parts.rs) into exactly what one
//! pass over all the shards gives. Every merge reads and checks all parts before it writes
//! anything: parts of one split (same N, each once, none missing), of one SAE, with the same
//! settings; a failure names the offending files.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{json, Value};

use super::outputs::hist_files::{self, SaeSource};
use crate::analysis::eval::EvalAccumulator;
use crate::analysis::hist::{self, Histograms};
use crate::data::parts::{check_complete, PartInfo};
use crate::io::write_json_atomic;

fn read_json(path: &Path, what: &str) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    serde_json::from_str(text.trim()).with_context(|| format!("{}: not {what}", path.display()))
}

fn part_of(value: &Value, path: &Path, command: &str) -> anyhow::Result<PartInfo> {
    serde_json::from_value(value["part"].clone()).with_context(|| {
        format!(
            "{}: no \"part\" record (written by `{command} --part I/N`?)",
            path.display()
        )
    })
}

/// The parts in part order, or a one-line error naming the files that do not fit.
fn complete<T>(
    parts: Vec<(PartInfo, T)>,
    path: impl Fn(&T) -> &Path,
) -> anyhow::Result<Vec<(PartInfo, T)>> {
    check_complete(parts, |t| path(t).display().to_string()).map_err(anyhow::Error::msg)
}

/// `sae eval merge`: the sums of every part, added in part order.
pub struct MergedEval {
    pub parts: usize,
    /// The SAE's provenance and cap, as the parts recorded them.
    pub sae: Value,
    pub cap: Value,
    pub stats: EvalAccumulator,
}

/// Reads the `sae eval --part I/N --json` outputs at `paths` and adds their sums.
pub fn merge_eval(paths: &[PathBuf]) -> anyhow::Result<MergedEval> {
    struct Part {
        path: PathBuf,
        sae: Value,
        cap: Value,
        stats: EvalAccumulator,
    }
    let mut parts = Vec::with_capacity(paths.len());
    for path in paths {
        let value = read_json(path, "the JSON of `sae eval --json`")?;
        let info = part_of(&value, path, "sae eval --json")?;
        let stats: EvalAccumulator = serde_json::from_value(value["stats"].clone())
            .with_context(|| format!("{}: no \"stats\" to merge", path.display()))?;
        parts.push((
            info,
            Part {
                path: path.clone(),
                sae: value["sae"].clone(),
                cap: value["cap"].clone(),
                stats,
            },
        ));
    }
    let parts = complete(parts, |p| &p.path)?;
    let first = &parts[0].1;
    let same_sae = |a: &Value, b: &Value| {
        ["path", "hookpoint", "d_in", "d_sae"]
            .iter()
            .all(|key| a[key] == b[key])
    };
    let mut stats = first.stats.clone();
    for (info, part) in &parts[1..] {
        if !same_sae(&first.sae, &part.sae) || first.cap != part.cap {
            bail!(
                "{} (part {}/{}) evaluated SAE {} with cap {}, but {} evaluated {} with cap {}: parts of one job use one SAE",
                part.path.display(),
                info.index,
                info.count,
                part.sae["path"],
                part.cap,
                first.path.display(),
                first.sae["path"],
                first.cap
            );
        }
        stats
            .merge(&part.stats)
            .with_context(|| format!("{} (part {})", part.path.display(), info.index))?;
    }
    Ok(MergedEval {
        parts: parts.len(),
        sae: first.sae.clone(),
        cap: first.cap.clone(),
        stats,
    })
}

/// The file a part of `sae encode --part I/N` writes beside its codes.
pub fn encode_part_file(part: &PartInfo) -> String {
    format!("encode.part-{}-of-{}.json", part.index, part.count)
}

/// The part files named by `paths`: files as they are, directories' encode.part-*.json.
fn encode_part_files(paths: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        let mut found: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("{}: cannot read", path.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("encode.part-") && n.ends_with(".json"))
            })
            .collect();
        if found.is_empty() {
            bail!("{}: holds no encode.part-I-of-N.json", path.display());
        }
        found.sort();
        files.extend(found);
    }
    Ok(files)
}

/// What `sae encode merge` wrote.
pub struct MergedEncode {
    pub parts: usize,
    pub shards: usize,
    pub written: PathBuf,
}

/// Combines the `encode.part-I-of-N.json` files at `paths` (files, or directories holding them)
/// into one `OUT/encode.json` listing every shard in part order.
pub fn merge_encode(paths: &[PathBuf], out: &Path) -> anyhow::Result<MergedEncode> {
    let mut parts = Vec::new();
    for path in encode_part_files(paths)? {
        let value = read_json(&path, "an encode.json")?;
        let info = part_of(&value, &path, "sae encode")?;
        parts.push((info, (path, value)));
    }
    let parts = complete(parts, |(p, _)| p)?;
    let (first_path, first) = &parts[0].1;
    let mut shards = Vec::new();
    for (_, (path, value)) in &parts {
        for key in ["sae", "k", "values"] {
            if value[key] != first[key] {
                bail!(
                    "{} has {key} {} but {} has {}: parts of one job use one SAE and settings",
                    path.display(),
                    value[key],
                    first_path.display(),
                    first[key]
                );
            }
        }
        shards.extend(value["shards"].as_array().cloned().unwrap_or_default());
    }
    let mut merged = first.clone();
    merged["shards"] = json!(shards);
    if let Some(map) = merged.as_object_mut() {
        map.remove("part");
    }
    merged["parts"] = json!(parts.len());
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let written = out.join("encode.json");
    write_json_atomic(&written, &merged)?;
    Ok(MergedEncode {
        parts: parts.len(),
        shards: shards.len(),
        written,
    })
}

/// Loads the `sae hist` outputs in `dirs` and merges them: parts of a `--part I/N` split in part
/// order (checked complete), plain outputs of disjoint shard subsets in the order given.
pub fn merge_hist(dirs: &[PathBuf]) -> anyhow::Result<(Histograms, SaeSource)> {
    let mut loaded = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let (hist, source) = hist_files::load(dir)?;
        loaded.push((dir.clone(), hist, source));
    }
    let split_parts = loaded.iter().filter(|(_, h, _)| h.part.is_some()).count();
    if split_parts > 0 && split_parts < loaded.len() {
        let plain = loaded
            .iter()
            .find(|(_, h, _)| h.part.is_none())
            .map(|(d, _, _)| d.display().to_string())
            .unwrap_or_default();
        bail!("{plain} is not a part of a --part split but other outputs are; merge one kind");
    }
    if split_parts > 0 {
        let tagged = loaded
            .into_iter()
            .filter_map(|(dir, h, s)| h.part.clone().map(|p| (p, (dir, h, s))))
            .collect();
        loaded = complete(tagged, |(d, _, _)| d)?
            .into_iter()
            .map(|(_, x)| x)
            .collect();
    }
    let mut loaded = loaded.into_iter();
    let Some((first_dir, mut acc, source)) = loaded.next() else {
        bail!("nothing to merge");
    };
    acc.part = None;
    for (dir, part, part_source) in loaded {
        if part_source.0 != source.0 {
            bail!(
                "{}: computed with SAE {}, but {} with {}: parts of one job use one SAE",
                dir.display(),
                part_source.0,
                first_dir.display(),
                source.0
            );
        }
        hist::merge_into(&mut acc, part)
            .with_context(|| format!("{} (merged after {})", dir.display(), first_dir.display()))?;
    }
    Ok((acc, source))
}

/// The files one part of `sae categories --part I/N` writes into its directory.
pub const COOCCURRENCE_PART: &str = "cooccurrence-part.json";
const COOCCURRENCE_COUNTS: &str = "cooccurrence-part.safetensors";

/// Writes one part's joint counts with what they were counted with (`settings`: the SAE, the
/// unit and threshold), the tensors first and the JSON that marks the part complete last.
pub fn save_cooccurrence_part(
    dir: &Path,
    counts: &crate::analysis::categories::cooccurrence::SparseCounts,
    part: &PartInfo,
    settings: Value,
) -> anyhow::Result<()> {
    use crate::io::{write_safetensors, TensorOut};
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let own: Vec<u64> = counts.feature_units.clone();
    let n = counts.i.len();
    write_safetensors(
        &dir.join(COOCCURRENCE_COUNTS),
        &[
            TensorOut::u32("pair_i", &[n], &counts.i),
            TensorOut::u32("pair_j", &[n], &counts.j),
            TensorOut::u32("pair_count", &[n], &counts.count),
            TensorOut::i64(
                "feature_units",
                &[counts.d_sae],
                &own.iter().map(|&v| v as i64).collect::<Vec<_>>(),
            ),
        ],
        None,
    )?;
    write_json_atomic(
        &dir.join(COOCCURRENCE_PART),
        &json!({
            "part": part,
            "d_sae": counts.d_sae,
            "units": counts.units,
            "pairs": n,
            "settings": settings,
        }),
    )
}

/// Reads the parts of `sae categories --part I/N` in `dirs`, checks they are every part of one
/// split counted with the same settings (`settings`, as the merging run would count), and sums
/// them; also returns the rows the split covered.
pub fn merge_cooccurrence_parts(
    dirs: &[PathBuf],
    settings: &Value,
) -> anyhow::Result<(crate::analysis::categories::cooccurrence::SparseCounts, u64)> {
    use crate::analysis::categories::cooccurrence::SparseCounts;
    let mut parts = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let path = dir.join(COOCCURRENCE_PART);
        let value = read_json(&path, "the record of a `sae categories --part` part")?;
        let info = part_of(&value, &path, "sae categories")?;
        parts.push((info, (path, value)));
    }
    let parts = complete(parts, |(p, _)| p)?;
    let (first_path, _) = &parts[0].1;
    let mut sum: Option<SparseCounts> = None;
    for (_, (path, value)) in &parts {
        if &value["settings"] != settings {
            bail!(
                "{} was counted with {} but this run counts with {}: parts and merge use one SAE and the same co-occurrence flags",
                path.display(),
                value["settings"],
                settings
            );
        }
        let tensors = path.with_file_name(COOCCURRENCE_COUNTS);
        let bytes = std::fs::read(&tensors)
            .with_context(|| format!("{}: cannot read", tensors.display()))?;
        let st = safetensors::SafeTensors::deserialize(&bytes)
            .with_context(|| format!("{}: not safetensors", tensors.display()))?;
        let d_sae = value["d_sae"].as_u64().unwrap_or(0) as usize;
        let get = |name: &str, elem: usize| -> anyhow::Result<Vec<u8>> {
            let t = st
                .tensor(name)
                .with_context(|| format!("{}: no tensor '{name}'", tensors.display()))?;
            let n = t.shape().iter().product::<usize>();
            anyhow::ensure!(
                t.data().len() == n * elem,
                "{}: tensor '{name}' has the wrong size",
                tensors.display()
            );
            Ok(t.data().to_vec())
        };
        let part = SparseCounts {
            d_sae,
            units: value["units"].as_u64().unwrap_or(0),
            feature_units: bytemuck::pod_collect_to_vec::<u8, i64>(&get("feature_units", 8)?)
                .into_iter()
                .map(|v| v.max(0) as u64)
                .collect(),
            i: bytemuck::pod_collect_to_vec(&get("pair_i", 4)?),
            j: bytemuck::pod_collect_to_vec(&get("pair_j", 4)?),
            count: bytemuck::pod_collect_to_vec(&get("pair_count", 4)?),
        };
        anyhow::ensure!(
            part.feature_units.len() == d_sae
                && part.i.len() == part.count.len()
                && part.j.len() == part.count.len()
                && part
                    .i
                    .iter()
                    .zip(&part.j)
                    .all(|(&i, &j)| i < j && (j as usize) < d_sae),
            "{}: damaged counts (shapes or pair ids out of range)",
            tensors.display()
        );
        match &mut sum {
            None => sum = Some(part),
            Some(total) => total.add(&part).with_context(|| {
                format!("{} (merged after {})", path.display(), first_path.display())
            })?,
        }
    }
    let rows = parts[0].0.total_rows;
    Ok((sum.unwrap_or_default(), rows))
}
