//! Scoring a categorisation against token families a person defines (`--families FILE`): does
//! the category that best matches a family hold the features specific to that family's tokens,
//! and little else?
//!
//! The file is JSON, one entry per family: a list of token strings, or `{"regex": "…"}` matched
//! against each token's decoded text. A string matches a token whose text equals it, with or
//! without the leading space BPE tokenizers put on word-initial tokens (`"May"` matches `May`
//! and ` May`); a regex must match the whole text (it is anchored).
//!
//! A feature is *specific* to a family when it fired at least [`MIN_FIRES`] times and at least
//! [`SPECIFIC_SHARE`] of its firing was on the family's tokens. For each family the best
//! category is the one holding most of its specific features (ties: the smaller category);
//! precision is the share of that category's members that are specific to the family, recall
//! the share of the family's specific features in that category.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;

use super::category::Category;

/// A feature is specific to a family when at least this share of its firing is on it.
pub const SPECIFIC_SHARE: f64 = 0.5;
/// …and it fired at least this often (fewer firings say little).
pub const MIN_FIRES: u64 = 5;

/// Families resolved against a tokenizer's vocabulary.
#[derive(Clone, Debug)]
pub struct TokenFamilies {
    pub names: Vec<String>,
    /// Token ids of each family.
    pub tokens: Vec<Vec<i32>>,
    /// Token id → the families it belongs to.
    pub of_token: HashMap<i32, Vec<usize>>,
}

/// Reads a families file and resolves every family against the vocabulary: `vocab` token ids
/// and `text` decoding one id. A family that names no token is an error.
pub fn load_families(
    path: &Path,
    vocab: usize,
    text: &dyn Fn(i32) -> String,
) -> anyhow::Result<TokenFamilies> {
    let raw = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the families file", path.display()))?;
    let value: serde_json::Value = serde_json::from_str(&raw).with_context(|| {
        format!(
            "{}: not JSON (expected {{\"name\": [\"token\", …] or {{\"regex\": \"…\"}}}})",
            path.display()
        )
    })?;
    let map = value.as_object().ok_or_else(|| {
        anyhow!(
            "{}: expected an object of families, name → list of tokens or {{\"regex\": \"…\"}}",
            path.display()
        )
    })?;
    if map.is_empty() {
        bail!("{}: defines no family", path.display());
    }
    let texts: Vec<String> = (0..vocab as i32).map(text).collect();
    let mut families = TokenFamilies {
        names: Vec::new(),
        tokens: Vec::new(),
        of_token: HashMap::new(),
    };
    for (name, spec) in map {
        let matches: Box<dyn Fn(&str) -> bool> = match spec {
            serde_json::Value::Array(list) => {
                let mut wanted = Vec::with_capacity(list.len());
                for item in list {
                    let s = item.as_str().ok_or_else(|| {
                        anyhow!(
                            "{}: family '{name}': tokens must be strings, got {item}",
                            path.display()
                        )
                    })?;
                    wanted.push(s.to_string());
                }
                Box::new(move |t: &str| {
                    wanted
                        .iter()
                        .any(|w| t == w || t.strip_prefix(' ') == Some(w.as_str()))
                })
            }
            serde_json::Value::Object(o) => {
                let pattern = o.get("regex").and_then(|r| r.as_str()).ok_or_else(|| {
                    anyhow!(
                        "{}: family '{name}': expected a list of tokens or {{\"regex\": \"…\"}}",
                        path.display()
                    )
                })?;
                let re = regex::Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    // The regex crate's message spans lines (a caret diagram); keep its last.
                    let text = e.to_string();
                    let reason = text
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("")
                        .trim_start_matches("error: ")
                        .to_string();
                    anyhow!(
                        "{}: family '{name}': bad regex {pattern:?}: {reason}",
                        path.display()
                    )
                })?;
                Box::new(move |t: &str| re.is_match(t))
            }
            other => bail!(
                "{}: family '{name}': expected a list of tokens or {{\"regex\": \"…\"}}, got {other}",
                path.display()
            ),
        };
        let ids: Vec<i32> = (0..vocab as i32)
            .filter(|&id| matches(&texts[id as usize]))
            .collect();
        if ids.is_empty() {
            bail!(
                "{}: family '{name}' names no token of the tokenizer",
                path.display()
            );
        }
        let f = families.names.len();
        for &id in &ids {
            families.of_token.entry(id).or_default().push(f);
        }
        families.names.push(name.clone());
        families.tokens.push(ids);
    }
    Ok(families)
}

/// How one family's specific features fall into the categories.
#[derive(Clone, Debug, Serialize)]
pub struct FamilyScore {
    pub family: String,
    pub tokens: usize,
    /// Features specific to the family.
    pub specific: Vec<usize>,
    /// The best-matching category's rank and size (None when no feature is specific).
    pub category_rank: Option<usize>,
    pub category_size: Option<usize>,
    /// Specific features in that category.
    pub found: usize,
    pub precision: f64,
    pub recall: f64,
    /// Whether that category is denser than chance.
    pub significant: Option<bool>,
}

/// Scores `categories` against each family, from per-feature fire counts (`fire_count`
/// [d_sae]) and fires on each family's tokens (`family_fires` [families, d_sae]).
pub fn score_families(
    families: &TokenFamilies,
    fire_count: &[u64],
    family_fires: &[u64],
    categories: &[Category],
) -> Vec<FamilyScore> {
    let d_sae = fire_count.len();
    let mut category_of: HashMap<usize, usize> = HashMap::new();
    for (c, cat) in categories.iter().enumerate() {
        for &m in &cat.members {
            category_of.insert(m, c);
        }
    }
    families
        .names
        .iter()
        .enumerate()
        .map(|(f, name)| {
            let specific: Vec<usize> = (0..d_sae)
                .filter(|&i| {
                    let total = fire_count[i];
                    total >= MIN_FIRES
                        && family_fires[f * d_sae + i] as f64 >= SPECIFIC_SHARE * total as f64
                })
                .collect();
            let mut in_category: BTreeMap<usize, usize> = BTreeMap::new();
            for i in &specific {
                if let Some(&c) = category_of.get(i) {
                    *in_category.entry(c).or_default() += 1;
                }
            }
            let best = in_category
                .iter()
                .max_by(|a, b| {
                    a.1.cmp(b.1)
                        .then(categories[*b.0].size.cmp(&categories[*a.0].size))
                })
                .map(|(&c, &n)| (c, n));
            let (rank, size, found, significant) = match best {
                Some((c, n)) => (
                    Some(categories[c].rank),
                    Some(categories[c].size),
                    n,
                    categories[c].significant,
                ),
                None => (None, None, 0, None),
            };
            FamilyScore {
                family: name.clone(),
                tokens: families.tokens[f].len(),
                precision: size.map_or(0.0, |s| found as f64 / s as f64),
                recall: if specific.is_empty() {
                    0.0
                } else {
                    found as f64 / specific.len() as f64
                },
                specific,
                category_rank: rank,
                category_size: size,
                found,
                significant,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::categories::categories;

    #[test]
    fn precision_and_recall_of_the_best_category() {
        // 6 features of width 2; categories {0, 1, 2} and {3, 4}; feature 5 alone.
        let labels = vec![0, 0, 0, 3, 3, 5];
        let unit = vec![
            1.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0,
        ];
        let found = categories(&labels, &unit, 2);
        let families = TokenFamilies {
            names: vec!["f".into()],
            tokens: vec![vec![7]],
            of_token: HashMap::from([(7, vec![0])]),
        };
        // Specific: 0 and 1 (all firing on the family), 3 (6 of 10), 5; not 2 (4 of 10) nor 4
        // (too few firings).
        let fires = vec![10, 10, 10, 10, 4, 10];
        let family = vec![10, 10, 4, 6, 4, 10];
        let scores = score_families(&families, &fires, &family, &found);
        let s = &scores[0];
        assert_eq!(s.specific, vec![0, 1, 3, 5]);
        assert_eq!(s.category_size, Some(3));
        assert_eq!(s.found, 2);
        assert!((s.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((s.recall - 0.5).abs() < 1e-12);
    }
}
