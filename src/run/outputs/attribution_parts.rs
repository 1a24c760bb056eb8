//! One part of a split `sae attribute --part I/N`: every sum of the pass (attribution-part.
//! safetensors, f64; each sparse table as three lists: owner, key, value) and what it covered
//! (attribution-part.json), so that `sae attribute merge` adds the parts into exactly the
//! totals of one pass.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use bytemuck::Pod;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::analysis::attribute::totals::Gaps;
use crate::analysis::attribute::{Totals, BIAS, HOOK_PARTS};
use crate::io::{write_json_atomic, write_safetensors, TensorOut};
use crate::sae::formats::{parse, read_json, read_safetensors, read_tensor_f64};

pub const PART_TENSORS: &str = "attribution-part.safetensors";
pub const PART_JSON: &str = "attribution-part.json";
/// Upstream feature ids a part may hold (a dense scratch of this many f64 is made per hook).
const MAX_UPSTREAM: i64 = 1 << 24;

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

/// A sparse table (per owner: key → value) as three parallel lists. Keys are token ids or
/// feature ids, values sums or counts; i64 and f64 hold every one of them exactly.
#[derive(Default)]
struct Triples {
    owner: Vec<u32>,
    key: Vec<i64>,
    value: Vec<f64>,
}

impl Triples {
    fn of<'a, K, V>(maps: impl Iterator<Item = (u32, &'a HashMap<K, V>)>) -> Triples
    where
        K: Copy + Into<i64> + 'a,
        V: Copy + Into<f64> + 'a,
    {
        let mut t = Triples::default();
        for (owner, map) in maps {
            for (&k, &v) in map {
                t.owner.push(owner);
                t.key.push(k.into());
                t.value.push(v.into());
            }
        }
        t
    }

    fn tensors(&self, name: &str) -> [TensorOut; 3] {
        let n = self.owner.len();
        [
            TensorOut::u32(&format!("{name}.owner"), &[n], &self.owner),
            TensorOut::i64(&format!("{name}.key"), &[n], &self.key),
            TensorOut::f64(&format!("{name}.value"), &[n], &self.value),
        ]
    }

    fn read(st: &SafeTensors<'_>, name: &str, path: &Path) -> anyhow::Result<Triples> {
        let t = Triples {
            owner: typed(st, &format!("{name}.owner"), Dtype::U32, path)?,
            key: typed(st, &format!("{name}.key"), Dtype::I64, path)?,
            value: typed(st, &format!("{name}.value"), Dtype::F64, path)?,
        };
        if t.key.len() != t.owner.len() || t.value.len() != t.owner.len() {
            bail!("{}: the lists of '{name}' differ in length", path.display());
        }
        Ok(t)
    }

    /// (owner, key, value) with the owner checked below `owners` and the key by `key`.
    fn entries<K>(
        &self,
        owners: usize,
        key: impl Fn(i64) -> Option<K>,
        path: &Path,
    ) -> anyhow::Result<Vec<(usize, K, f64)>> {
        let bad = |what: &str, v: i64| anyhow!("{}: {what} {v} is out of range", path.display());
        (0..self.owner.len())
            .map(|e| {
                let o = self.owner[e] as usize;
                if o >= owners {
                    return Err(bad("owner", o as i64));
                }
                let k = key(self.key[e]).ok_or_else(|| bad("key", self.key[e]))?;
                Ok((o, k, self.value[e]))
            })
            .collect()
    }
}

/// A tensor's elements as stored, its dtype checked.
fn typed<T: Pod>(
    st: &SafeTensors<'_>,
    name: &str,
    dtype: Dtype,
    path: &Path,
) -> anyhow::Result<Vec<T>> {
    let view = st
        .tensor(name)
        .map_err(|_| anyhow!("{}: missing tensor '{name}'", path.display()))?;
    if view.dtype() != dtype {
        bail!(
            "{}: tensor '{name}' is {:?}, expected {dtype:?}",
            path.display(),
            view.dtype()
        );
    }
    Ok(bytemuck::pod_collect_to_vec(view.data()))
}

/// Each map with its index as its owner.
fn numbered<T>(maps: &[T]) -> impl Iterator<Item = (u32, &T)> {
    (0u32..).zip(maps)
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
    t.extend(Triples::of(numbered(&totals.latent_tokens)).tensors("latent_tokens"));
    t.extend(Triples::of(numbered(&totals.head_tokens.heads)).tensors("head_tokens"));
    let group_heads = totals.group_heads.iter().flat_map(|g| &g.tokens.heads);
    t.extend(Triples::of((0u32..).zip(group_heads)).tensors("group_head_tokens"));
    for (h, hook) in totals.hooks.iter().enumerate() {
        let p = format!("hook{h}");
        t.push(TensorOut::f64(
            &format!("{p}.parts"),
            &[d, HOOK_PARTS.len()],
            &hook.parts,
        ));
        t.push(TensorOut::f64(
            &format!("{p}.gaps"),
            &[4],
            &gaps_row(&hook.gaps),
        ));
        t.extend(Triples::of(numbered(&hook.upstream)).tensors(&format!("{p}.upstream")));
        let tokens = hook.feature_tokens.iter().map(|(&j, m)| (j, m));
        t.extend(Triples::of(tokens).tensors(&format!("{p}.feature_tokens")));
    }
    write_safetensors(&out.join(PART_TENSORS), &t, None)?;
    write_json_atomic(&out.join(PART_JSON), meta)
}

/// A part's metadata and empty totals over the columns it names.
fn read_meta(dir: &Path) -> anyhow::Result<(Value, Totals)> {
    let path = dir.join(PART_JSON);
    let meta = read_json(&path).context("not a `sae attribute --part I/N` output")?;
    let strings = |list: &Value, key: Option<&str>| -> Vec<String> {
        let items = list.as_array().into_iter().flatten();
        items
            .filter_map(|v| key.map_or(v, |k| &v[k]).as_str().map(String::from))
            .collect()
    };
    let d = meta["d_sae"]
        .as_u64()
        .ok_or_else(|| anyhow!("{}: no d_sae", path.display()))? as usize;
    let components = strings(&meta["components"], None);
    if components.last().map(String::as_str) != Some(BIAS) {
        bail!(
            "{}: 'components' must list the cache's components with 'bias' last",
            path.display()
        );
    }
    let hooks = strings(&meta["hooks"], Some("hook"));
    let groups = token_groups(&meta, d, &path)?;
    let heads = strings(&meta["heads"], None);
    let mut totals = Totals::empty(d, components, heads, &hooks, &groups);
    totals.rows = meta["rows"].as_u64().unwrap_or(0);
    totals.dropped = meta["dropped_beyond_cap"].as_u64().unwrap_or(0);
    Ok((meta, totals))
}

/// The groups whose heads the part summed token by token (none in parts of older versions).
fn token_groups(meta: &Value, d_sae: usize, path: &Path) -> anyhow::Result<Vec<Vec<usize>>> {
    let Some(list) = meta.get("token_groups") else {
        return Ok(Vec::new());
    };
    let groups: Vec<Vec<usize>> = serde_json::from_value(list.clone()).map_err(|e| {
        anyhow!(
            "{}: 'token_groups' is not a list of member lists: {e}",
            path.display()
        )
    })?;
    if let Some(&m) = groups.iter().flatten().find(|&&m| m >= d_sae) {
        bail!(
            "{}: 'token_groups' names latent {m} of {d_sae}",
            path.display()
        );
    }
    Ok(groups)
}

/// Reads a part written by [`write_part`]: its metadata and its sums (columns as `meta` says).
pub fn read_part(dir: &Path) -> anyhow::Result<(Value, Totals)> {
    let (meta, mut totals) = read_meta(dir)?;
    let path = dir.join(PART_TENSORS);
    let bytes = read_safetensors(&path)?;
    let st = parse(&bytes, &path)?;
    read_dense(&st, &path, &mut totals)?;
    read_tokens(&st, &path, &mut totals)?;
    for h in 0..totals.hooks.len() {
        read_hook(&st, &path, &mut totals, h)?;
    }
    Ok((meta, totals))
}

fn read_dense(st: &SafeTensors<'_>, path: &Path, totals: &mut Totals) -> anyhow::Result<()> {
    let (d, nc, nh) = (totals.d_sae, totals.components.len(), totals.heads.len());
    let counts = read_tensor_f64(st, "fire_count", &[d], path)?;
    totals.fire_count = counts.iter().map(|&c| c as u64).collect();
    totals.sum_pre = read_tensor_f64(st, "sum_pre", &[d], path)?;
    totals.contribution = read_tensor_f64(st, "contribution", &[d, nc], path)?;
    totals.head_contribution = read_tensor_f64(st, "head_contribution", &[d, nh], path)?;
    totals.gaps = gaps_of(&read_tensor_f64(st, "gaps", &[4], path)?);
    totals.head_gaps = gaps_of(&read_tensor_f64(st, "head_gaps", &[4], path)?);
    Ok(())
}

fn token(key: i64) -> Option<i32> {
    i32::try_from(key).ok()
}

fn read_tokens(st: &SafeTensors<'_>, path: &Path, totals: &mut Totals) -> anyhow::Result<()> {
    let latents = Triples::read(st, "latent_tokens", path)?;
    for (o, t, c) in latents.entries(totals.d_sae, token, path)? {
        *totals.latent_tokens[o].entry(t).or_insert(0) += c as u32;
    }
    let heads = Triples::read(st, "head_tokens", path)?;
    for (o, t, v) in heads.entries(totals.heads.len(), token, path)? {
        *totals.head_tokens.heads[o].entry(t).or_insert(0.0) += v;
    }
    let nh = totals.heads.len();
    if totals.group_heads.is_empty() {
        return Ok(());
    }
    let groups = Triples::read(st, "group_head_tokens", path)?;
    for (o, t, v) in groups.entries(totals.group_heads.len() * nh, token, path)? {
        *totals.group_heads[o / nh].tokens.heads[o % nh]
            .entry(t)
            .or_insert(0.0) += v;
    }
    Ok(())
}

fn read_hook(
    st: &SafeTensors<'_>,
    path: &Path,
    totals: &mut Totals,
    h: usize,
) -> anyhow::Result<()> {
    let (d, p) = (totals.d_sae, format!("hook{h}"));
    let hook = &mut totals.hooks[h];
    hook.parts = read_tensor_f64(st, &format!("{p}.parts"), &[d, HOOK_PARTS.len()], path)?;
    hook.gaps = gaps_of(&read_tensor_f64(st, &format!("{p}.gaps"), &[4], path)?);
    let feature = |key: i64| (0..MAX_UPSTREAM).contains(&key).then_some(key as u32);
    let upstream = Triples::read(st, &format!("{p}.upstream"), path)?;
    for (i, j, v) in upstream.entries(d, feature, path)? {
        *hook.upstream[i].entry(j).or_insert(0.0) += v;
    }
    let tokens = Triples::read(st, &format!("{p}.feature_tokens"), path)?;
    for (j, t, c) in tokens.entries(MAX_UPSTREAM as usize, token, path)? {
        let counts = hook.feature_tokens.entry(j as u32).or_default();
        *counts.entry(t).or_insert(0) += c as u32;
    }
    Ok(())
}
