//! One part of a split `sae attribute --part I/N`: every sum of the pass (attribution-part.
//! safetensors, f64; the sparse ones as coordinate lists) and what it covered
//! (attribution-part.json), so that `sae attribute merge` adds the parts into exactly the
//! totals of one pass.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, Context};
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::analysis::attribute::totals::Gaps;
use crate::analysis::attribute::{Totals, HOOK_PARTS};
use crate::io::{write_json_atomic, write_safetensors, TensorOut};
use crate::sae::formats::read_tensor_f64;

pub const PART_TENSORS: &str = "attribution-part.safetensors";
pub const PART_JSON: &str = "attribution-part.json";
/// Upstream feature ids a part may hold (a dense scratch of this many f64 is made per hook).
const MAX_UPSTREAM: u32 = 1 << 24;

fn gaps_row(g: &Gaps) -> Vec<f64> {
    vec![g.pairs as f64, g.max_abs, g.sum_sq, g.sum_h_sq]
}

fn gaps_of(v: &[f64]) -> Gaps {
    Gaps {
        pairs: v[0] as u64,
        max_abs: v[1],
        sum_sq: v[2],
        sum_h_sq: v[3],
    }
}

/// Token counts as (owner, token, count) lists.
fn count_lists<'a>(
    prefix: &str,
    maps: impl Iterator<Item = (u32, &'a HashMap<i32, u32>)>,
) -> Vec<TensorOut> {
    let (mut owner, mut token, mut count) = (Vec::new(), Vec::new(), Vec::new());
    for (k, m) in maps {
        for (&t, &n) in m {
            owner.push(k);
            token.push(t);
            count.push(n);
        }
    }
    let n = owner.len();
    vec![
        TensorOut::u32(&format!("{prefix}token_owner"), &[n], &owner),
        TensorOut::i32(&format!("{prefix}token_id"), &[n], &token),
        TensorOut::u32(&format!("{prefix}token_count"), &[n], &count),
    ]
}

/// Writes the part's sums and `meta` (its PartInfo and settings) into `out`.
pub fn write_part(out: &Path, totals: &Totals, meta: &Value) -> anyhow::Result<()> {
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let d = totals.d_sae;
    let (nc, nh) = (totals.components.len(), totals.heads.len());
    // f64 holds every count below 2⁵³ exactly.
    let counts: Vec<f64> = totals.fire_count.iter().map(|&c| c as f64).collect();
    let mut t = vec![
        TensorOut::f64("fire_count", &[d], &counts),
        TensorOut::f64("sum_pre", &[d], &totals.sum_pre),
        TensorOut::f64("contribution", &[d, nc], &totals.contribution),
        TensorOut::f64("head_contribution", &[d, nh], &totals.head_contribution),
        TensorOut::f64("gaps", &[4], &gaps_row(&totals.gaps)),
        TensorOut::f64("head_gaps", &[4], &gaps_row(&totals.head_gaps)),
    ];
    let (mut owner, mut token, mut sum) = (Vec::new(), Vec::new(), Vec::new());
    for (hh, m) in totals.head_tokens.iter().enumerate() {
        for (&t, &v) in m {
            owner.push(hh as u32);
            token.push(t);
            sum.push(v);
        }
    }
    let n = owner.len();
    t.push(TensorOut::u32("head_token_owner", &[n], &owner));
    t.push(TensorOut::i32("head_token_id", &[n], &token));
    t.push(TensorOut::f64("head_token_sum", &[n], &sum));
    let latents = totals
        .latent_tokens
        .iter()
        .enumerate()
        .map(|(i, m)| (i as u32, m));
    t.extend(count_lists("", latents));
    for (h, hook) in totals.hooks.iter().enumerate() {
        let p = format!("hook{h}.");
        t.push(TensorOut::f64(
            &format!("{p}parts"),
            &[d, HOOK_PARTS.len()],
            &hook.parts,
        ));
        t.push(TensorOut::f64(
            &format!("{p}gaps"),
            &[4],
            &gaps_row(&hook.gaps),
        ));
        let (mut latent, mut feature, mut value) = (Vec::new(), Vec::new(), Vec::new());
        for (i, m) in hook.upstream.iter().enumerate() {
            for (&j, &v) in m {
                latent.push(i as u32);
                feature.push(j);
                value.push(v);
            }
        }
        let n = latent.len();
        t.push(TensorOut::u32(
            &format!("{p}upstream_latent"),
            &[n],
            &latent,
        ));
        t.push(TensorOut::u32(
            &format!("{p}upstream_feature"),
            &[n],
            &feature,
        ));
        t.push(TensorOut::f64(&format!("{p}upstream_value"), &[n], &value));
        t.extend(count_lists(
            &p,
            hook.feature_tokens.iter().map(|(&j, m)| (j, m)),
        ));
    }
    write_safetensors(&out.join(PART_TENSORS), &t, None)?;
    write_json_atomic(&out.join(PART_JSON), meta)
}

fn ints<T: Copy>(
    st: &SafeTensors<'_>,
    name: &str,
    dtype: Dtype,
    path: &Path,
    from: fn([u8; 4]) -> T,
) -> anyhow::Result<Vec<T>> {
    let view = st
        .tensor(name)
        .map_err(|_| anyhow!("{}: missing tensor '{name}'", path.display()))?;
    if view.dtype() != dtype {
        anyhow::bail!(
            "{}: tensor '{name}' is {:?}, expected {dtype:?}",
            path.display(),
            view.dtype()
        );
    }
    Ok(view
        .data()
        .chunks_exact(4)
        .map(|b| from([b[0], b[1], b[2], b[3]]))
        .collect())
}

fn counts_into(
    st: &SafeTensors<'_>,
    prefix: &str,
    path: &Path,
) -> anyhow::Result<Vec<(u32, i32, u32)>> {
    let owner = ints(
        st,
        &format!("{prefix}token_owner"),
        Dtype::U32,
        path,
        u32::from_le_bytes,
    )?;
    let token = ints(
        st,
        &format!("{prefix}token_id"),
        Dtype::I32,
        path,
        i32::from_le_bytes,
    )?;
    let count = ints(
        st,
        &format!("{prefix}token_count"),
        Dtype::U32,
        path,
        u32::from_le_bytes,
    )?;
    Ok(owner
        .into_iter()
        .zip(token)
        .zip(count)
        .map(|((o, t), c)| (o, t, c))
        .collect())
}

fn out_of_range(path: &Path, latent: u32) -> anyhow::Error {
    anyhow!(
        "{}: latent {latent} is beyond the part's d_sae",
        path.display()
    )
}

/// Reads a part written by [`write_part`]: its metadata and its sums (columns as `meta` says).
pub fn read_part(dir: &Path) -> anyhow::Result<(Value, Totals)> {
    let json_path = dir.join(PART_JSON);
    let text = std::fs::read_to_string(&json_path).with_context(|| {
        format!(
            "{}: cannot read (a `sae attribute --part I/N` output?)",
            json_path.display()
        )
    })?;
    let meta: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", json_path.display()))?;
    let strings = |key: &str| -> Vec<String> {
        meta[key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v.as_str().map(String::from))
            .collect()
    };
    let hooks: Vec<String> = meta["hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|h| h["hook"].as_str().map(String::from))
        .collect();
    let d = meta["d_sae"]
        .as_u64()
        .ok_or_else(|| anyhow!("{}: no d_sae", json_path.display()))? as usize;
    let components = strings("components");
    if components.last().map(String::as_str) != Some(crate::analysis::attribute::BIAS) {
        anyhow::bail!(
            "{}: 'components' must list the cache's components with 'bias' last",
            json_path.display()
        );
    }
    let mut totals = Totals::empty(d, components, strings("heads"), &hooks);
    let path = dir.join(PART_TENSORS);
    let bytes = std::fs::read(&path).with_context(|| format!("{}: cannot read", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
    let (nc, nh) = (totals.components.len(), totals.heads.len());
    let counts = read_tensor_f64(&st, "fire_count", &[d], &path)?;
    totals.fire_count = counts.iter().map(|&c| c as u64).collect();
    totals.rows = meta["rows"].as_u64().unwrap_or(0);
    totals.dropped = meta["dropped_beyond_cap"].as_u64().unwrap_or(0);
    totals.sum_pre = read_tensor_f64(&st, "sum_pre", &[d], &path)?;
    totals.contribution = read_tensor_f64(&st, "contribution", &[d, nc], &path)?;
    totals.head_contribution = read_tensor_f64(&st, "head_contribution", &[d, nh], &path)?;
    totals.gaps = gaps_of(&read_tensor_f64(&st, "gaps", &[4], &path)?);
    totals.head_gaps = gaps_of(&read_tensor_f64(&st, "head_gaps", &[4], &path)?);
    for (o, t, c) in counts_into(&st, "", &path)? {
        let counts = totals
            .latent_tokens
            .get_mut(o as usize)
            .ok_or_else(|| out_of_range(&path, o))?;
        *counts.entry(t).or_insert(0) += c;
    }
    let owner = ints(
        &st,
        "head_token_owner",
        Dtype::U32,
        &path,
        u32::from_le_bytes,
    )?;
    let token = ints(&st, "head_token_id", Dtype::I32, &path, i32::from_le_bytes)?;
    let sums = read_tensor_f64(&st, "head_token_sum", &[owner.len()], &path)?;
    for ((o, t), v) in owner.into_iter().zip(token).zip(sums) {
        let head = totals
            .head_tokens
            .get_mut(o as usize)
            .ok_or_else(|| out_of_range(&path, o))?;
        *head.entry(t).or_insert(0.0) += v;
    }
    for (h, hook) in totals.hooks.iter_mut().enumerate() {
        let p = format!("hook{h}.");
        hook.parts = read_tensor_f64(&st, &format!("{p}parts"), &[d, HOOK_PARTS.len()], &path)?;
        hook.gaps = gaps_of(&read_tensor_f64(&st, &format!("{p}gaps"), &[4], &path)?);
        let latent = ints(
            &st,
            &format!("{p}upstream_latent"),
            Dtype::U32,
            &path,
            u32::from_le_bytes,
        )?;
        let feature = ints(
            &st,
            &format!("{p}upstream_feature"),
            Dtype::U32,
            &path,
            u32::from_le_bytes,
        )?;
        let n = latent.len();
        let value = read_tensor_f64(&st, &format!("{p}upstream_value"), &[n], &path)?;
        if let Some(&j) = feature.iter().find(|&&j| j >= MAX_UPSTREAM) {
            anyhow::bail!(
                "{}: upstream feature {j} is beyond any transcoder this reads",
                path.display()
            );
        }
        for ((i, j), v) in latent.into_iter().zip(feature).zip(value) {
            let sums = hook
                .upstream
                .get_mut(i as usize)
                .ok_or_else(|| out_of_range(&path, i))?;
            *sums.entry(j).or_insert(0.0) += v;
        }
        for (j, t, c) in counts_into(&st, &p, &path)? {
            *hook
                .feature_tokens
                .entry(j)
                .or_default()
                .entry(t)
                .or_insert(0) += c;
        }
    }
    Ok((meta, totals))
}
