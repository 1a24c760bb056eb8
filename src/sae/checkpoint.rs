//! Training checkpoints: weights, Adam moments, dead-latent counters, fire counts and the data
//! position, in one safetensors file written atomically. The newest two are kept.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use safetensors::{Dtype, SafeTensors};

use super::formats::read_tensor_f32;
use super::params::{Activation, SaeParams, Transcoding};
use super::trainer::TrainerSnapshot;
use crate::io::{write_safetensors, TensorOut};

const PREFIX: &str = "step-";
const SUFFIX: &str = ".safetensors";
const PARAM_NAMES: [&str; 4] = ["W_enc", "b_enc", "W_dec", "b_dec"];
/// JumpReLU's trained threshold parameter (θ or log θ, as the run's config.json says).
const THRESHOLD_PARAM: &str = "threshold_param";
/// A skip-transcoder's W_skip [d_out, d_in].
const W_SKIP: &str = "W_skip";

pub struct Checkpoint {
    /// Optimiser steps completed.
    pub step: u64,
    pub tokens: u64,
    /// The factor inputs are divided by (1 when not scaling).
    pub input_scale: f32,
    /// The factor a transcoder's targets are divided by (`input_scale` for an SAE).
    pub target_scale: f32,
    pub snapshot: TrainerSnapshot,
    /// Fires per latent over all training tokens so far.
    pub fire_counts: Vec<u64>,
}

pub fn path_for(dir: &Path, step: u64) -> PathBuf {
    dir.join(format!("{PREFIX}{step:09}{SUFFIX}"))
}

pub fn steps_in(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let step = name
                .strip_prefix(PREFIX)?
                .strip_suffix(SUFFIX)?
                .parse()
                .ok()?;
            Some((step, entry.path()))
        })
        .collect();
    found.sort();
    found
}

/// Writes a checkpoint atomically, then removes all but the newest two.
pub fn save(dir: &Path, checkpoint: &Checkpoint) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("{}: cannot create", dir.display()))?;
    let p = &checkpoint.snapshot.params;
    if let Some(name) = p.first_non_finite() {
        bail!(
            "refusing to write a checkpoint at step {}: {name} is not finite",
            checkpoint.step
        );
    }
    let k = p.k().ok_or_else(|| anyhow!("checkpoints hold TopK SAEs"))?;
    let (d, d_out, n) = (p.d_in, p.d_out(), p.d_sae);
    let shapes: [Vec<usize>; 4] = [vec![d, n], vec![n], vec![n, d_out], vec![d_out]];
    let values = [&p.w_enc, &p.b_enc, &p.w_dec, &p.b_dec];
    let mut tensors = Vec::new();
    for i in 0..4 {
        tensors.push(TensorOut::f32(PARAM_NAMES[i], &shapes[i], values[i]));
        let (m, v) = &checkpoint.snapshot.moments[i];
        tensors.push(TensorOut::f32(
            &format!("exp_avg.{}", PARAM_NAMES[i]),
            &shapes[i],
            m,
        ));
        tensors.push(TensorOut::f32(
            &format!("exp_avg_sq.{}", PARAM_NAMES[i]),
            &shapes[i],
            v,
        ));
    }
    if let Some(values) = &checkpoint.snapshot.threshold_param {
        let (m, v) = checkpoint
            .snapshot
            .moments
            .get(4)
            .ok_or_else(|| anyhow!("a JumpReLU snapshot without the thresholds' moments"))?;
        for (name, data) in [
            (THRESHOLD_PARAM.to_string(), values),
            (format!("exp_avg.{THRESHOLD_PARAM}"), m),
            (format!("exp_avg_sq.{THRESHOLD_PARAM}"), v),
        ] {
            tensors.push(TensorOut::f32(&name, &[n], data));
        }
    }
    if let (Some(w), Some((m, v))) = (p.w_skip(), &checkpoint.snapshot.skip_moments) {
        for (name, data) in [
            (W_SKIP.to_string(), w),
            (format!("exp_avg.{W_SKIP}"), m.as_slice()),
            (format!("exp_avg_sq.{W_SKIP}"), v.as_slice()),
        ] {
            tensors.push(TensorOut::f32(&name, &[d_out, d], data));
        }
    }
    tensors.push(TensorOut::u32(
        "since_fired",
        &[n],
        &checkpoint.snapshot.since_fired,
    ));
    let counts: Vec<i64> = checkpoint.fire_counts.iter().map(|&c| c as i64).collect();
    tensors.push(TensorOut::i64("fire_counts", &[n], &counts));
    let mut metadata = HashMap::from([
        ("format".to_string(), "sae-wgpu-checkpoint-1".to_string()),
        ("step".to_string(), checkpoint.step.to_string()),
        ("tokens".to_string(), checkpoint.tokens.to_string()),
        ("k".to_string(), k.to_string()),
        (
            "input_scale".to_string(),
            checkpoint.input_scale.to_string(),
        ),
        (
            "target_scale".to_string(),
            checkpoint.target_scale.to_string(),
        ),
    ]);
    if p.is_transcoder() {
        metadata.insert("transcoder".to_string(), "true".to_string());
    }
    if let Some(theta) = checkpoint.snapshot.theta {
        metadata.insert("theta".to_string(), theta.to_string());
    }
    let path = path_for(dir, checkpoint.step);
    write_safetensors(&path, &tensors, Some(metadata))?;
    let all = steps_in(dir);
    for (_, old) in all.iter().take(all.len().saturating_sub(2)) {
        let _ = std::fs::remove_file(old);
    }
    Ok(path)
}

fn meta<T: std::str::FromStr>(
    metadata: &HashMap<String, String>,
    key: &str,
    path: &Path,
) -> anyhow::Result<T> {
    metadata
        .get(key)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            anyhow!(
                "{}: checkpoint metadata lacks a valid \"{key}\"",
                path.display()
            )
        })
}

pub fn load(path: &Path) -> anyhow::Result<Checkpoint> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    parse(&bytes, path)
}

/// Validates and decodes a checkpoint's bytes (`path` only names it in errors). This is the
/// function the fuzz target drives.
pub fn parse(bytes: &[u8], path: &Path) -> anyhow::Result<Checkpoint> {
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| anyhow!("{}: not a valid checkpoint: {e}", path.display()))?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| anyhow!("{}: not a valid checkpoint: {e}", path.display()))?;
    let metadata = header
        .metadata()
        .clone()
        .ok_or_else(|| anyhow!("{}: checkpoint has no metadata", path.display()))?;
    let k: usize = meta(&metadata, "k", path)?;
    let shape_of = |name: &str| -> anyhow::Result<(usize, usize)> {
        let view = st
            .tensor(name)
            .map_err(|_| anyhow!("{}: missing tensor '{name}'", path.display()))?;
        match view.shape() {
            [a, b] => Ok((*a, *b)),
            other => bail!("{}: tensor '{name}' has shape {other:?}", path.display()),
        }
    };
    let (n, d_out) = shape_of("W_dec")?;
    let (d, _) = shape_of("W_enc")?;
    let transcoder = metadata.get("transcoder").is_some_and(|t| t == "true");
    if !transcoder && d != d_out {
        bail!(
            "{}: W_enc reads {d} values but W_dec writes {d_out}, and the checkpoint is not a transcoder's",
            path.display()
        );
    }
    let shapes: [Vec<usize>; 4] = [vec![d, n], vec![n], vec![n, d_out], vec![d_out]];
    let mut values = Vec::new();
    let mut moments = Vec::new();
    for i in 0..4 {
        values.push(read_tensor_f32(&st, PARAM_NAMES[i], &shapes[i], path)?);
        moments.push((
            read_tensor_f32(
                &st,
                &format!("exp_avg.{}", PARAM_NAMES[i]),
                &shapes[i],
                path,
            )?,
            read_tensor_f32(
                &st,
                &format!("exp_avg_sq.{}", PARAM_NAMES[i]),
                &shapes[i],
                path,
            )?,
        ));
    }
    let threshold_param = if st.names().contains(&THRESHOLD_PARAM) {
        let read = |name: &str| read_tensor_f32(&st, name, &[n], path);
        moments.push((
            read(&format!("exp_avg.{THRESHOLD_PARAM}"))?,
            read(&format!("exp_avg_sq.{THRESHOLD_PARAM}"))?,
        ));
        Some(read(THRESHOLD_PARAM)?)
    } else {
        None
    };
    let (w_skip, skip_moments) = if st.names().contains(&W_SKIP) {
        let read = |name: &str| read_tensor_f32(&st, name, &[d_out, d], path);
        let moments = (
            read(&format!("exp_avg.{W_SKIP}"))?,
            read(&format!("exp_avg_sq.{W_SKIP}"))?,
        );
        (Some(read(W_SKIP)?), Some(moments))
    } else {
        (None, None)
    };
    let since = st
        .tensor("since_fired")
        .map_err(|_| anyhow!("{}: missing tensor 'since_fired'", path.display()))?;
    let counts = st
        .tensor("fire_counts")
        .map_err(|_| anyhow!("{}: missing tensor 'fire_counts'", path.display()))?;
    if since.shape() != [n]
        || counts.shape() != [n]
        || since.dtype() != Dtype::U32
        || counts.dtype() != Dtype::I64
    {
        bail!(
            "{}: bookkeeping tensors must be since_fired U32 [{n}] and fire_counts I64 [{n}]",
            path.display()
        );
    }
    if k == 0 || k > n {
        bail!(
            "{}: checkpoint k = {k} does not fit d_sae = {n}",
            path.display()
        );
    }
    let since_fired: Vec<u32> = bytemuck::pod_collect_to_vec(since.data());
    let fire_counts: Vec<u64> = bytemuck::pod_collect_to_vec::<u8, i64>(counts.data())
        .into_iter()
        .map(|c| c.max(0) as u64)
        .collect();
    let mut values = values.into_iter();
    let mut next = || values.next().unwrap_or_default();
    let params = SaeParams {
        input_norm: Default::default(),
        d_in: d,
        d_sae: n,
        activation: Activation::TopK { k },
        w_enc: next(),
        b_enc: next(),
        w_dec: next(),
        b_dec: next(),
        transcoder: transcoder.then_some(Transcoding { d_out, w_skip }),
    };
    let input_scale = meta(&metadata, "input_scale", path)?;
    Ok(Checkpoint {
        step: meta(&metadata, "step", path)?,
        tokens: meta(&metadata, "tokens", path)?,
        input_scale,
        target_scale: metadata
            .get("target_scale")
            .and_then(|t| t.parse().ok())
            .unwrap_or(input_scale),
        snapshot: TrainerSnapshot {
            params,
            moments,
            since_fired,
            theta: metadata.get("theta").and_then(|t| t.parse().ok()),
            threshold_param,
            skip_moments,
        },
        fire_counts,
    })
}

/// The newest checkpoint in `dir` that loads; a damaged newer file is reported and skipped.
pub fn latest(dir: &Path) -> anyhow::Result<Option<(PathBuf, Checkpoint)>> {
    for (_, path) in steps_in(dir).into_iter().rev() {
        match load(&path) {
            Ok(checkpoint) => return Ok(Some((path, checkpoint))),
            Err(error) => tracing::warn!("skipping unreadable checkpoint: {error:#}"),
        }
    }
    Ok(None)
}
