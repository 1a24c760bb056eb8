//! The weights behind a category (`--model writers.safetensors`, Hugging Face Llama tensor
//! names, `config.json` beside it): with Q an orthonormal basis of the category's subspace,
//! the logit lens Qᵀ·W_U with the final RMSNorm's gain folded in, and how much of each
//! attention head's output matrix and each MLP neuron's output vector lies in Q, against the
//! random baseline √(dim Q / d_model).

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use safetensors::SafeTensors;
use serde::Serialize;

use crate::sae::formats::read_tensor_f32;

/// Writers listed per kind (heads, neurons).
pub const TOP_WRITERS: usize = 10;
/// Tokens listed per logit-lens axis and sign.
pub const LENS_TOKENS: usize = 10;

/// The residual-writing weights of the blocks below the SAE's layer, and the unembedding.
pub struct ModelWeights {
    pub path: PathBuf,
    pub d_model: usize,
    pub vocab: usize,
    pub n_heads: usize,
    pub head_dim: usize,
    pub d_ff: usize,
    /// W_U [vocab, d_model] (lm_head, or the tied embedding).
    pub unembed: Vec<f32>,
    /// The final RMSNorm's gain [d_model].
    pub norm: Vec<f32>,
    /// (block index, o_proj [d_model, heads·head_dim], down_proj [d_model, d_ff]).
    pub blocks: Vec<(usize, Vec<f32>, Vec<f32>)>,
}

fn config_usize(config: &serde_json::Value, key: &str, path: &Path) -> anyhow::Result<usize> {
    config[key]
        .as_u64()
        .map(|v| v as usize)
        .ok_or_else(|| anyhow!("{}: missing integer '{key}'", path.display()))
}

/// Loads `path` (safetensors) with `config.json` from its folder; every tensor's presence and
/// shape is checked, and a wrong one is named.
pub fn load_model(path: &Path) -> anyhow::Result<ModelWeights> {
    let config_path = path.with_file_name("config.json");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).with_context(|| {
            format!(
                "{}: cannot read (the model's config.json goes beside --model)",
                config_path.display()
            )
        })?)
        .with_context(|| format!("{}: not valid JSON", config_path.display()))?;
    let d_model = config_usize(&config, "hidden_size", &config_path)?;
    let vocab = config_usize(&config, "vocab_size", &config_path)?;
    let n_heads = config_usize(&config, "num_attention_heads", &config_path)?;
    let head_dim = match config["head_dim"].as_u64() {
        Some(h) => h as usize,
        None => d_model / n_heads.max(1),
    };
    let d_ff = config_usize(&config, "intermediate_size", &config_path)?;
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow!("{}: not a valid safetensors file: {e}", path.display()))?;
    let names: Vec<String> = st.names().into_iter().map(String::from).collect();
    let unembed_name = if names.iter().any(|n| n == "lm_head.weight") {
        "lm_head.weight"
    } else {
        "model.embed_tokens.weight"
    };
    let unembed = read_tensor_f32(&st, unembed_name, &[vocab, d_model], path)?;
    let norm = read_tensor_f32(&st, "model.norm.weight", &[d_model], path)?;
    let mut indices: Vec<usize> = names
        .iter()
        .filter_map(|n| {
            n.strip_prefix("model.layers.")?
                .split('.')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    indices.sort_unstable();
    indices.dedup();
    if indices.is_empty() {
        bail!(
            "{}: no block weights (model.layers.N.self_attn.o_proj.weight, model.layers.N.mlp.down_proj.weight)",
            path.display()
        );
    }
    let mut blocks = Vec::new();
    for l in indices {
        let o = read_tensor_f32(
            &st,
            &format!("model.layers.{l}.self_attn.o_proj.weight"),
            &[d_model, n_heads * head_dim],
            path,
        )?;
        let down = read_tensor_f32(
            &st,
            &format!("model.layers.{l}.mlp.down_proj.weight"),
            &[d_model, d_ff],
            path,
        )?;
        blocks.push((l, o, down));
    }
    Ok(ModelWeights {
        path: path.to_path_buf(),
        d_model,
        vocab,
        n_heads,
        head_dim,
        d_ff,
        unembed,
        norm,
        blocks,
    })
}

/// Tokens an axis promotes and suppresses through the unembedding.
#[derive(Clone, Debug, Serialize)]
pub struct LensAxis {
    pub axis: usize,
    pub promoted: Vec<(u32, f32)>,
    pub suppressed: Vec<(u32, f32)>,
}

/// One attention head or MLP neuron and the fraction of its output in the subspace.
#[derive(Clone, Debug, Serialize)]
pub struct Writer {
    pub block: usize,
    /// "head" or "neuron".
    pub kind: &'static str,
    pub index: usize,
    pub fraction: f64,
    /// fraction / √(dim Q / d_model).
    pub over_baseline: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Writers {
    pub subspace_dim: usize,
    /// √(dim Q / d_model): the fraction a random direction would show.
    pub baseline: f64,
    pub heads: Vec<Writer>,
    pub neurons: Vec<Writer>,
    pub logit_lens: Vec<LensAxis>,
}

/// The writers of the subspace with orthonormal rows `basis` ([dim, d_model]), and the logit
/// lens of `axes` (unit directions in d_model).
pub fn writers(model: &ModelWeights, basis: &[f64], axes: &[Vec<f64>]) -> Writers {
    let d = model.d_model;
    let dim = basis.len() / d;
    let baseline = (dim as f64 / d as f64).sqrt();
    // Fraction of a d_model vector (strided column of a [d, cols] matrix) in span(Q).
    let in_span = |m: &[f32], cols: usize, col: usize| -> (f64, f64) {
        let mut inside = 0.0;
        for q in basis.chunks_exact(d) {
            let dot: f64 = (0..d).map(|r| q[r] * f64::from(m[r * cols + col])).sum();
            inside += dot * dot;
        }
        let total: f64 = (0..d).map(|r| f64::from(m[r * cols + col]).powi(2)).sum();
        (inside, total)
    };
    let mut heads = Vec::new();
    let mut neurons = Vec::new();
    for (block, o, down) in &model.blocks {
        let cols = model.n_heads * model.head_dim;
        for h in 0..model.n_heads {
            let (inside, total) = (h * model.head_dim..(h + 1) * model.head_dim)
                .map(|c| in_span(o, cols, c))
                .fold((0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
            heads.push(writer(*block, "head", h, inside, total, baseline));
        }
        for n in 0..model.d_ff {
            let (inside, total) = in_span(down, model.d_ff, n);
            neurons.push(writer(*block, "neuron", n, inside, total, baseline));
        }
    }
    for list in [&mut heads, &mut neurons] {
        list.sort_by(|a, b| b.fraction.total_cmp(&a.fraction));
        list.truncate(TOP_WRITERS);
    }
    let logit_lens = axes
        .iter()
        .enumerate()
        .map(|(axis, a)| lens(model, a, axis))
        .collect();
    Writers {
        subspace_dim: dim,
        baseline,
        heads,
        neurons,
        logit_lens,
    }
}

fn writer(
    block: usize,
    kind: &'static str,
    index: usize,
    inside: f64,
    total: f64,
    baseline: f64,
) -> Writer {
    let fraction = if total > 0.0 {
        (inside / total).sqrt()
    } else {
        0.0
    };
    Writer {
        block,
        kind,
        index,
        fraction,
        over_baseline: if baseline > 0.0 {
            fraction / baseline
        } else {
            0.0
        },
    }
}

/// W_U (g ⊙ axis): the logits a unit step along `axis` adds, the final norm's gain folded in.
fn lens(model: &ModelWeights, axis: &[f64], index: usize) -> LensAxis {
    let d = model.d_model;
    let scaled: Vec<f64> = axis
        .iter()
        .zip(&model.norm)
        .map(|(a, g)| a * f64::from(*g))
        .collect();
    let mut scores: Vec<(u32, f32)> = model
        .unembed
        .chunks_exact(d)
        .enumerate()
        .map(|(t, row)| {
            let s: f64 = row
                .iter()
                .zip(&scaled)
                .map(|(w, a)| f64::from(*w) * a)
                .sum();
            (t as u32, s as f32)
        })
        .collect();
    scores.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let promoted = scores.iter().take(LENS_TOKENS).copied().collect();
    let suppressed = scores.iter().rev().take(LENS_TOKENS).copied().collect();
    LensAxis {
        axis: index,
        promoted,
        suppressed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_neuron_inside_the_subspace_has_fraction_one() {
        // d_model 4, Q = span(e0, e1); neuron 0 writes e0 + e1, neuron 1 writes e2 + e3 + e0.
        let model = ModelWeights {
            path: PathBuf::new(),
            d_model: 4,
            vocab: 3,
            n_heads: 1,
            head_dim: 1,
            d_ff: 2,
            unembed: vec![1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0],
            norm: vec![2.0; 4],
            blocks: vec![(
                0,
                vec![0.0, 0.0, 1.0, 0.0],
                vec![1.0, 1.0, 1.0, 0.0, 0.0, 1.0, 0.0, 1.0],
            )],
        };
        let basis = [1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0];
        let w = writers(&model, &basis, &[vec![0.0, 1.0, 0.0, 0.0]]);
        assert!((w.baseline - 0.5f64.sqrt()).abs() < 1e-12);
        assert_eq!((w.neurons[0].index, w.neurons[0].fraction), (0, 1.0));
        assert!((w.neurons[1].fraction - (1.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert_eq!(w.heads[0].fraction, 0.0);
        // Axis e1 with gain 2 promotes token 1 by 2.
        assert_eq!(w.logit_lens[0].promoted[0], (1, 2.0));
    }
}
