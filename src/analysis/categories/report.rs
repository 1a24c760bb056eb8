//! The static HTML report a person reads: `index.html` (the dictionary map and every category
//! ranked) and one page per top category (its PC scatter coloured by token, its cosine matrix,
//! members, cyclic order, top contexts, writers and logit lens). Plain HTML and PNGs: it opens
//! offline, from the file system, with no script.

use std::fmt::Write as _;
use std::path::Path;

use super::shape::member_gram;
use super::{Category, RankBy};
use crate::analysis::plots::{heatmap, scatter};
use crate::io::write_atomic;

/// Tokens coloured in a category's scatter plot (the rest are grey).
const LEGEND_TOKENS: usize = 10;

/// Everything the pages show beyond the categories themselves.
pub struct ReportInputs<'a> {
    pub sae: &'a str,
    pub d_in: usize,
    pub d_sae: usize,
    pub method: &'a str,
    pub rank_by: RankBy,
    /// Categories that get a page of their own (the first `pages` of `categories`).
    pub pages: usize,
    /// The dictionary's 2-D map: (x, y) per feature.
    pub map: &'a [(f64, f64)],
    /// Unit decoder rows, for the cosine matrices.
    pub unit: &'a [f32],
    /// Decodes a token id for display.
    pub token_text: &'a dyn Fn(i32) -> String,
    /// Top activating contexts per feature (from `sae hist`'s top_examples.jsonl), if given.
    pub contexts: &'a dyn Fn(usize) -> Vec<(f32, String)>,
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}\
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}\
th{background:#f3f3f3}td.l{text-align:left}img{max-width:100%;border:1px solid #ddd}\
code{background:#f6f6f6;padding:1px 4px}.ctx{font-family:monospace;white-space:pre-wrap;text-align:left}";

fn page(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <style>{STYLE}</style></head><body>\n{body}\n</body></html>\n",
        escape(title)
    )
}

fn page_name(c: &Category) -> String {
    format!("category-{:03}.html", c.rank)
}

/// Writes the PNGs and the pages into `out`; `index.html` goes last, so a report without it
/// is an unfinished one.
pub fn write_report(
    out: &Path,
    categories: &[Category],
    inputs: &ReportInputs<'_>,
) -> anyhow::Result<()> {
    let plots = out.join("plots");
    std::fs::create_dir_all(&plots)?;
    for c in categories.iter().take(inputs.pages) {
        category_plots(&plots, c, inputs)?;
        write_atomic(&out.join(page_name(c)), category_page(c, inputs).as_bytes())?;
    }
    // The dictionary map, coloured by the top categories.
    let mut group = vec![None; inputs.d_sae];
    let legend: Vec<String> = categories
        .iter()
        .take(inputs.pages.min(10))
        .enumerate()
        .map(|(g, c)| {
            for &m in &c.members {
                group[m] = Some(g);
            }
            format!("#{} ({} features)", c.rank, c.size)
        })
        .collect();
    let points: Vec<(f64, f64, Option<usize>)> = inputs
        .map
        .iter()
        .zip(&group)
        .map(|(&(x, y), &g)| (x, y, g))
        .collect();
    scatter(
        &plots.join("dictionary-map.png"),
        "Dictionary map (spectral embedding of the kNN graph)",
        ("eigenvector 2", "eigenvector 3"),
        &points,
        &legend,
    )?;
    write_atomic(
        &out.join("index.html"),
        index_page(categories, inputs).as_bytes(),
    )
}

fn category_plots(plots: &Path, c: &Category, inputs: &ReportInputs<'_>) -> anyhow::Result<()> {
    let cos = member_gram(inputs.unit, inputs.d_in, &c.members);
    let labels: Vec<String> = c.members.iter().map(|f| f.to_string()).collect();
    heatmap(
        &plots.join(format!("category-{:03}-cosines.png", c.rank)),
        &format!("Category #{}: decoder cosines", c.rank),
        &cos,
        &labels,
    )?;
    if let Some(s) = &c.structure {
        let shown: Vec<i32> = c
            .top_tokens
            .iter()
            .take(LEGEND_TOKENS)
            .map(|t| t.token)
            .collect();
        let points: Vec<(f64, f64, Option<usize>)> = s
            .points
            .iter()
            .map(|(p, t)| (p[0], p[1], shown.iter().position(|s| s == t)))
            .collect();
        let legend: Vec<String> = shown.iter().map(|&t| (inputs.token_text)(t)).collect();
        scatter(
            &plots.join(format!("category-{:03}-pca.png", c.rank)),
            &format!(
                "Category #{}: reconstructions on PC{} and PC{}",
                c.rank,
                s.best_pair[0] + 1,
                s.best_pair[1] + 1
            ),
            (
                &format!("PC{}", s.best_pair[0] + 1),
                &format!("PC{}", s.best_pair[1] + 1),
            ),
            &points,
            &legend,
        )?;
    }
    Ok(())
}

fn fmt_tokens(c: &Category, inputs: &ReportInputs<'_>, n: usize) -> String {
    c.top_tokens
        .iter()
        .take(n)
        .map(|t| escape(&format!("{:?}", (inputs.token_text)(t.token))))
        .collect::<Vec<_>>()
        .join(" ")
}

fn index_page(categories: &[Category], inputs: &ReportInputs<'_>) -> String {
    let ranked = categories.iter().filter(|c| c.size >= 3).count();
    let mut body = String::new();
    let _ = write!(
        body,
        "<h1>Feature categories</h1><p>SAE <code>{}</code>: {} features of width {}. \
         Clustering: {}. Ranked by {}. {} categories, {ranked} of ≥ 3 features.</p>\
         <p><img src=\"plots/dictionary-map.png\" alt=\"dictionary map\"></p>\
         <table><tr><th>rank</th><th>size</th><th>structure score</th><th>PR</th>\
         <th>mean cos</th><th>(1−M)·S</th><th>circle residual</th><th class=l>members</th>\
         <th class=l>top tokens</th></tr>",
        escape(inputs.sae),
        inputs.d_sae,
        inputs.d_in,
        escape(inputs.method),
        match inputs.rank_by {
            RankBy::Subspace => "structure score (members − participation ratio)",
            RankBy::Engels => "Engels' mean (1 − M)·S",
        },
        categories.len()
    );
    for c in categories {
        let rank = if c.rank <= inputs.pages {
            format!("<a href=\"{}\">#{}</a>", page_name(c), c.rank)
        } else {
            format!("#{}", c.rank)
        };
        let (engels, residual) = match &c.structure {
            Some(s) => (
                format!("{:.3}", s.engels_score),
                format!("{:.3}", s.circle.relative_residual),
            ),
            None => ("–".into(), "–".into()),
        };
        let members: Vec<String> = c.members.iter().take(12).map(|m| m.to_string()).collect();
        let more = if c.size > 12 { " …" } else { "" };
        let _ = write!(
            body,
            "<tr><td>{rank}</td><td>{}</td><td>{:.2}</td><td>{:.2}</td><td>{:.3}</td>\
             <td>{engels}</td><td>{residual}</td><td class=l>{}{more}</td><td class=l>{}</td></tr>",
            c.size,
            c.shape.subspace_score,
            c.shape.participation_ratio,
            c.shape.mean_pairwise_cosine,
            members.join(", "),
            fmt_tokens(c, inputs, 6)
        );
    }
    body.push_str("</table>");
    page("Feature categories", &body)
}

fn category_page(c: &Category, inputs: &ReportInputs<'_>) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<p><a href=\"index.html\">← all categories</a></p><h1>Category #{}: {} features</h1>\
         <table><tr><th>structure score</th><th>participation ratio</th><th>mean pairwise cos</th>\
         <th>decoder PCA variance</th></tr><tr><td>{:.2}</td><td>{:.2}</td><td>{:.3}</td><td>{}</td></tr></table>",
        c.rank,
        c.size,
        c.shape.subspace_score,
        c.shape.participation_ratio,
        c.shape.mean_pairwise_cosine,
        c.shape
            .pca_variance
            .iter()
            .map(|v| format!("{v:.2}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    if let Some(s) = &c.structure {
        let _ = write!(
            body,
            "<h2>Reconstructions from the category's features</h2>\
             <p>{} rows where a member fired; {} kept. PCA variance: {}. Circle on PC{}–PC{}: \
             radius {:.3}, relative residual {:.3}.</p>\
             <p><img src=\"plots/category-{:03}-pca.png\" alt=\"PC scatter\"></p>\
             <table><tr><th>PCs</th><th>mixture M</th><th>separability S (bits)</th><th>(1−M)·S</th></tr>",
            s.rows_fired,
            s.samples,
            s.pca_variance
                .iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>()
                .join(" "),
            s.best_pair[0] + 1,
            s.best_pair[1] + 1,
            s.circle.radius,
            s.circle.relative_residual,
            c.rank
        );
        for p in &s.pairs {
            let _ = write!(
                body,
                "<tr><td>{}–{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
                p.components[0] + 1,
                p.components[1] + 1,
                p.mixture,
                p.separability,
                (1.0 - p.mixture) * p.separability
            );
        }
        let tokens: Vec<String> = s
            .token_order
            .iter()
            .map(|&t| escape(&format!("{:?}", (inputs.token_text)(t))))
            .collect();
        let _ = write!(
            body,
            "</table><p>Cyclic order of members: {}</p><p>Tokens around the circle: {}</p>",
            s.cyclic_order
                .iter()
                .map(|m| m.to_string())
                .collect::<Vec<_>>()
                .join(" → "),
            tokens.join(" → ")
        );
    }
    let _ = write!(
        body,
        "<h2>Members</h2><p><img src=\"plots/category-{:03}-cosines.png\" alt=\"cosine matrix\"></p>\
         <table><tr><th>feature</th><th>fires</th><th class=l>top contexts</th></tr>",
        c.rank
    );
    for (i, &m) in c.members.iter().enumerate() {
        let fires = c
            .fire_counts
            .as_ref()
            .map_or("–".to_string(), |f| f[i].to_string());
        let contexts: Vec<String> = (inputs.contexts)(m)
            .into_iter()
            .take(3)
            .map(|(v, text)| format!("{v:.2}: {}", escape(&text)))
            .collect();
        let _ = write!(
            body,
            "<tr><td>{m}</td><td>{fires}</td><td class=ctx>{}</td></tr>",
            contexts.join("\n")
        );
    }
    body.push_str("</table>");
    if let Some(w) = &c.writers {
        let _ = write!(
            body,
            "<h2>Writers of the subspace</h2><p>Fraction of each output in the category's \
             {}-dimensional subspace; a random direction shows {:.3}.</p>\
             <table><tr><th>block</th><th>kind</th><th>index</th><th>fraction</th><th>× baseline</th></tr>",
            w.subspace_dim, w.baseline
        );
        for x in w.heads.iter().chain(&w.neurons) {
            let _ = write!(
                body,
                "<tr><td>{}</td><td class=l>{}</td><td>{}</td><td>{:.3}</td><td>{:.2}</td></tr>",
                x.block, x.kind, x.index, x.fraction, x.over_baseline
            );
        }
        body.push_str("</table><h2>Logit lens</h2><table><tr><th>axis</th><th class=l>promoted</th><th class=l>suppressed</th></tr>");
        for a in &w.logit_lens {
            let list = |t: &[(u32, f32)]| {
                t.iter()
                    .map(|&(id, _)| escape(&format!("{:?}", (inputs.token_text)(id as i32))))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let _ = write!(
                body,
                "<tr><td>PC{}</td><td class=l>{}</td><td class=l>{}</td></tr>",
                a.axis + 1,
                list(&a.promoted),
                list(&a.suppressed)
            );
        }
        body.push_str("</table>");
    }
    page(&format!("Category #{}", c.rank), &body)
}
