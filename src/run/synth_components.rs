//! `sae synth --components`: a component cache with a planted mechanism, and the SAE,
//! transcoder and output weights that go with it, for testing `sae attribute` on known truth.
//!
//! A toy three-block model: the residual is hook_embed + Σ_l (attn_out_l + mlp_out_l), each
//! attn_out the sum of four heads' z·W_Oᵀ. The SAE's latents are random unit directions (its
//! encoder and decoder, TopK). Each latent that fires on a row writes magnitude × its
//! direction into one component: the planted group into block 1's MLP through transcoder
//! features planted for it (one per member, read from block 1's ln2 input), the head group
//! through head L2H1, and every other latent, on each row, into a component drawn afresh
//! (attention through all the block's heads, W_O being invertible). Every component also carries a little noise, so every one of
//! them writes something everywhere. truth.json names the planted group, writer, upstream
//! features, head group and head.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde_json::json;

use crate::data::synth::gaussian;
use crate::io::{write_json_atomic, write_safetensors, TensorOut};
use crate::sae::formats::save_sparsify;
use crate::sae::params::{Activation, SaeParams};

const BLOCKS: usize = 3;
const HEADS: usize = 4;
/// The block whose MLP a transcoder stands in for, and whose MLP writes the planted group.
const TC_BLOCK: usize = 1;
/// The planted head (block, head) and its group.
const HEAD: (usize, usize) = (2, 1);
const GROUP: usize = 5;
const VOCAB: usize = 64;

#[derive(Clone, Copy, Debug)]
pub struct ComponentsConfig {
    pub d: usize,
    pub d_sae: usize,
    pub rows: usize,
    /// Mean latents firing per row.
    pub mean_active: f64,
    /// Transcoder features (the first GROUP are planted).
    pub d_tc: usize,
    pub noise_std: f64,
    pub seed: u64,
}

/// Where each latent's mass goes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Writer {
    /// Block TC_BLOCK's MLP through transcoder feature j.
    TcFeature(usize),
    /// Head h of block l alone.
    Head(usize, usize),
    /// On each row a component drawn afresh: the embedding, a block's attention (through all
    /// its heads) or a block's MLP.
    Random,
}

/// Components a [`Writer::Random`] latent may be written by on a row.
const RANDOM_WRITERS: usize = 1 + 2 * BLOCKS;

fn unit(rng: &mut ChaCha8Rng, d: usize) -> Vec<f32> {
    let v: Vec<f64> = (0..d).map(|_| gaussian(rng)).collect();
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter().map(|x| (x / n) as f32).collect()
}

fn normal(rng: &mut ChaCha8Rng, n: usize, std: f64) -> Vec<f32> {
    (0..n).map(|_| (std * gaussian(rng)) as f32).collect()
}

/// The toy model's pieces.
struct Toy {
    d_head: usize,
    /// o_proj per block [d, HEADS·d_head].
    o_proj: Vec<Vec<f32>>,
    /// Its inverse per block [HEADS·d_head, d]: the z that writes a given vector.
    o_inv: Vec<Vec<f32>>,
    writers: Vec<Writer>,
    /// Latent directions [d_sae][d].
    directions: Vec<Vec<f32>>,
    /// Head-written latents: the z (d_head) that writes their unit direction.
    head_z: HashMap<usize, Vec<f32>>,
    /// Transcoder encoder directions [d_tc][d] and decoder rows [d_tc][d].
    tc_enc: Vec<Vec<f32>>,
    tc_dec: Vec<Vec<f32>>,
}

fn head_column(o: &[f32], d: usize, width: usize, h: usize, d_head: usize, a: &[f32]) -> Vec<f32> {
    (0..d)
        .map(|r| {
            (0..d_head)
                .map(|t| o[r * width + h * d_head + t] * a[t])
                .sum()
        })
        .collect()
}

fn build_toy(c: &ComponentsConfig, rng: &mut ChaCha8Rng) -> Toy {
    let d_head = c.d / HEADS;
    let width = HEADS * d_head;
    let o_proj: Vec<Vec<f32>> = (0..BLOCKS)
        .map(|_| normal(rng, c.d * width, 1.0 / (width as f64).sqrt()))
        .collect();
    let mut writers = Vec::with_capacity(c.d_sae);
    for i in 0..c.d_sae {
        writers.push(if i < GROUP {
            Writer::TcFeature(i)
        } else if i < 2 * GROUP {
            Writer::Head(HEAD.0, HEAD.1)
        } else {
            Writer::Random
        });
    }
    let mut directions = Vec::new();
    let mut head_z = HashMap::new();
    for (i, w) in writers.iter().enumerate() {
        match *w {
            Writer::Head(l, h) => {
                let a = unit(rng, d_head);
                let v = head_column(&o_proj[l], c.d, width, h, d_head, &a);
                let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
                directions.push(v.iter().map(|x| x / n).collect());
                head_z.insert(i, a.iter().map(|x| x / n).collect());
            }
            _ => directions.push(unit(rng, c.d)),
        }
    }
    let tc_enc: Vec<Vec<f32>> = (0..c.d_tc).map(|_| unit(rng, c.d)).collect();
    let tc_dec = (0..c.d_tc)
        .map(|j| match j < GROUP {
            true => directions[j].clone(),
            false => unit(rng, c.d),
        })
        .collect();
    let o_inv = o_proj.iter().map(|o| inverse(o, c.d)).collect();
    Toy {
        d_head,
        o_proj,
        o_inv,
        writers,
        directions,
        head_z,
        tc_enc,
        tc_dec,
    }
}

/// The inverse of a square matrix (Gauss–Jordan with partial pivoting, in f64).
fn inverse(m: &[f32], n: usize) -> Vec<f32> {
    let mut a: Vec<f64> = m.iter().map(|&v| f64::from(v)).collect();
    let mut inv: Vec<f64> = (0..n * n)
        .map(|e| f64::from(u8::from(e / n == e % n)))
        .collect();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&x, &y| a[x * n + col].abs().total_cmp(&a[y * n + col].abs()))
            .unwrap_or(col);
        for k in 0..n {
            a.swap(col * n + k, pivot * n + k);
            inv.swap(col * n + k, pivot * n + k);
        }
        let p = a[col * n + col];
        for k in 0..n {
            a[col * n + k] /= p;
            inv[col * n + k] /= p;
        }
        for r in (0..n).filter(|&r| r != col) {
            let f = a[r * n + col];
            for k in 0..n {
                a[r * n + k] -= f * a[col * n + k];
                inv[r * n + k] -= f * inv[col * n + k];
            }
        }
    }
    inv.iter().map(|&v| v as f32).collect()
}

/// The transcoder: TopK over its encoder directions, decoder rows as planted.
fn transcoder(toy: &Toy, c: &ComponentsConfig) -> SaeParams {
    let (d, n) = (c.d, c.d_tc);
    let mut w_enc = vec![0.0f32; d * n];
    for (j, e) in toy.tc_enc.iter().enumerate() {
        for r in 0..d {
            w_enc[r * n + j] = e[r];
        }
    }
    let p = SaeParams {
        input_norm: Default::default(),
        d_in: d,
        d_sae: n,
        activation: Activation::TopK { k: 4 },
        w_enc,
        b_enc: vec![0.0; n],
        w_dec: Vec::new(),
        b_dec: vec![0.0; d],
        transcoder: None,
    };
    p.into_transcoder(d, toy.tc_dec.concat(), false)
}

/// The SAE: TopK over the latent directions.
fn sae(toy: &Toy, c: &ComponentsConfig) -> SaeParams {
    let (d, n) = (c.d, c.d_sae);
    let mut w_enc = vec![0.0f32; d * n];
    for (i, v) in toy.directions.iter().enumerate() {
        for r in 0..d {
            w_enc[r * n + i] = v[r];
        }
    }
    SaeParams {
        input_norm: Default::default(),
        d_in: d,
        d_sae: n,
        activation: Activation::TopK { k: 4 },
        w_enc,
        b_enc: vec![0.0; n],
        w_dec: toy.directions.concat(),
        b_dec: vec![0.0; d],
        transcoder: None,
    }
}

/// The transcoder's own TopK forward on one input row: Σ g_j·W_dec[j] over its 4 largest.
fn tc_forward(tc: &SaeParams, x: &[f32]) -> Vec<f32> {
    let n = tc.d_sae;
    let mut pre: Vec<(usize, f32)> = (0..n)
        .map(|j| {
            (
                j,
                (0..tc.d_in)
                    .map(|r| x[r] * tc.w_enc[r * n + j])
                    .sum::<f32>(),
            )
        })
        .collect();
    pre.sort_by(|a, b| b.1.total_cmp(&a.1));
    let mut y = vec![0.0f32; tc.d_out()];
    for &(j, g) in pre.iter().take(4).filter(|(_, g)| *g > 0.0) {
        for (o, w) in y
            .iter_mut()
            .zip(&tc.w_dec[j * tc.d_out()..(j + 1) * tc.d_out()])
        {
            *o += g * w;
        }
    }
    y
}

/// Every tensor of the cache, row by row.
struct Rows {
    embed: Vec<f32>,
    z: Vec<Vec<f32>>,
    attn: Vec<Vec<f32>>,
    mlp: Vec<Vec<f32>>,
    ln2: Vec<f32>,
    resid: Vec<f32>,
    tokens: Vec<i32>,
}

fn make_rows(toy: &Toy, tc: &SaeParams, c: &ComponentsConfig, rng: &mut ChaCha8Rng) -> Rows {
    let (d, dh) = (c.d, toy.d_head);
    let width = HEADS * dh;
    let p = c.mean_active / c.d_sae as f64;
    let mut rows = Rows {
        embed: Vec::new(),
        z: vec![Vec::new(); BLOCKS],
        attn: vec![Vec::new(); BLOCKS],
        mlp: vec![Vec::new(); BLOCKS],
        ln2: Vec::new(),
        resid: Vec::new(),
        tokens: Vec::new(),
    };
    for _ in 0..c.rows {
        let mut embed = normal(rng, d, c.noise_std);
        let mut z: Vec<Vec<f32>> = (0..BLOCKS)
            .map(|_| normal(rng, width, c.noise_std))
            .collect();
        let mut mlp: Vec<Vec<f32>> = (0..BLOCKS).map(|_| normal(rng, d, c.noise_std)).collect();
        let mut ln2 = normal(rng, d, c.noise_std);
        // Background activity of the unplanted transcoder features.
        let j = rng.random_range(GROUP..c.d_tc.max(GROUP + 1));
        if j < c.d_tc {
            let m = rng.random_range(0.5f32..1.5);
            ln2.iter_mut()
                .zip(&toy.tc_enc[j])
                .for_each(|(o, e)| *o += m * e);
        }
        for (i, w) in toy.writers.iter().enumerate() {
            if !rng.random_bool(p.min(1.0)) {
                continue;
            }
            let m = rng.random_range(1.0f32..2.0);
            let add = |target: &mut Vec<f32>, v: &[f32]| {
                target.iter_mut().zip(v).for_each(|(o, x)| *o += m * x)
            };
            match *w {
                Writer::TcFeature(j) => add(&mut ln2, &toy.tc_enc[j]),
                Writer::Head(l, h) => add_head(&mut z[l], h, dh, &toy.head_z[&i], m),
                Writer::Random => match rng.random_range(0..RANDOM_WRITERS) {
                    0 => add(&mut embed, &toy.directions[i]),
                    n if n <= BLOCKS => {
                        let zs = times(&toy.o_inv[n - 1], &toy.directions[i], width, d);
                        add(&mut z[n - 1], &zs);
                    }
                    n => add(&mut mlp[n - 1 - BLOCKS], &toy.directions[i]),
                },
            }
        }
        // Block TC_BLOCK's MLP is its transcoder's output, plus what the draws wrote into it.
        let tc_out = tc_forward(tc, &ln2);
        mlp[TC_BLOCK]
            .iter_mut()
            .zip(&tc_out)
            .for_each(|(o, y)| *o += y);
        let attn: Vec<Vec<f32>> = (0..BLOCKS)
            .map(|l| {
                (0..d)
                    .map(|r| {
                        (0..width)
                            .map(|t| toy.o_proj[l][r * width + t] * z[l][t])
                            .sum()
                    })
                    .collect()
            })
            .collect();
        let resid: Vec<f32> = (0..d)
            .map(|r| {
                let mut s = f64::from(embed[r]);
                for l in 0..BLOCKS {
                    s += f64::from(attn[l][r]) + f64::from(mlp[l][r]);
                }
                s as f32
            })
            .collect();
        rows.embed.extend(embed);
        for l in 0..BLOCKS {
            rows.z[l].extend(&z[l]);
            rows.attn[l].extend(&attn[l]);
            rows.mlp[l].extend(&mlp[l]);
        }
        rows.ln2.extend(ln2);
        rows.resid.extend(resid);
        rows.tokens.push(rng.random_range(0..VOCAB as i32));
    }
    rows
}

/// m [rows, cols] times v [cols].
fn times(m: &[f32], v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..rows)
        .map(|r| (0..cols).map(|c| m[r * cols + c] * v[c]).sum())
        .collect()
}

fn add_head(z: &mut [f32], h: usize, dh: usize, zs: &[f32], m: f32) {
    z[h * dh..(h + 1) * dh]
        .iter_mut()
        .zip(zs)
        .for_each(|(o, x)| *o += m * x);
}

fn write_cache(dir: &Path, rows: &Rows, c: &ComponentsConfig, d_head: usize) -> anyhow::Result<()> {
    let (n, d) = (c.rows, c.d);
    let mut t = vec![TensorOut::f32("hook_embed", &[n, d], &rows.embed)];
    for l in 0..BLOCKS {
        t.push(TensorOut::f32(
            &format!("blocks.{l}.hook_attn_out"),
            &[n, d],
            &rows.attn[l],
        ));
        t.push(TensorOut::f32(
            &format!("blocks.{l}.hook_mlp_out"),
            &[n, d],
            &rows.mlp[l],
        ));
        t.push(TensorOut::f32(
            &format!("blocks.{l}.attn.hook_z"),
            &[n, HEADS, d_head],
            &rows.z[l],
        ));
    }
    t.push(TensorOut::f32(
        &format!("blocks.{TC_BLOCK}.ln2.hook_normalized"),
        &[n, d],
        &rows.ln2,
    ));
    t.push(TensorOut::f32(
        &format!("blocks.{}.hook_resid_post", BLOCKS - 1),
        &[n, d],
        &rows.resid,
    ));
    t.push(TensorOut::i32("tokens", &[n], &rows.tokens));
    let meta = HashMap::from([(
        "format".to_string(),
        "sae-wgpu component cache v1 (synthetic)".to_string(),
    )]);
    write_safetensors(&dir.join("components_0000.safetensors"), &t, Some(meta))
}

fn write_model(
    dir: &Path,
    toy: &Toy,
    c: &ComponentsConfig,
    rng: &mut ChaCha8Rng,
) -> anyhow::Result<()> {
    let (d, width, d_ff) = (c.d, HEADS * toy.d_head, 2 * c.d);
    let mut t = vec![
        TensorOut::f32(
            "model.embed_tokens.weight",
            &[VOCAB, d],
            &normal(rng, VOCAB * d, 1.0),
        ),
        TensorOut::f32("model.norm.weight", &[d], &vec![1.0; d]),
    ];
    for l in 0..BLOCKS {
        t.push(TensorOut::f32(
            &format!("model.layers.{l}.self_attn.o_proj.weight"),
            &[d, width],
            &toy.o_proj[l],
        ));
        t.push(TensorOut::f32(
            &format!("model.layers.{l}.mlp.down_proj.weight"),
            &[d, d_ff],
            &normal(rng, d * d_ff, 0.1),
        ));
    }
    write_safetensors(&dir.join("writers.safetensors"), &t, None)?;
    let config = json!({
        "hidden_size": d, "vocab_size": VOCAB, "num_attention_heads": HEADS,
        "head_dim": toy.d_head, "intermediate_size": d_ff, "num_hidden_layers": BLOCKS,
        "model_type": "llama",
    });
    write_json_atomic(&dir.join("config.json"), &config)
}

/// Writes `out/cache/` (components_0000.safetensors, writers.safetensors, config.json),
/// `out/sae/`, `out/transcoder/` (sparsify layout) and `out/truth.json`.
pub fn write_components(c: &ComponentsConfig, out: &Path) -> anyhow::Result<()> {
    anyhow::ensure!(
        c.d >= HEADS && c.d.is_multiple_of(HEADS),
        "--d-in must be a multiple of {HEADS} (the toy model's heads)"
    );
    anyhow::ensure!(
        c.d_sae >= 4 * GROUP,
        "--n-features must be at least {} (two planted groups and others)",
        4 * GROUP
    );
    anyhow::ensure!(
        c.d_tc > GROUP,
        "the transcoder needs more than {GROUP} features"
    );
    let mut rng = ChaCha8Rng::seed_from_u64(c.seed ^ 0xc0_4e47);
    let toy = build_toy(c, &mut rng);
    let tc = transcoder(&toy, c);
    let rows = make_rows(&toy, &tc, c, &mut rng);
    let cache = out.join("cache");
    std::fs::create_dir_all(&cache)
        .with_context(|| format!("{}: cannot create", cache.display()))?;
    write_cache(&cache, &rows, c, toy.d_head)?;
    write_model(&cache, &toy, c, &mut rng)?;
    save_sparsify(&out.join("sae"), &sae(&toy, c))?;
    save_sparsify(&out.join("transcoder"), &tc)?;
    let truth = json!({
        "planted_group": (0..GROUP).collect::<Vec<_>>(),
        "planted_writer": format!("blocks.{TC_BLOCK}.hook_mlp_out"),
        "planted_upstream": {"hook": format!("blocks.{TC_BLOCK}.hook_mlp_out"), "features": (0..GROUP).collect::<Vec<_>>()},
        "head_group": (GROUP..2 * GROUP).collect::<Vec<_>>(),
        "planted_head": format!("L{}H{}", HEAD.0, HEAD.1),
        "planted_head_block": format!("blocks.{}.hook_attn_out", HEAD.0),
        "others": "every other latent is written on each row where it fires by a component drawn afresh (the embedding, a block's attention through all its heads, or a block's MLP)",
    });
    write_json_atomic(&out.join("truth.json"), &truth)
}
