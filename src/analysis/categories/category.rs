//! A category of features: its members, their geometry, its significance against chance and
//! (with shards, a model) its structure and writers; grouping labels into categories, and
//! ranking them.

use serde::Serialize;

use super::null;
use super::shape::{category_shape, CategoryShape};
use super::structure;
use super::writers;

/// One category: its members, their geometry, and (with shards, a model) what produces it.
#[derive(Clone, Debug, Serialize)]
pub struct Category {
    /// 1-based rank by the chosen score (categories of ≥ 3 members first).
    pub rank: usize,
    /// The cluster label (lowest member id) at the primary clustering.
    pub label: usize,
    pub size: usize,
    pub members: Vec<usize>,
    #[serde(flatten)]
    pub shape: CategoryShape,
    /// Internal edge density against random connected groups of the same size.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub null: Option<null::NullScore>,
    /// Denser than chance: null_p below [`SIGNIFICANT_P`].
    #[serde(skip_serializing_if = "Option::is_none")]
    pub significant: Option<bool>,
    /// Each member's fire count on the shards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fire_counts: Option<Vec<u64>>,
    /// The most frequent tokens where members fire: (token id, count, decoded text).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub top_tokens: Vec<TokenCount>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub structure: Option<structure::Structure>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub writers: Option<writers::Writers>,
}

impl Category {
    /// Whether the category is denser than chance, in one phrase with its z and p.
    pub fn significance(&self) -> String {
        match (self.null, self.significant) {
            (Some(n), Some(true)) => format!(
                "denser than chance (z {:.1}, p {:.3} against {} random groups of {})",
                n.null_z, n.null_p, n.null_draws, self.size
            ),
            (Some(n), _) => format!(
                "NOT denser than chance (z {:.1}, p {:.3}): treat it as a loose group",
                n.null_z, n.null_p
            ),
            _ => "too small to test against chance".into(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TokenCount {
    pub token: i32,
    pub count: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
}

/// A category is marked significant when fewer than this fraction of random groups of its size
/// are as dense (with the default 200 draws, at most 1 of them).
pub const SIGNIFICANT_P: f64 = 0.01;

/// What categories are ranked by (`--rank-by`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RankBy {
    /// How far the category's internal edge density lies above that of random connected
    /// groups of the same size drawn from the same graph (null_z); significant ones first.
    Null,
    /// members − participation ratio of their unit decoder rows.
    Subspace,
    /// Engels et al.'s mean (1 − M)·S over consecutive principal-component pairs (needs
    /// shards; categories without it follow, by subspace score).
    Engels,
}

impl crate::choice::Choice for RankBy {
    const CHOICES: &'static [(&'static str, Self, &'static str)] = &[
        (
            "null",
            RankBy::Null,
            "Internal edge density against random connected groups of the same size (null_z); significant ones first",
        ),
        (
            "subspace",
            RankBy::Subspace,
            "members − participation ratio of their unit decoder rows",
        ),
        (
            "engels",
            RankBy::Engels,
            "Engels et al.'s mean (1 − M)·S over consecutive principal-component pairs (needs shards)",
        ),
    ];
}

/// Groups features by `labels` into categories of ≥ 2 members, ranked by subspace score
/// (categories of ≥ 3 members first, then pairs; ties by the lowest member id).
pub fn categories(labels: &[usize], unit: &[f32], d_in: usize) -> Vec<Category> {
    let mut groups: std::collections::BTreeMap<usize, Vec<usize>> = Default::default();
    for (feature, &label) in labels.iter().enumerate() {
        groups.entry(label).or_default().push(feature);
    }
    let mut found: Vec<Category> = groups
        .into_values()
        .filter(|members| members.len() >= 2)
        .map(|members| Category {
            rank: 0,
            label: members[0],
            size: members.len(),
            shape: category_shape(unit, d_in, &members),
            null: None,
            significant: None,
            members,
            fire_counts: None,
            top_tokens: Vec::new(),
            structure: None,
            writers: None,
        })
        .collect();
    rank(&mut found, RankBy::Subspace);
    found
}

/// Sorts and numbers `found`: categories of ≥ 3 members first, then by the score (with
/// `Engels`, those that have it first), ties by the lowest member id.
pub fn rank(found: &mut [Category], by: RankBy) {
    let engels = |c: &Category| match by {
        RankBy::Engels => c.structure.as_ref().map(|s| s.engels_score),
        RankBy::Null => c.null.map(|n| n.null_z),
        RankBy::Subspace => None,
    };
    let significant = |c: &Category| by == RankBy::Null && c.significant == Some(true);
    found.sort_by(|a, b| {
        (b.size >= 3)
            .cmp(&(a.size >= 3))
            .then(significant(b).cmp(&significant(a)))
            .then(engels(b).is_some().cmp(&engels(a).is_some()))
            .then(
                engels(b)
                    .unwrap_or(0.0)
                    .total_cmp(&engels(a).unwrap_or(0.0)),
            )
            .then(b.shape.subspace_score.total_cmp(&a.shape.subspace_score))
            .then(a.members[0].cmp(&b.members[0]))
    });
    for (i, category) in found.iter_mut().enumerate() {
        category.rank = i + 1;
    }
}
