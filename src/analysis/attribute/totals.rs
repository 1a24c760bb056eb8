//! What the attribution pass adds up per latent, in f64: how often it fires, its summed
//! pre-activation, and each component's, head's and upstream feature's summed term, with the
//! gaps that show the parts are complete.

use std::collections::HashMap;
use std::hash::Hash;
use std::ops::AddAssign;

use serde::Serialize;

use super::pass::{row_factor, AttributionSetup, Terms, TranscoderRows};
use crate::data::Batch;

/// The name of the constant term: b_enc − b_dec·W_enc (the last component column).
pub const BIAS: &str = "bias";
/// The four parts a transcoder splits its MLP's term into.
pub const HOOK_PARTS: [&str; 4] = ["features", "skip", "bias", "error"];

/// Gaps between a whole and the sum of its parts over (row, latent) pairs.
#[derive(Clone, Debug, Default)]
pub struct Gaps {
    pub pairs: u64,
    pub max_abs: f64,
    pub sum_sq: f64,
    /// Σ h² over the same pairs (the scale the gaps are relative to).
    pub sum_h_sq: f64,
}

impl Gaps {
    /// Adds another part's gaps.
    pub fn merge(&mut self, other: &Gaps) {
        self.pairs += other.pairs;
        self.max_abs = self.max_abs.max(other.max_abs);
        self.sum_sq += other.sum_sq;
        self.sum_h_sq += other.sum_h_sq;
    }

    fn add(&mut self, gap: f64, h: f64) {
        self.pairs += 1;
        self.max_abs = self.max_abs.max(gap.abs());
        self.sum_sq += gap * gap;
        self.sum_h_sq += h * h;
    }

    fn rms_h(&self) -> f64 {
        (self.sum_h_sq / self.pairs.max(1) as f64).sqrt()
    }

    /// max |gap| / RMS h.
    pub fn max_rel_error(&self) -> f64 {
        self.max_abs / self.rms_h().max(f64::MIN_POSITIVE)
    }

    /// RMS gap / RMS h.
    pub fn rms_rel_error(&self) -> f64 {
        (self.sum_sq / self.sum_h_sq.max(f64::MIN_POSITIVE)).sqrt()
    }
}

/// The completeness figures of attribution.json.
#[derive(Clone, Debug, Serialize)]
pub struct Completeness {
    pub rows: u64,
    pub pairs: u64,
    pub max_rel_error: f64,
    pub rms_rel_error: f64,
}

/// One transcoded MLP: its parts and upstream features per latent.
pub struct HookTotals {
    pub hook: String,
    /// [d_sae, 4]: features, skip, bias, error.
    pub parts: Vec<f64>,
    /// Per latent: upstream feature → summed term.
    pub upstream: Vec<HashMap<u32, f64>>,
    /// The MLP's term against the sum of its four parts.
    pub gaps: Gaps,
    /// Per upstream feature: the tokens of the rows where it fires, counted.
    pub feature_tokens: HashMap<u32, HashMap<i32, u32>>,
    has_skip: bool,
    k: usize,
}

/// Groups whose heads are also summed token by token (each a map per head per group, so
/// `--categories DIR` with hundreds of categories keeps these for the first ones only).
pub const MAX_TOKEN_GROUPS: usize = 16;

/// Each head's terms summed per token. A row's terms wait in a scratch until the row ends, so
/// its token is looked up once per row, not once per (latent, head).
#[derive(Clone, Debug, Default)]
pub struct HeadTokens {
    /// Per head: token → summed term.
    pub heads: Vec<HashMap<i32, f64>>,
    row: Vec<f64>,
    touched: bool,
}

impl HeadTokens {
    fn new(heads_len: usize) -> Self {
        HeadTokens {
            heads: vec![HashMap::new(); heads_len],
            row: vec![0.0; heads_len],
            touched: false,
        }
    }

    fn add(&mut self, head: usize, term: f64) {
        self.row[head] += term;
        self.touched = true;
    }

    /// Adds the row's sums to its token's, and clears them.
    fn flush_row(&mut self, token: Option<i32>) {
        if !std::mem::take(&mut self.touched) {
            return;
        }
        for (hh, v) in self.row.iter_mut().enumerate() {
            if let (Some(t), true) = (token, *v != 0.0) {
                *self.heads[hh].entry(t).or_insert(0.0) += *v;
            }
            *v = 0.0;
        }
    }
}

/// One group's heads token by token: each head's terms into the group's members on the rows
/// where they fire (the tokens where the head writes this group).
#[derive(Clone, Debug, Default)]
pub struct GroupHeadTokens {
    /// The group's latents, sorted.
    pub members: Vec<u32>,
    pub tokens: HeadTokens,
}

impl GroupHeadTokens {
    pub fn new(members: &[usize], heads_len: usize) -> Self {
        let mut members: Vec<u32> = members.iter().map(|&m| m as u32).collect();
        members.sort_unstable();
        members.dedup();
        GroupHeadTokens {
            members,
            tokens: HeadTokens::new(heads_len),
        }
    }
}

/// Sums per latent over every row where it fires.
pub struct Totals {
    pub d_sae: usize,
    /// The component columns: the cache's components, then [`BIAS`].
    pub components: Vec<String>,
    /// `L{l}H{h}`, block by block.
    pub heads: Vec<String>,
    pub rows: u64,
    /// Thresholded SAEs: latents that fired beyond the cap of a row, left out of every sum.
    pub dropped: u64,
    pub fire_count: Vec<u64>,
    pub sum_pre: Vec<f64>,
    /// [d_sae, components].
    pub contribution: Vec<f64>,
    /// [d_sae, heads].
    pub head_contribution: Vec<f64>,
    pub hooks: Vec<HookTotals>,
    /// h against the sum of its component terms and bias.
    pub gaps: Gaps,
    /// Each block's attn_out term against the sum of its heads'.
    pub head_gaps: Gaps,
    /// Per latent: the tokens of the rows where it fires, counted.
    pub latent_tokens: Vec<HashMap<i32, u32>>,
    /// Per head: its terms into each row's selected latents, summed per token (the tokens
    /// where it writes the most into what the SAE selects).
    pub head_tokens: HeadTokens,
    /// The same per group, for the groups known before the pass (at most [`MAX_TOKEN_GROUPS`]).
    pub group_heads: Vec<GroupHeadTokens>,
    /// Per latent: its entries in `group_heads`.
    member_of: Vec<Vec<usize>>,
    /// b_enc − b_dec·W_enc per latent (b_enc alone for a transcoder, which reads x uncentred).
    bias: Vec<f64>,
    channels: usize,
    n_heads: usize,
}

fn latent_bias(setup: &AttributionSetup<'_>) -> Vec<f64> {
    let p = setup.sae;
    (0..p.d_sae)
        .map(|i| {
            let centre: f64 = match p.is_transcoder() {
                true => 0.0,
                false => (0..p.d_in)
                    .map(|c| f64::from(p.b_dec[c]) * f64::from(p.w_enc[c * p.d_sae + i]))
                    .sum(),
            };
            f64::from(p.b_enc[i]) - centre
        })
        .collect()
}

impl Totals {
    pub(super) fn new(setup: &AttributionSetup<'_>, channels: usize, tc_ks: &[usize]) -> Self {
        let d_sae = setup.sae.d_sae;
        let mut components = setup.components.clone();
        components.push(BIAS.to_string());
        let (heads, n_heads) = match &setup.heads {
            None => (Vec::new(), 0),
            Some(h) => (
                h.blocks
                    .iter()
                    .flat_map(|(l, _)| (0..h.n_heads).map(move |i| format!("L{l}H{i}")))
                    .collect(),
                h.n_heads,
            ),
        };
        let hooks: Vec<String> = setup.transcoders.iter().map(|t| t.hook.clone()).collect();
        let empty = Totals::empty(d_sae, components, heads, &hooks, &setup.token_groups);
        let mut totals = Totals {
            bias: latent_bias(setup),
            channels,
            n_heads,
            ..empty
        };
        for ((hook, tc), &k) in totals.hooks.iter_mut().zip(&setup.transcoders).zip(tc_ks) {
            hook.has_skip = tc.params.w_skip().is_some();
            hook.k = k;
        }
        totals
    }

    /// Adds one batch: every (row, selected latent) pair.
    pub(super) fn add_batch(
        &mut self,
        setup: &AttributionSetup<'_>,
        batch: &Batch,
        idx: &[u32],
        val: &[f32],
        tc_rows: &[TranscoderRows],
        terms: &Terms,
    ) {
        let rows = batch.rows;
        let k = idx.len() / rows.max(1);
        let d = setup.sae.d_in;
        for r in 0..rows {
            let f = row_factor(setup.sae, &batch.x[r * d..(r + 1) * d]);
            for s in 0..k {
                let e = r * k + s;
                if val[e] == 0.0 {
                    continue;
                }
                let i = idx[e] as usize;
                if let Some(&token) = batch.tokens.get(r) {
                    *self.latent_tokens[i].entry(token).or_insert(0) += 1;
                }
                let t = &terms.channels[e * self.channels..(e + 1) * self.channels];
                let h = self.add_components(setup, i, t, f);
                self.add_heads(setup, i, e, t, terms, f, h);
                self.add_hooks(setup, (i, r, e), t, tc_rows, terms, f, h);
            }
            self.flush_row_heads(batch.tokens.get(r).copied());
        }
        self.count_feature_tokens(batch, tc_rows);
        self.rows += rows as u64;
    }

    /// Adds one row's head sums to its token's, and clears them.
    fn flush_row_heads(&mut self, token: Option<i32>) {
        self.head_tokens.flush_row(token);
        self.group_heads
            .iter_mut()
            .for_each(|g| g.tokens.flush_row(token));
    }

    /// Each upstream feature's tokens, over the rows where it fires.
    fn count_feature_tokens(&mut self, batch: &Batch, tc_rows: &[TranscoderRows]) {
        for (hook, tc) in self.hooks.iter_mut().zip(tc_rows) {
            for (r, &token) in batch.tokens.iter().enumerate() {
                for s in 0..hook.k {
                    if tc.val[r * hook.k + s] != 0.0 {
                        let counts = hook
                            .feature_tokens
                            .entry(tc.idx[r * hook.k + s])
                            .or_default();
                        *counts.entry(token).or_insert(0) += 1;
                    }
                }
            }
        }
    }

    /// The components' and bias' terms of latent i on one row; returns h.
    fn add_components(&mut self, setup: &AttributionSetup<'_>, i: usize, t: &[f32], f: f64) -> f64 {
        let n = setup.components.len();
        let cols = n + 1;
        let h = f * f64::from(t[0]) + self.bias[i];
        let mut sum = self.bias[i];
        for c in 0..n {
            let part = f * f64::from(t[1 + c]);
            self.contribution[i * cols + c] += part;
            sum += part;
        }
        self.contribution[i * cols + n] += self.bias[i];
        self.gaps.add(h - sum, h);
        self.fire_count[i] += 1;
        self.sum_pre[i] += h;
        h
    }

    #[allow(clippy::too_many_arguments)]
    fn add_heads(
        &mut self,
        setup: &AttributionSetup<'_>,
        i: usize,
        e: usize,
        t: &[f32],
        terms: &Terms,
        f: f64,
        h: f64,
    ) {
        let Some(hw) = &setup.heads else { return };
        let (nh, total) = (self.n_heads, self.heads.len());
        for (b, (l, _)) in hw.blocks.iter().enumerate() {
            let out = &terms.heads[b][e * nh..(e + 1) * nh];
            let mut sum = 0.0;
            for (hh, &v) in out.iter().enumerate() {
                let part = f * f64::from(v);
                self.head_contribution[i * total + b * nh + hh] += part;
                self.head_tokens.add(b * nh + hh, part);
                for &g in &self.member_of[i] {
                    self.group_heads[g].tokens.add(b * nh + hh, part);
                }
                sum += part;
            }
            let attn = format!("blocks.{l}.hook_attn_out");
            if let Some(c) = setup.components.iter().position(|n| *n == attn) {
                self.head_gaps.add(f * f64::from(t[1 + c]) - sum, h);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_hooks(
        &mut self,
        setup: &AttributionSetup<'_>,
        (i, r, e): (usize, usize, usize),
        t: &[f32],
        tc_rows: &[TranscoderRows],
        terms: &Terms,
        f: f64,
        h: f64,
    ) {
        // The transcoders' extra channels follow the residual and the components.
        let mut extra = 1 + setup.components.len();
        let parts = HOOK_PARTS.len();
        for (n, hook) in self.hooks.iter_mut().enumerate() {
            let (tc, up) = (&tc_rows[n], &terms.upstream[n]);
            let mut features = 0.0;
            let kt = hook.k;
            for s in 0..kt {
                let g = tc.val[r * kt + s];
                if g == 0.0 {
                    continue;
                }
                let term = f * f64::from(g) * f64::from(up[e * kt + s]);
                *hook.upstream[i].entry(tc.idx[r * kt + s]).or_insert(0.0) += term;
                features += term;
            }
            let skip = match hook.has_skip {
                true => {
                    extra += 1;
                    f * f64::from(t[extra - 1])
                }
                false => 0.0,
            };
            let (bias, error) = (f * f64::from(t[extra]), f * f64::from(t[extra + 1]));
            extra += 2;
            for (p, v) in [features, skip, bias, error].into_iter().enumerate() {
                hook.parts[i * parts + p] += v;
            }
            let c = setup
                .components
                .iter()
                .position(|x| *x == hook.hook)
                .unwrap_or(0);
            hook.gaps.add(
                f * f64::from(t[1 + c]) - (features + skip + bias + error),
                h,
            );
        }
    }

    /// Empty sums over these columns, for the parts of a split job to be added into.
    pub fn empty(
        d_sae: usize,
        components: Vec<String>,
        heads: Vec<String>,
        hooks: &[String],
        token_groups: &[Vec<usize>],
    ) -> Totals {
        let heads_len = heads.len();
        // Without heads there is nothing to sum per group.
        let group_heads: Vec<GroupHeadTokens> = match heads_len {
            0 => Vec::new(),
            _ => token_groups
                .iter()
                .take(MAX_TOKEN_GROUPS)
                .map(|g| GroupHeadTokens::new(g, heads_len))
                .collect(),
        };
        Totals {
            d_sae,
            contribution: vec![0.0; d_sae * components.len()],
            head_contribution: vec![0.0; d_sae * heads.len()],
            components,
            n_heads: 0,
            heads,
            rows: 0,
            dropped: 0,
            fire_count: vec![0; d_sae],
            sum_pre: vec![0.0; d_sae],
            hooks: hooks
                .iter()
                .map(|hook| HookTotals {
                    hook: hook.clone(),
                    parts: vec![0.0; d_sae * HOOK_PARTS.len()],
                    upstream: vec![HashMap::new(); d_sae],
                    gaps: Gaps::default(),
                    feature_tokens: HashMap::new(),
                    has_skip: false,
                    k: 0,
                })
                .collect(),
            gaps: Gaps::default(),
            head_gaps: Gaps::default(),
            latent_tokens: vec![HashMap::new(); d_sae],
            head_tokens: HeadTokens::new(heads_len),
            member_of: members_of(&group_heads, d_sae),
            group_heads,
            bias: Vec::new(),
            channels: 0,
        }
    }

    /// Empty sums over the same columns as `self`.
    pub fn clone_empty(&self) -> Totals {
        let hooks: Vec<String> = self.hooks.iter().map(|h| h.hook.clone()).collect();
        Totals::empty(
            self.d_sae,
            self.components.clone(),
            self.heads.clone(),
            &hooks,
            &self.token_groups(),
        )
    }

    /// Adds another part's sums (of the same columns: the caller checks).
    pub fn absorb(&mut self, other: &Totals) {
        let add = |a: &mut [f64], b: &[f64]| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        self.rows += other.rows;
        self.dropped += other.dropped;
        self.fire_count
            .iter_mut()
            .zip(&other.fire_count)
            .for_each(|(x, y)| *x += y);
        add(&mut self.sum_pre, &other.sum_pre);
        add(&mut self.contribution, &other.contribution);
        add(&mut self.head_contribution, &other.head_contribution);
        self.gaps.merge(&other.gaps);
        self.head_gaps.merge(&other.head_gaps);
        merge_maps(&mut self.latent_tokens, &other.latent_tokens);
        merge_maps(&mut self.head_tokens.heads, &other.head_tokens.heads);
        self.absorb_group_heads(other);
        for (mine, theirs) in self.hooks.iter_mut().zip(&other.hooks) {
            add(&mut mine.parts, &theirs.parts);
            mine.gaps.merge(&theirs.gaps);
            merge_maps(&mut mine.upstream, &theirs.upstream);
            for (&j, counts) in &theirs.feature_tokens {
                add_map(mine.feature_tokens.entry(j).or_default(), counts);
            }
        }
    }

    /// The groups whose heads are summed token by token, as member lists.
    pub fn token_groups(&self) -> Vec<Vec<usize>> {
        let members = |g: &GroupHeadTokens| g.members.iter().map(|&m| m as usize).collect();
        self.group_heads.iter().map(members).collect()
    }

    /// A group's heads token by token, when they were summed for exactly these members.
    pub fn group_head_tokens(&self, members: &[usize]) -> Option<&GroupHeadTokens> {
        let wanted = GroupHeadTokens::new(members, 0).members;
        self.group_heads.iter().find(|g| g.members == wanted)
    }

    /// Adds the groups both sides summed (matched by members); a group one part did not sum
    /// is dropped, and its merged page falls back to the heads' tokens over every latent.
    fn absorb_group_heads(&mut self, other: &Totals) {
        self.group_heads.retain_mut(|mine| {
            let Some(theirs) = other.group_heads.iter().find(|g| g.members == mine.members) else {
                return false;
            };
            merge_maps(&mut mine.tokens.heads, &theirs.tokens.heads);
            true
        });
        self.member_of = members_of(&self.group_heads, self.d_sae);
    }

    /// The completeness figures of attribution.json.
    pub fn completeness(&self) -> Completeness {
        Completeness {
            rows: self.rows,
            pairs: self.gaps.pairs,
            max_rel_error: self.gaps.max_rel_error(),
            rms_rel_error: self.gaps.rms_rel_error(),
        }
    }

    /// `sum / fire_count` per latent and column (0 for latents that never fire).
    pub fn means(&self, sums: &[f64], cols: usize) -> Vec<f32> {
        (0..self.d_sae * cols)
            .map(|e| {
                let n = self.fire_count[e / cols.max(1)];
                if n == 0 {
                    0.0
                } else {
                    (sums[e] / n as f64) as f32
                }
            })
            .collect()
    }
}

/// Per latent: the indices of the groups it belongs to.
fn members_of(groups: &[GroupHeadTokens], d_sae: usize) -> Vec<Vec<usize>> {
    let mut of = vec![Vec::new(); d_sae];
    for (g, group) in groups.iter().enumerate() {
        for &m in &group.members {
            if let Some(list) = of.get_mut(m as usize) {
                list.push(g);
            }
        }
    }
    of
}

/// Adds `theirs` into `mine`, key by key.
fn add_map<K: Copy + Eq + Hash, V: Copy + Default + AddAssign>(
    mine: &mut HashMap<K, V>,
    theirs: &HashMap<K, V>,
) {
    theirs
        .iter()
        .for_each(|(&k, &v)| *mine.entry(k).or_default() += v);
}

/// Adds each of `theirs` into the `mine` of the same place.
fn merge_maps<K: Copy + Eq + Hash, V: Copy + Default + AddAssign>(
    mine: &mut [HashMap<K, V>],
    theirs: &[HashMap<K, V>],
) {
    mine.iter_mut().zip(theirs).for_each(|(m, t)| add_map(m, t));
}

/// The `n` tokens with the largest sums, largest first.
pub fn top_token_sums(sums: Option<&HashMap<i32, f64>>, n: usize) -> Vec<(i32, f64)> {
    let mut v: Vec<(i32, f64)> = sums.into_iter().flatten().map(|(&t, &s)| (t, s)).collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

/// The `n` most frequent tokens of a count, most frequent first (ties by id).
pub fn top_tokens(counts: Option<&HashMap<i32, u32>>, n: usize) -> Vec<(i32, u32)> {
    let mut v: Vec<(i32, u32)> = counts
        .into_iter()
        .flatten()
        .map(|(&t, &c)| (t, c))
        .collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    v.truncate(n);
    v
}
