//! Which writers a group of latents shares beyond chance. For a group G and a writer c,
//! `share` = Σ_{i∈G} Σ_{rows where i fires} term_c / Σ_{i∈G} Σ_{same rows} h_i. The null is
//! random groups of |G| live latents, each drawn from the decile of firing counts of one
//! member (none of G), so that frequent and rare latents are compared with their like.
//!
//! Significance is family-wise by the max statistic (Westfall–Young): a writer's p is the
//! share of draws whose largest standardised share over the whole family reaches the writer's
//! z. Components, heads, each transcoded hook's parts and its upstream features, and the
//! mechanism similarity are families of their own; `significant` is p < α / families, so a
//! random group is flagged anywhere at most about α of the time. Upstream features are
//! compared by their raw share: a feature that feeds only this group has no spread in the
//! null to standardise by.

use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::totals::{Totals, HOOK_PARTS};

/// Upstream features listed per hook (the largest shares).
pub const TOP_UPSTREAM: usize = 20;

#[derive(Clone, Copy, Debug)]
pub struct NullConfig {
    pub draws: usize,
    pub seed: u64,
    /// The family-wise level before the correction over families.
    pub alpha: f64,
}

/// A group to attribute: its id (a category's, or `members-N`) and latents.
#[derive(Clone, Debug)]
pub struct GroupRequest {
    pub id: String,
    pub members: Vec<usize>,
}

/// One writer of one group.
#[derive(Clone, Debug, Serialize)]
pub struct Writer {
    pub name: String,
    pub share: f64,
    pub null_mean: f64,
    /// `None` (null in JSON) where the null has no spread.
    pub z: Option<f64>,
    pub p: f64,
    pub significant: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct UpstreamWriter {
    pub hook: String,
    pub feature: u32,
    pub share: f64,
    pub null_mean: f64,
    pub z: Option<f64>,
    pub p: f64,
    pub significant: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct HookPart {
    pub hook: String,
    #[serde(flatten)]
    pub writer: Writer,
}

#[derive(Clone, Debug, Serialize)]
pub struct Similarity {
    pub value: f64,
    pub null_mean: f64,
    pub z: Option<f64>,
    pub p: f64,
    pub significant: bool,
}

/// Everything attribution.json says of one group.
#[derive(Clone, Debug, Serialize)]
pub struct GroupReport {
    pub id: String,
    pub members: Vec<usize>,
    /// Members that fire on the data (the others add nothing and draw no null partner).
    pub live_members: usize,
    /// (row, member) pairs where a member fires.
    pub rows: u64,
    /// The level each p is compared with: α over the group's families.
    pub alpha: f64,
    pub components: Vec<Writer>,
    pub heads: Vec<Writer>,
    pub upstream: Vec<UpstreamWriter>,
    pub hook_parts: Vec<HookPart>,
    pub mechanism_similarity: Similarity,
    /// Per live member: its terms over the components divided by its pre-activation sum.
    #[serde(skip)]
    pub member_profiles: Vec<(usize, Vec<f64>)>,
}

impl GroupReport {
    /// Its significant components and heads.
    pub fn significant_writers(&self) -> impl Iterator<Item = &Writer> {
        self.components
            .iter()
            .chain(&self.heads)
            .filter(|w| w.significant)
    }

    /// Its significant upstream features.
    pub fn significant_upstream(&self) -> impl Iterator<Item = &UpstreamWriter> {
        self.upstream.iter().filter(|u| u.significant)
    }
}

/// The latents a null draw may take, and per-latent data shared by every group.
pub struct Universe<'a> {
    totals: &'a Totals,
    /// Per latent: its decile of firing count among live latents (None: never fires).
    decile: Vec<Option<usize>>,
    by_decile: Vec<Vec<usize>>,
    /// The mean over live latents of their component profiles (bias left out).
    mean_profile: Vec<f64>,
    upstream_width: Vec<usize>,
}

fn profile(totals: &Totals, i: usize) -> Vec<f64> {
    let cols = totals.components.len();
    let pre = totals.sum_pre[i];
    (0..cols - 1)
        .map(|c| match pre.abs() > 0.0 {
            true => totals.contribution[i * cols + c] / pre,
            false => 0.0,
        })
        .collect()
}

impl<'a> Universe<'a> {
    pub fn new(totals: &'a Totals) -> Self {
        let mut live: Vec<usize> = (0..totals.d_sae)
            .filter(|&i| totals.fire_count[i] > 0)
            .collect();
        live.sort_by_key(|&i| (totals.fire_count[i], i));
        let mut decile = vec![None; totals.d_sae];
        let mut by_decile = vec![Vec::new(); 10];
        for (rank, &i) in live.iter().enumerate() {
            let d = rank * 10 / live.len();
            decile[i] = Some(d);
            by_decile[d].push(i);
        }
        let cols = totals.components.len() - 1;
        let mut mean_profile = vec![0.0; cols];
        for &i in &live {
            for (m, v) in mean_profile.iter_mut().zip(profile(totals, i)) {
                *m += v / live.len() as f64;
            }
        }
        // The dense scratch of a hook's upstream shares: one slot per feature id seen.
        let upstream_width = totals
            .hooks
            .iter()
            .map(|h| {
                let ids = h.upstream.iter().flat_map(|m| m.keys());
                ids.map(|&j| j as usize + 1).max().unwrap_or(0)
            })
            .collect();
        Universe {
            totals,
            decile,
            by_decile,
            mean_profile,
            upstream_width,
        }
    }

    pub fn is_live(&self, i: usize) -> bool {
        self.decile.get(i).is_some_and(Option::is_some)
    }

    /// Live latents matched to `members`' deciles, none of `exclude` and no repeats.
    pub fn draw(&self, members: &[usize], exclude: &[usize], rng: &mut ChaCha8Rng) -> Vec<usize> {
        let mut out: Vec<usize> = Vec::with_capacity(members.len());
        for &m in members {
            let Some(d) = self.decile[m] else { continue };
            let pool = &self.by_decile[d];
            let pick = (0..64)
                .filter_map(|_| pool.choose(rng).copied())
                .find(|c| !exclude.contains(c) && !out.contains(c));
            if let Some(c) = pick {
                out.push(c);
            }
        }
        out
    }
}

/// The statistics of one set of latents.
struct Stats {
    components: Vec<f64>,
    heads: Vec<f64>,
    /// Per hook: the four parts' shares.
    parts: Vec<Vec<f64>>,
    similarity: f64,
}

fn shares(sums: &[f64], cols: usize, set: &[usize], den: f64) -> Vec<f64> {
    (0..cols)
        .map(|c| set.iter().map(|&i| sums[i * cols + c]).sum::<f64>() / den)
        .collect()
}

impl Universe<'_> {
    fn pre_sum(&self, set: &[usize]) -> f64 {
        let s: f64 = set.iter().map(|&i| self.totals.sum_pre[i]).sum();
        if s.abs() > 0.0 {
            s
        } else {
            f64::MIN_POSITIVE
        }
    }

    fn stats(&self, set: &[usize]) -> Stats {
        let t = self.totals;
        let den = self.pre_sum(set);
        Stats {
            components: shares(&t.contribution, t.components.len(), set, den),
            heads: shares(&t.head_contribution, t.heads.len(), set, den),
            parts: t
                .hooks
                .iter()
                .map(|h| shares(&h.parts, HOOK_PARTS.len(), set, den))
                .collect(),
            similarity: self.similarity(set),
        }
    }

    /// Mean pairwise cosine of the members' centred profiles.
    fn similarity(&self, set: &[usize]) -> f64 {
        let centred: Vec<Vec<f64>> = set
            .iter()
            .map(|&i| {
                profile(self.totals, i)
                    .iter()
                    .zip(&self.mean_profile)
                    .map(|(v, m)| v - m)
                    .collect()
            })
            .collect();
        let (mut sum, mut pairs) = (0.0, 0usize);
        for a in 0..centred.len() {
            for b in a + 1..centred.len() {
                sum += cosine(&centred[a], &centred[b]);
                pairs += 1;
            }
        }
        if pairs == 0 {
            0.0
        } else {
            sum / pairs as f64
        }
    }

    /// Upstream shares of `set` for hook `h` into a dense scratch (cleared by the caller
    /// through the returned touched list).
    fn upstream_into(&self, h: usize, set: &[usize], den: f64, dense: &mut [f64]) -> Vec<u32> {
        let mut touched = Vec::new();
        for &i in set {
            for (&j, &t) in &self.totals.hooks[h].upstream[i] {
                if dense[j as usize] == 0.0 {
                    touched.push(j);
                }
                dense[j as usize] += t / den;
                if dense[j as usize] == 0.0 {
                    dense[j as usize] = f64::MIN_POSITIVE;
                }
            }
        }
        touched
    }
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f64 = a.iter().map(|x| x * x).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|x| x * x).sum::<f64>().sqrt();
    if na > 0.0 && nb > 0.0 {
        dot / (na * nb)
    } else {
        0.0
    }
}

/// Mean and standard deviation of each column of `draws` ([draws][cols]).
fn moments(draws: &[Vec<f64>], cols: usize) -> (Vec<f64>, Vec<f64>) {
    let n = draws.len().max(1) as f64;
    let mean: Vec<f64> = (0..cols)
        .map(|c| draws.iter().map(|d| d[c]).sum::<f64>() / n)
        .collect();
    let sd = (0..cols)
        .map(|c| (draws.iter().map(|d| (d[c] - mean[c]).powi(2)).sum::<f64>() / n).sqrt())
        .collect();
    (mean, sd)
}

fn standardise(v: f64, mean: f64, sd: f64) -> f64 {
    if sd > 0.0 {
        (v - mean) / sd
    } else if v > mean {
        f64::INFINITY
    } else if v < mean {
        f64::NEG_INFINITY
    } else {
        0.0
    }
}

/// p by the max statistic: (1 + draws whose largest statistic reaches `observed`) / (1 + draws).
fn max_stat_p(observed: f64, draw_maxima: &[f64]) -> f64 {
    let reach = draw_maxima.iter().filter(|&&m| m >= observed).count();
    (1 + reach) as f64 / (1 + draw_maxima.len()) as f64
}

/// One family of writers tested by standardised shares.
fn family(names: &[String], observed: &[f64], draws: &[Vec<f64>], alpha: f64) -> Vec<Writer> {
    let (mean, sd) = moments(draws, names.len());
    let maxima: Vec<f64> = draws
        .iter()
        .map(|d| {
            (0..names.len())
                .map(|c| standardise(d[c], mean[c], sd[c]))
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect();
    names
        .iter()
        .enumerate()
        .map(|(c, name)| {
            let z = standardise(observed[c], mean[c], sd[c]);
            let p = max_stat_p(z, &maxima);
            Writer {
                name: name.clone(),
                share: observed[c],
                null_mean: mean[c],
                z: z.is_finite().then_some(z),
                p,
                significant: p < alpha,
            }
        })
        .collect()
}

/// How many families a group's tests form (the correction's divisor).
fn family_count(totals: &Totals) -> usize {
    families(!totals.heads.is_empty(), totals.hooks.len())
}

/// Components, heads (if any), each hook's parts and upstream features, and the similarity.
pub fn families(heads: bool, hooks: usize) -> usize {
    1 + usize::from(heads) + 2 * hooks + 1
}

/// Fails when no p of `null` can fall below the corrected level: the smallest p a null of D
/// draws gives is 1/(D + 1).
pub fn check_resolution(null: NullConfig, families: usize) -> Result<(), String> {
    let level = null.alpha / families as f64;
    let smallest = 1.0 / (null.draws as f64 + 1.0);
    if smallest >= level {
        let needed = (1.0 / level).ceil() as usize;
        return Err(format!(
            "--null-draws {}: the smallest p it gives, {smallest:.4}, cannot fall below the level {level:.4} (alpha {} over {families} families); use at least {needed}",
            null.draws, null.alpha
        ));
    }
    Ok(())
}

/// Attributes one group against its null.
pub fn attribute_group(
    universe: &Universe<'_>,
    group: &GroupRequest,
    null: NullConfig,
) -> GroupReport {
    let t = universe.totals;
    let live: Vec<usize> = group
        .members
        .iter()
        .copied()
        .filter(|&i| universe.is_live(i))
        .collect();
    let alpha = null.alpha / family_count(t) as f64;
    let mut rng = ChaCha8Rng::seed_from_u64(null.seed ^ seed_of(&group.members));
    let draws: Vec<Vec<usize>> = (0..null.draws)
        .map(|_| universe.draw(&live, &group.members, &mut rng))
        .collect();
    let observed = universe.stats(&live);
    let null_stats: Vec<Stats> = draws.iter().map(|d| universe.stats(d)).collect();
    let pick = |f: &dyn Fn(&Stats) -> Vec<f64>| null_stats.iter().map(f).collect::<Vec<_>>();
    let components = family(
        &t.components,
        &observed.components,
        &pick(&|s| s.components.clone()),
        alpha,
    );
    let heads = family(
        &t.heads,
        &observed.heads,
        &pick(&|s| s.heads.clone()),
        alpha,
    );
    let part_names: Vec<String> = HOOK_PARTS.iter().map(|s| s.to_string()).collect();
    let hook_parts = t
        .hooks
        .iter()
        .enumerate()
        .flat_map(|(h, hook)| {
            family(
                &part_names,
                &observed.parts[h],
                &pick(&|s| s.parts[h].clone()),
                alpha,
            )
            .into_iter()
            .map(|writer| HookPart {
                hook: hook.hook.clone(),
                writer,
            })
            .collect::<Vec<_>>()
        })
        .collect();
    let upstream = (0..t.hooks.len())
        .flat_map(|h| upstream_family(universe, h, &live, &draws, alpha))
        .collect();
    let sims: Vec<f64> = null_stats.iter().map(|s| s.similarity).collect();
    GroupReport {
        id: group.id.clone(),
        members: group.members.clone(),
        live_members: live.len(),
        rows: live.iter().map(|&i| t.fire_count[i]).sum(),
        alpha,
        components,
        heads,
        upstream,
        hook_parts,
        mechanism_similarity: similarity_test(observed.similarity, &sims, alpha, live.len()),
        member_profiles: live.iter().map(|&i| (i, profile(t, i))).collect(),
    }
}

/// The mechanism similarity against its null (meaningful from 2 live members).
fn similarity_test(value: f64, null: &[f64], alpha: f64, members: usize) -> Similarity {
    let column: Vec<Vec<f64>> = null.iter().map(|&v| vec![v]).collect();
    let (mean, sd) = moments(&column, 1);
    let p = max_stat_p(value, null);
    let z = standardise(value, mean[0], sd[0]);
    Similarity {
        value,
        null_mean: mean[0],
        z: z.is_finite().then_some(z),
        p,
        significant: members >= 2 && p < alpha,
    }
}

/// A stable seed per member list, so a group's null does not depend on which groups ran
/// before it.
fn seed_of(members: &[usize]) -> u64 {
    members.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &m| {
        (h ^ m as u64).wrapping_mul(0x100_0000_01b3)
    })
}

/// The upstream features of hook `h`: the largest shares, tested by the max of raw shares.
fn upstream_family(
    universe: &Universe<'_>,
    h: usize,
    live: &[usize],
    draws: &[Vec<usize>],
    alpha: f64,
) -> Vec<UpstreamWriter> {
    let mut dense = vec![0.0f64; universe.upstream_width[h]];
    let den = universe.pre_sum(live);
    let touched = universe.upstream_into(h, live, den, &mut dense);
    let mut top: Vec<(u32, f64)> = touched.iter().map(|&j| (j, dense[j as usize])).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    top.truncate(TOP_UPSTREAM);
    touched.iter().for_each(|&j| dense[j as usize] = 0.0);
    let mut maxima = Vec::with_capacity(draws.len());
    let mut null_values = vec![Vec::with_capacity(draws.len()); top.len()];
    for d in draws {
        let den = universe.pre_sum(d);
        let touched = universe.upstream_into(h, d, den, &mut dense);
        maxima.push(
            touched
                .iter()
                .map(|&j| dense[j as usize])
                .fold(0.0, f64::max),
        );
        for (slot, &(j, _)) in top.iter().enumerate() {
            null_values[slot].push(dense[j as usize]);
        }
        touched.iter().for_each(|&j| dense[j as usize] = 0.0);
    }
    let hook = &universe.totals.hooks[h].hook;
    top.iter()
        .zip(&null_values)
        .map(|(&(j, share), nulls)| {
            let n = nulls.len().max(1) as f64;
            let mean = nulls.iter().sum::<f64>() / n;
            let sd = (nulls.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            let z = standardise(share, mean, sd);
            let p = max_stat_p(share, &maxima);
            UpstreamWriter {
                hook: hook.clone(),
                feature: j,
                share,
                null_mean: mean,
                z: z.is_finite().then_some(z),
                p,
                significant: p < alpha,
            }
        })
        .collect()
}

/// Random matched groups for calibration: `count` groups of `size` live latents, each member
/// from a decile chosen uniformly.
pub fn random_groups(
    universe: &Universe<'_>,
    count: usize,
    size: usize,
    seed: u64,
) -> Vec<GroupRequest> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x7a11_b4a7);
    let size = size.min(universe.by_decile.iter().map(Vec::len).sum());
    (0..count)
        .map(|g| {
            let mut members: Vec<usize> = Vec::new();
            while members.len() < size {
                let pool = &universe.by_decile[rng.random_range(0..universe.by_decile.len())];
                if let Some(&c) = pool.choose(&mut rng) {
                    if !members.contains(&c) {
                        members.push(c);
                    }
                }
            }
            GroupRequest {
                id: format!("random-{g}"),
                members,
            }
        })
        .collect()
}
