//! The scan of the shards that the categories are studied on: every feature's fire count (per
//! token family too), and for each studied category a uniform sample of the rows where its
//! members fire, as coordinates of their reconstruction in the category's basis.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::families::TokenFamilies;
use super::structure::CategorySamples;
use crate::analysis::scan::{Consumer, Scales, Scan, Scanned};
use crate::data::{BatchStream, Shard, StreamConfig};
use crate::sae::pass::ForwardPass;

/// What one streaming pass gathers: every feature's fire count and the categories' samples.
pub struct Gathered {
    pub rows: u64,
    pub fire_count: Vec<u64>,
    /// With token families: [families, d_sae] fires on each family's tokens.
    pub family_fires: Vec<u64>,
    pub categories: Vec<CategorySamples>,
    /// Token ids seen in the shards (for checking a tokenizer covers them), if any.
    pub max_token: Option<i32>,
}

/// How many reconstructions each category keeps, and the reservoir's seed.
#[derive(Clone, Copy, Debug)]
pub struct Sampling {
    pub per_category: usize,
    pub seed: u64,
}

/// Streams `shards` through the scan's SAE, keeping up to `sampling.per_category`
/// reconstructions per category (reservoir sampling, seeded) for each of `categories`, and
/// counting every feature's fires (per token family too, when given).
pub fn gather(
    scan: &Scan<'_, '_>,
    shards: Arc<Vec<Shard>>,
    categories: Vec<CategorySamples>,
    sampling: Sampling,
    families: Option<&TokenFamilies>,
    on_rows: impl FnMut(u64),
) -> anyhow::Result<Gathered> {
    let mut gatherer = Gatherer::new(scan.pass.sae.d_sae, categories, sampling, families);
    let stream = BatchStream::start(shards, StreamConfig::sequential(scan.pass.capacity()))?;
    let rows = scan.run(stream, Scales::NONE, &mut [&mut gatherer], on_rows)?;
    Ok(Gathered {
        rows,
        fire_count: gatherer.fire_count,
        family_fires: gatherer.family_fires,
        categories: gatherer.categories,
        max_token: gatherer.max_token,
    })
}

/// What [`gather`] keeps while it streams.
struct Gatherer<'a> {
    categories: Vec<CategorySamples>,
    sampling: Sampling,
    families: Option<&'a TokenFamilies>,
    /// feature → (category, member slot); a feature is in at most one category.
    slot_of: HashMap<usize, (usize, usize)>,
    fire_count: Vec<u64>,
    family_fires: Vec<u64>,
    rng: ChaCha8Rng,
    max_token: Option<i32>,
    /// The members that fired in the current row, by category (in category order: the
    /// reservoirs draw from one generator, so the order decides the samples).
    fired: BTreeMap<usize, Vec<(usize, f32)>>,
}

impl<'a> Gatherer<'a> {
    fn new(
        d_sae: usize,
        categories: Vec<CategorySamples>,
        sampling: Sampling,
        families: Option<&'a TokenFamilies>,
    ) -> Self {
        let mut slot_of: HashMap<usize, (usize, usize)> = HashMap::new();
        for (c, cat) in categories.iter().enumerate() {
            for (s, &f) in cat.members.iter().enumerate() {
                slot_of.insert(f, (c, s));
            }
        }
        Gatherer {
            categories,
            sampling,
            families,
            slot_of,
            fire_count: vec![0u64; d_sae],
            family_fires: vec![0u64; families.map_or(0, |f| f.names.len()) * d_sae],
            rng: ChaCha8Rng::seed_from_u64(sampling.seed),
            max_token: None,
            fired: BTreeMap::new(),
        }
    }

    /// One row's kept entries: fire counts, then each category that fired samples it.
    fn row(&mut self, token: i32, idx: &[u32], val: &[f32]) {
        let d_sae = self.fire_count.len();
        if token >= 0 {
            self.max_token = Some(self.max_token.map_or(token, |t| t.max(token)));
        }
        self.fired.clear();
        let no_families = Vec::new();
        let token_families = self
            .families
            .and_then(|f| f.of_token.get(&token))
            .unwrap_or(&no_families);
        for (&i, &v) in idx.iter().zip(val) {
            if v <= 0.0 {
                continue;
            }
            let feature = i as usize;
            self.fire_count[feature] += 1;
            for &f in token_families {
                self.family_fires[f * d_sae + feature] += 1;
            }
            if let Some(&(c, s)) = self.slot_of.get(&feature) {
                self.fired.entry(c).or_default().push((s, v));
            }
        }
        for (&c, members) in &self.fired {
            sample(
                &mut self.categories[c],
                members,
                token,
                self.sampling,
                &mut self.rng,
            );
        }
    }
}

/// Adds a row where `members` (slot, activation) of `cat` fired to its sums and, by reservoir
/// sampling, to its sample: row number t (1-based) replaces a kept one with odds n/t.
fn sample(
    cat: &mut CategorySamples,
    members: &[(usize, f32)],
    token: i32,
    sampling: Sampling,
    rng: &mut ChaCha8Rng,
) {
    let samples = sampling.per_category;
    cat.rows_fired += 1;
    for &(s, f) in members {
        cat.act_sum[s] += f64::from(f);
        cat.act_count[s] += 1;
    }
    let kept = cat.tokens.len();
    let slot = if kept < samples {
        Some(kept)
    } else {
        let pick = rng.random_range(0..cat.rows_fired);
        (pick < samples as u64).then_some(pick as usize)
    };
    if let Some(slot) = slot {
        let point = cat.project(members);
        if slot == kept {
            cat.coords.extend_from_slice(&point);
            cat.tokens.push(token);
        } else {
            cat.coords[slot * cat.rank..(slot + 1) * cat.rank].copy_from_slice(&point);
            cat.tokens[slot] = token;
        }
    }
}

impl Consumer for Gatherer<'_> {
    fn consume(&mut self, pass: &ForwardPass<'_, '_>, batch: &Scanned<'_>) -> anyhow::Result<()> {
        let (idx, val) = pass.codes(batch.rows)?;
        let k = pass.sae.k;
        for r in 0..batch.rows {
            let token = batch.batch.tokens.get(r).copied().unwrap_or(-1);
            let entries = r * k..(r + 1) * k;
            self.row(token, &idx[entries.clone()], &val[entries]);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two categories firing on the same rows, reservoirs of one sample: the samples depend
    /// on the order the categories draw in, which must not vary between runs.
    #[test]
    fn samples_do_not_depend_on_hash_order() {
        let w_dec: Vec<f32> = (0..4 * 2).map(|i| ((i * 7 % 5) as f32) - 2.0).collect();
        let sampling = Sampling {
            per_category: 1,
            seed: 3,
        };
        let run = || {
            let cats = vec![
                CategorySamples::new(&[0, 1], &w_dec, 2),
                CategorySamples::new(&[2, 3], &w_dec, 2),
            ];
            let mut g = Gatherer::new(4, cats, sampling, None);
            for token in 0..64 {
                g.row(token, &[0, 2], &[1.0, 1.0]);
            }
            g.categories
                .iter()
                .map(|c| c.tokens.clone())
                .collect::<Vec<_>>()
        };
        let first = run();
        for _ in 0..32 {
            assert_eq!(run(), first);
        }
    }
}
