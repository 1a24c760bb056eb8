//! `sae attribute`'s pass against the f64 reference (tests/common/attribution.rs) on a random
//! cache at shapes that are not multiples of anything (d 33, 77 latents, 301 rows over two
//! files, batches of 64, three heads of 11, a skip-transcoder of 19 features): firing counts
//! exactly, every summed term to 1e-5, the parts summing to each pre-activation (the
//! completeness figures) to 1e-5, and the token tables of the pages (latents' and transcoder
//! features' tokens exactly, heads' terms per token, over every latent and per group, to 1e-5).

mod common;

use std::collections::HashMap;
use std::sync::Arc;

use common::attribution::{reference_totals, RefCache, RefTotals};
use common::{assert_close, gpu, random_sae, random_vec, rng, temp_dir};
use rand::Rng;
use sae_wgpu::analysis::attribute::{attribute, AttributionSetup, HeadWeights, TranscoderSpec};
use sae_wgpu::data::ComponentCache;
use sae_wgpu::io::{write_safetensors, TensorOut};
use sae_wgpu::sae::params::{Activation, InputNorm, SaeParams};

const D: usize = 33;
const ROWS: usize = 301;
const HEADS: usize = 3;
const D_HEAD: usize = 11;
const BLOCKS: usize = 2;
/// Token ids of the random cache: few, so every head sums over many rows per token.
const VOCAB: i32 = 13;

fn component_names() -> Vec<String> {
    let mut names = vec!["hook_embed".to_string()];
    for l in 0..BLOCKS {
        names.push(format!("blocks.{l}.hook_attn_out"));
        names.push(format!("blocks.{l}.hook_mlp_out"));
    }
    names
}

/// attn_out = z·o_projᵀ, in f64.
fn heads_out(z: &[f32], o: &[f32]) -> Vec<f32> {
    let width = HEADS * D_HEAD;
    (0..ROWS * D)
        .map(|e| {
            let (r, c) = (e / D, e % D);
            (0..width)
                .map(|t| f64::from(z[r * width + t]) * f64::from(o[c * width + t]))
                .sum::<f64>() as f32
        })
        .collect()
}

fn random_cache() -> RefCache {
    let mut r = rng(2800);
    let mut components = vec![random_vec(&mut r, ROWS * D, 1.0)];
    let mut heads = Vec::new();
    for _ in 0..BLOCKS {
        let z = random_vec(&mut r, ROWS * HEADS * D_HEAD, 1.0);
        let o = random_vec(&mut r, D * HEADS * D_HEAD, 0.3);
        components.push(heads_out(&z, &o));
        components.push(random_vec(&mut r, ROWS * D, 1.0));
        heads.push((z, o));
    }
    let resid = (0..ROWS * D)
        .map(|e| components.iter().map(|c| f64::from(c[e])).sum::<f64>() as f32)
        .collect();
    RefCache {
        rows: ROWS,
        d: D,
        components,
        resid,
        heads,
        n_heads: HEADS,
        tc_input: random_vec(&mut r, ROWS * D, 1.0),
        tc_component: 4,
        tokens: (0..ROWS).map(|_| r.random_range(0..VOCAB)).collect(),
    }
}

/// Writes the cache as two files (rows 0..200 and 200..301).
fn write_cache(cache: &RefCache, dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let names = component_names();
    [(0, 200), (200, ROWS)]
        .iter()
        .enumerate()
        .map(|(f, &(a, b))| {
            let n = b - a;
            let rows = |v: &[f32], w: usize| v[a * w..b * w].to_vec();
            let mut t: Vec<TensorOut> = names
                .iter()
                .zip(&cache.components)
                .map(|(name, c)| TensorOut::f32(name, &[n, D], &rows(c, D)))
                .collect();
            for (l, (z, _)) in cache.heads.iter().enumerate() {
                let name = format!("blocks.{l}.attn.hook_z");
                t.push(TensorOut::f32(
                    &name,
                    &[n, HEADS, D_HEAD],
                    &rows(z, HEADS * D_HEAD),
                ));
            }
            t.push(TensorOut::f32(
                "blocks.1.ln2.hook_normalized",
                &[n, D],
                &rows(&cache.tc_input, D),
            ));
            t.push(TensorOut::i32("tokens", &[n], &cache.tokens[a..b]));
            t.push(TensorOut::f32(
                "blocks.1.hook_resid_post",
                &[n, D],
                &rows(&cache.resid, D),
            ));
            let path = dir.join(format!("components_{f:04}.safetensors"));
            write_safetensors(&path, &t, None).unwrap();
            path
        })
        .collect()
}

#[test]
fn attribution_matches_the_f64_reference() {
    let sae = random_sae(2801, D, 77, Activation::TopK { k: 7 });
    check_against_reference("attribution-reference", &sae, 256);
}

/// A ReLU SAE that rescales each row to norm √d and keeps 5 latents per row (most rows have
/// more positive pre-activations: they are counted as dropped).
#[test]
fn thresholded_rescaling_sae_matches_the_f64_reference() {
    let mut sae = random_sae(2805, D, 77, Activation::Relu);
    sae.input_norm = InputNorm::ConstantNormRescale;
    check_against_reference("attribution-relu", &sae, 5);
}

fn check_against_reference(name: &str, sae: &SaeParams, cap: usize) {
    let Some(gpu) = gpu() else { return };
    let dir = temp_dir(name);
    let cache = random_cache();
    let files = write_cache(&cache, &dir);
    let mut r = rng(2802);
    let mut tc = random_sae(2803, D, 19, Activation::TopK { k: 5 }).into_transcoder(
        D,
        random_vec(&mut r, 19 * D, 0.5),
        true,
    );
    tc.b_dec = random_vec(&mut r, D, 0.3);
    if let Some(t) = tc.transcoder.as_mut() {
        t.w_skip = Some(random_vec(&mut r, D * D, 0.2));
    }
    // Two overlapping groups (latent 40 is in both).
    let groups = vec![
        (0..77).step_by(5).collect::<Vec<usize>>(),
        vec![76, 3, 40, 8, 41],
    ];
    let want = reference_totals(sae, &cache, &tc, cap, &groups);
    let setup = AttributionSetup {
        sae,
        cache: Arc::new(ComponentCache::open(&files).unwrap()),
        resid: "blocks.1.hook_resid_post".into(),
        components: component_names(),
        heads: Some(HeadWeights {
            n_heads: HEADS,
            d_head: D_HEAD,
            blocks: cache
                .heads
                .iter()
                .enumerate()
                .map(|(l, (_, o))| (l, o.clone()))
                .collect(),
        }),
        transcoders: vec![TranscoderSpec {
            hook: "blocks.1.hook_mlp_out".into(),
            input: "blocks.1.ln2.hook_normalized".into(),
            params: tc.clone(),
        }],
        batch_rows: 64,
        cap,
        token_groups: groups.clone(),
    };
    let got = attribute(gpu, &setup, |_| {}).unwrap();
    assert_eq!(got.rows, ROWS as u64);
    assert_eq!(got.fire_count, want.fire_count, "the same latents fire");
    assert_eq!(
        got.dropped, want.dropped,
        "the same activations beyond the cap"
    );
    let f32s = |v: &[f64]| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    assert_close("sum_pre", &f32s(&got.sum_pre), &want.sum_pre, 1e-5);
    assert_close(
        "contribution",
        &f32s(&got.contribution),
        &want.contribution,
        1e-5,
    );
    assert_close("heads", &f32s(&got.head_contribution), &want.heads, 1e-5);
    assert_close(
        "transcoder parts",
        &f32s(&got.hooks[0].parts),
        &want.parts,
        1e-5,
    );
    let dense = |maps: &[std::collections::HashMap<u32, f64>]| -> Vec<f64> {
        let mut out = vec![0.0; 77 * 19];
        for (i, m) in maps.iter().enumerate() {
            for (&j, &v) in m {
                out[i * 19 + j as usize] = v;
            }
        }
        out
    };
    let up = dense(&got.hooks[0].upstream);
    assert_close("upstream", &f32s(&up), &dense(&want.upstream), 1e-5);
    check_token_tables(&got, &want);
    let c = got.completeness();
    assert_eq!(c.pairs, got.fire_count.iter().sum::<u64>());
    assert!(
        c.max_rel_error <= 1e-5,
        "parts miss h by {}",
        c.max_rel_error
    );
    assert!(
        got.head_gaps.max_rel_error() <= 1e-5,
        "heads miss attn_out by {}",
        got.head_gaps.max_rel_error()
    );
    let tc_gap = got.hooks[0].gaps.max_rel_error();
    assert!(
        tc_gap <= 1e-5,
        "the transcoder's parts miss mlp_out by {tc_gap}"
    );
}

/// [owners, VOCAB] of per-owner token tables, as f64.
fn per_token<V: Copy + Into<f64>>(maps: &[&HashMap<i32, V>]) -> Vec<f64> {
    let mut out = vec![0.0; maps.len() * VOCAB as usize];
    for (o, m) in maps.iter().enumerate() {
        for (&t, &v) in m.iter() {
            out[o * VOCAB as usize + t as usize] = v.into();
        }
    }
    out
}

fn check_token_tables(got: &sae_wgpu::analysis::attribute::Totals, want: &RefTotals) {
    let refs = |maps: &[HashMap<i32, u32>]| per_token(&maps.iter().collect::<Vec<_>>());
    assert_eq!(
        refs(&got.latent_tokens),
        refs(&want.latent_tokens),
        "latents' tokens"
    );
    let none = HashMap::new();
    let features = |m: &HashMap<u32, HashMap<i32, u32>>| {
        per_token(
            &(0..19)
                .map(|j| m.get(&j).unwrap_or(&none))
                .collect::<Vec<_>>(),
        )
    };
    assert_eq!(
        features(&got.hooks[0].feature_tokens),
        features(&want.feature_tokens),
        "transcoder features' tokens"
    );
    let sums = |maps: &[HashMap<i32, f64>]| per_token(&maps.iter().collect::<Vec<_>>());
    let f32s = |v: Vec<f64>| v.iter().map(|&x| x as f32).collect::<Vec<f32>>();
    assert_close(
        "heads per token",
        &f32s(sums(&got.head_tokens.heads)),
        &sums(&want.head_tokens),
        1e-5,
    );
    assert_eq!(got.group_heads.len(), want.group_head_tokens.len());
    for (g, (mine, theirs)) in got
        .group_heads
        .iter()
        .zip(&want.group_head_tokens)
        .enumerate()
    {
        assert_close(
            &format!("group {g}'s heads per token"),
            &f32s(sums(&mine.tokens.heads)),
            &sums(theirs),
            1e-5,
        );
    }
}
