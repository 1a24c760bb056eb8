//! Splitting a shard job across machines: `--part I/N` sorts the shards by path and cuts them
//! into N contiguous groups of whole shards balanced by rows; part I (0-based) takes group I.
//! The split depends only on the shard list (paths and row counts), so N processes on N
//! machines agree without talking to each other.

use serde::{Deserialize, Serialize};

use super::error::DataError;
use super::shard::Shard;

/// Part `index` of `count`, as `--part I/N` gives it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub index: usize,
    pub count: usize,
}

impl std::str::FromStr for Part {
    type Err = String;

    fn from_str(text: &str) -> Result<Part, String> {
        let (i, n) = text
            .split_once('/')
            .ok_or_else(|| format!("--part {text}: expected I/N, e.g. 0/4"))?;
        let parse = |v: &str| {
            v.trim()
                .parse::<usize>()
                .map_err(|_| format!("--part {text}: expected I/N with whole numbers"))
        };
        let (index, count) = (parse(i)?, parse(n)?);
        if count == 0 {
            return Err(format!("--part {text}: N must be at least 1"));
        }
        if index >= count {
            return Err(format!(
                "--part {text}: I must be below N (parts are numbered 0 to {})",
                count - 1
            ));
        }
        Ok(Part { index, count })
    }
}

/// What a part covered, recorded in its outputs so a merge can check the parts fit together.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartInfo {
    pub index: usize,
    pub count: usize,
    /// This part's shards, in order.
    pub shards: Vec<String>,
    /// Rows in this part's shards.
    pub rows: u64,
    /// Shards and rows of the whole job.
    pub total_shards: usize,
    pub total_rows: u64,
}

/// The first shard of each of `count` contiguous groups of `rows` (one entry per shard), as
/// balanced by rows as cutting between whole shards allows: boundary g is the cut closest to
/// g/N of the rows, leaving every group at least one shard.
fn boundaries(rows: &[u64], count: usize) -> Vec<usize> {
    let total: u64 = rows.iter().sum();
    let mut cumulative = Vec::with_capacity(rows.len() + 1);
    cumulative.push(0u64);
    for r in rows {
        cumulative.push(cumulative.last().copied().unwrap_or(0) + r);
    }
    let mut starts = vec![0usize];
    for g in 1..count {
        let target = total as f64 * g as f64 / count as f64;
        let lo = starts[g - 1] + 1;
        let hi = rows.len() - (count - g);
        let best = (lo..=hi)
            .min_by(|&a, &b| {
                let da = (cumulative[a] as f64 - target).abs();
                let db = (cumulative[b] as f64 - target).abs();
                da.total_cmp(&db).then(a.cmp(&b))
            })
            .unwrap_or(lo);
        starts.push(best);
    }
    starts
}

/// The shards of `part` (sorted by path, balanced by rows), and what it covers.
pub fn split(shards: Vec<Shard>, part: Part) -> Result<(Vec<Shard>, PartInfo), DataError> {
    split_by(shards, |s| (s.path.as_path(), s.rows as u64), part)
}

/// [`split`] for any whole files: `of` gives each one's path and rows.
pub fn split_by<T>(
    mut files: Vec<T>,
    of: impl Fn(&T) -> (&std::path::Path, u64),
    part: Part,
) -> Result<(Vec<T>, PartInfo), DataError> {
    files.sort_by(|a, b| of(a).0.cmp(of(b).0));
    if part.count > files.len() {
        return Err(DataError::Input(format!(
            "--part {}/{}: {} parts but only {} shards; parts are whole shards",
            part.index,
            part.count,
            part.count,
            files.len()
        )));
    }
    let rows: Vec<u64> = files.iter().map(|f| of(f).1).collect();
    let total_rows: u64 = rows.iter().sum();
    let total_shards = files.len();
    let starts = boundaries(&rows, part.count);
    let start = starts[part.index];
    let end = starts.get(part.index + 1).copied().unwrap_or(files.len());
    let mine: Vec<T> = files.drain(start..end).collect();
    let info = PartInfo {
        index: part.index,
        count: part.count,
        shards: mine.iter().map(|f| of(f).0.display().to_string()).collect(),
        rows: mine.iter().map(|f| of(f).1).sum(),
        total_shards,
        total_rows,
    };
    Ok((mine, info))
}

/// Checks that `parts` are exactly parts 0..N of one split (same N, each once, none missing)
/// and returns them in part order; `name` names each part's file in errors.
pub fn check_complete<T>(
    mut parts: Vec<(PartInfo, T)>,
    name: impl Fn(&T) -> String,
) -> Result<Vec<(PartInfo, T)>, String> {
    let Some(n) = parts.first().map(|(p, _)| p.count) else {
        return Err("no parts to merge".to_string());
    };
    if let Some((p, t)) = parts.iter().find(|(p, _)| p.count != n) {
        return Err(format!(
            "{}: part {}/{} of a split into {} parts, but {} is of a split into {n}",
            name(t),
            p.index,
            p.count,
            p.count,
            name(&parts[0].1)
        ));
    }
    if let Some((p, t)) = parts.iter().find(|(p, _)| {
        (p.total_shards, p.total_rows) != (parts[0].0.total_shards, parts[0].0.total_rows)
    }) {
        return Err(format!(
            "{}: split {} shards ({} rows), but {} split {} ({} rows): parts of one job split the same shards",
            name(t),
            p.total_shards,
            p.total_rows,
            name(&parts[0].1),
            parts[0].0.total_shards,
            parts[0].0.total_rows
        ));
    }
    parts.sort_by_key(|(p, _)| p.index);
    for pair in parts.windows(2) {
        if pair[0].0.index == pair[1].0.index {
            return Err(format!(
                "{} and {} are both part {}/{n}",
                name(&pair[0].1),
                name(&pair[1].1),
                pair[0].0.index
            ));
        }
    }
    let present: Vec<usize> = parts.iter().map(|(p, _)| p.index).collect();
    let missing: Vec<String> = (0..n)
        .filter(|i| !present.contains(i))
        .map(|i| format!("{i}/{n}"))
        .collect();
    if !missing.is_empty() {
        return Err(format!("parts {} are missing", missing.join(", ")));
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundaries_balance_rows_and_keep_every_group_non_empty() {
        assert_eq!(boundaries(&[10, 10, 10, 10], 2), vec![0, 2]);
        assert_eq!(boundaries(&[100, 1, 1, 1], 2), vec![0, 1]);
        // The big shard alone in the last group; the small ones share the rest.
        assert_eq!(boundaries(&[1, 1, 1, 100], 3), vec![0, 2, 3]);
        assert_eq!(boundaries(&[5, 5, 5], 3), vec![0, 1, 2]);
        assert_eq!(boundaries(&[7], 1), vec![0]);
    }

    #[test]
    fn part_parsing_refuses_what_cannot_be_split() {
        assert_eq!("1/3".parse::<Part>(), Ok(Part { index: 1, count: 3 }));
        assert!("3/3".parse::<Part>().is_err());
        assert!("0/0".parse::<Part>().is_err());
        assert!("x/2".parse::<Part>().is_err());
        assert!("2".parse::<Part>().is_err());
    }
}
