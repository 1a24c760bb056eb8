//! The categories on data: the top categories' (and the asked-for feature's) reconstructions
//! sampled in one scan of the shards, their structure and top tokens, every member's fire
//! count, the token families' counts; and the model weights that write each studied category.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::bail;

use super::category::{Category, TokenCount};
use super::config::{CategoriesConfig, CategoriesInputs};
use super::families::TokenFamilies;
use super::gather::{gather, Sampling};
use super::structure::{analyse, CategorySamples};
use super::writers::{writers, ModelWeights, Writers};
use crate::analysis::scan::Scan;
use crate::gpu::Gpu;
use crate::sae::forward::GpuSae;

/// What the scan of the shards found besides the categories' own fields.
pub struct Studied {
    pub rows_read: Option<u64>,
    /// With token families: the families, every feature's fire count and per family fires.
    pub family_counts: Option<(Vec<u64>, Vec<u64>)>,
}

/// The categories studied: the first `top` of ≥ 3 members, and the asked-for feature's.
pub fn studied(found: &[Category], config: &CategoriesConfig) -> Vec<usize> {
    (0..found.len())
        .filter(|&i| {
            (i < config.top && found[i].size >= 3)
                || config
                    .feature
                    .is_some_and(|f| found[i].members.contains(&f))
        })
        .collect()
}

/// Structure, tokens and writers of the studied categories; fire counts of every category.
pub fn study(
    gpu: &Gpu,
    inputs: &CategoriesInputs<'_>,
    config: &CategoriesConfig,
    sae: Option<&GpuSae>,
    found: &mut [Category],
    on_rows: &mut dyn FnMut(u64),
) -> anyhow::Result<Studied> {
    let studied = studied(found, config);
    // The members' decoder rows, d_out wide (d_in for an SAE).
    let (params, d_in) = (inputs.params, inputs.params.d_out());
    if inputs.families.is_some() && sae.is_none() {
        bail!("token families need shards: specific features are counted on data");
    }
    let Some(sae) = sae else {
        if let Some(model) = inputs.model {
            for &i in &studied {
                let cat = CategorySamples::new(&found[i].members, &params.w_dec, d_in);
                found[i].writers = Some(category_writers(model, &cat, &found[i]));
            }
        }
        return Ok(Studied {
            rows_read: None,
            family_counts: None,
        });
    };
    let scan = Scan::new(gpu, sae, config.batch_size, false)?;
    let samples: Vec<CategorySamples> = studied
        .iter()
        .map(|&i| CategorySamples::new(&found[i].members, &params.w_dec, d_in))
        .collect();
    let sampling = Sampling {
        per_category: config.samples,
        seed: config.seed,
    };
    let shards = Arc::clone(&inputs.shards);
    let gathered = gather(&scan, shards, samples, sampling, inputs.families, on_rows)?;
    if let (Some((vocab, _)), Some(max)) = (inputs.vocab, gathered.max_token) {
        if max as usize >= vocab {
            bail!("the shards hold token id {max} but the tokenizer's vocabulary has {vocab} ids");
        }
    }
    for (&i, cat) in studied.iter().zip(&gathered.categories) {
        describe(&mut found[i], cat, inputs, d_in);
    }
    for c in found.iter_mut() {
        c.fire_counts = Some(c.members.iter().map(|&m| gathered.fire_count[m]).collect());
    }
    let family_counts = match inputs.families {
        Some(_) if gathered.max_token.is_none() => {
            bail!("token families need shards with a `tokens` tensor: these have none")
        }
        Some(_) => Some((gathered.fire_count.clone(), gathered.family_fires)),
        None => None,
    };
    Ok(Studied {
        rows_read: Some(gathered.rows),
        family_counts,
    })
}

/// A studied category's structure on data, its most frequent tokens and its writers.
fn describe(c: &mut Category, cat: &CategorySamples, inputs: &CategoriesInputs<'_>, d_in: usize) {
    c.structure = analyse(cat, d_in);
    let mut counts: HashMap<i32, usize> = HashMap::new();
    for &t in cat.tokens.iter().filter(|&&t| t >= 0) {
        *counts.entry(t).or_default() += 1;
    }
    let mut counts: Vec<(i32, usize)> = counts.into_iter().collect();
    counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    c.top_tokens = counts
        .into_iter()
        .take(20)
        .map(|(token, count)| TokenCount {
            token,
            count,
            text: inputs.vocab.map(|(_, text)| text(token)),
        })
        .collect();
    if let Some(model) = inputs.model {
        c.writers = Some(category_writers(model, cat, c));
    }
}

fn category_writers(model: &ModelWeights, cat: &CategorySamples, c: &Category) -> Writers {
    // Logit-lens axes: the reconstructions' principal axes when measured, else the basis.
    let axes: Vec<Vec<f64>> = match &c.structure {
        Some(s) => s.axes.clone(),
        None => cat
            .basis
            .chunks_exact(model.d_model)
            .take(5)
            .map(|r| r.to_vec())
            .collect(),
    };
    writers(model, &cat.basis, &axes)
}

/// The families' scores against the categories, from the scan's counts.
pub fn score(
    families: Option<&TokenFamilies>,
    counts: Option<(Vec<u64>, Vec<u64>)>,
    found: &[Category],
) -> Vec<super::families::FamilyScore> {
    match (families, counts) {
        (Some(f), Some((fires, family_fires))) => {
            super::families::score_families(f, &fires, &family_fires, found)
        }
        _ => Vec::new(),
    }
}
