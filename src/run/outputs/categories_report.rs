//! The static HTML report a person reads: `index.html` (the dictionary map and every category
//! ranked) and one page per top category (its PC scatter coloured by token, its cosine matrix,
//! members, cyclic order, top contexts, writers and logit lens). Plain HTML and PNGs: it opens
//! offline, from the file system, with no script.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::BufRead;
use std::path::Path;

use anyhow::{anyhow, Context};
use serde_json::json;

use super::plots::{heatmap, scatter};
use crate::analysis::categories::config::{CategoriesConfig, Method};
use crate::analysis::categories::families::{MIN_FIRES, SPECIFIC_SHARE};
use crate::analysis::categories::{
    Across, CategoriesResult, Category, MemberTie, RankBy, SIGNIFICANT_P,
};
use crate::io::{write_atomic, write_json_atomic, write_safetensors, TensorOut};

/// The outputs whose presence says "this report is complete"; removed before a run starts so a
/// failed run never leaves an older one looking like its result.
const FINAL_OUTPUTS: [&str; 5] = [
    "categories.json",
    "categories.safetensors",
    "index.html",
    "across.json",
    "families.json",
];

/// `feature-N.html` pages of earlier runs are removed too (their names vary).
fn is_feature_page(name: &str) -> bool {
    name.starts_with("feature-") && name.ends_with(".html")
}

/// Creates `out` and removes an earlier run's final outputs from it.
pub fn prepare_output_dir(out: &Path) -> anyhow::Result<()> {
    super::prepare_output_dir(out, &FINAL_OUTPUTS, is_feature_page)
}

/// What the written files say about where the categories came from.
pub struct OutputContext<'a> {
    /// The SAE as given, its provenance record and a one-line description.
    pub sae: &'a Path,
    pub provenance: serde_json::Value,
    pub sae_description: &'a str,
    pub token_text: &'a dyn Fn(i32) -> String,
    /// Top activating contexts per feature (`sae hist --tokenizer`), if given.
    pub contexts: Option<&'a HashMap<usize, Vec<(f32, String)>>>,
    /// `--across`'s SAE directory.
    pub across: Option<&'a Path>,
}

/// Writes the report pages first, then the files whose presence marks a finished run:
/// across.json, categories.safetensors, categories.json.
pub fn write_outputs(
    out: &Path,
    result: &CategoriesResult,
    config: &CategoriesConfig,
    context: &OutputContext<'_>,
) -> anyhow::Result<()> {
    let context_of = |f: usize| {
        context
            .contexts
            .and_then(|c| c.get(&f).cloned())
            .unwrap_or_default()
    };
    write_report(
        out,
        &result.categories,
        &ReportInputs {
            sae: context.sae_description,
            d_in: result.d_out,
            d_sae: result.d_sae,
            method: &result.method,
            rank_by: config.rank_by,
            pages: config.top.min(result.categories.len()),
            map: &result.map,
            unit: &result.unit,
            member_cosines: &|members| result.member_cosines(members),
            token_text: context.token_text,
            contexts: &context_of,
            feature: config.feature.map(|f| (f, result.member_ties(f))),
        },
    )?;
    if let (Some(across), Some(other)) = (&result.across, context.across) {
        write_json_atomic(
            &out.join("across.json"),
            &across_json(across, context.sae, other)?,
        )?;
    }
    write_safetensors(&out.join("categories.safetensors"), &tensors(result), None)?;
    if !result.families.is_empty() {
        write_json_atomic(
            &out.join("families.json"),
            &json!({
                "specific": format!(
                    "a feature fired at least {} times, at least {} of them on the family's tokens",
                    MIN_FIRES,
                    SPECIFIC_SHARE
                ),
                "families": result.families,
            }),
        )?;
    }
    write_json_atomic(
        &out.join("categories.json"),
        &categories_json(result, config, context),
    )
}

/// categories.safetensors: each feature's category and labels at every level, the decoder
/// kNN graph, and with co-occurrence its statistics per kNN slot and its own kNN graph.
fn tensors(result: &CategoriesResult) -> Vec<TensorOut> {
    let (d_sae, graph) = (result.d_sae, &result.graph);
    let mut rank_of = vec![0i32; d_sae];
    for category in &result.categories {
        for &m in &category.members {
            rank_of[m] = category.rank as i32;
        }
    }
    let index: Vec<i32> = graph.index.iter().map(|&i| i as i32).collect();
    let levels = &result.levels;
    let flat_labels: Vec<i32> = levels
        .iter()
        .flat_map(|(_, l)| l.iter().map(|&v| v as i32))
        .collect();
    let resolutions: Vec<f32> = levels.iter().map(|(r, _)| *r as f32).collect();
    let knn_shape = [d_sae, graph.neighbours];
    let mut tensors = vec![
        TensorOut::i32("category", &[d_sae], &rank_of),
        TensorOut::i32("labels", &[levels.len(), d_sae], &flat_labels),
        TensorOut::f32("resolutions", &[levels.len()], &resolutions),
        TensorOut::i32("knn_index", &knn_shape, &index),
        TensorOut::f32("knn_cosine", &knn_shape, &graph.cosine),
        TensorOut::f32("knn_affinity", &knn_shape, &graph.affinities()),
    ];
    if let (Some(stats), Some(p)) = (&result.knn_cooccurrence_stats, &result.partners) {
        let partner_index: Vec<i32> = p.index.iter().map(|&i| i as i32).collect();
        let shape = [d_sae, p.partners];
        tensors.push(TensorOut::f32("knn_phi", &knn_shape, &stats.phi));
        tensors.push(TensorOut::f32("knn_jaccard", &knn_shape, &stats.jaccard));
        tensors.push(TensorOut::i32("cooc_index", &shape, &partner_index));
        tensors.push(TensorOut::f32("cooc_score", &shape, &p.score));
    }
    tensors
}

/// categories.json: where the categories came from, how they were found and tested, and the
/// categories themselves.
fn categories_json(
    result: &CategoriesResult,
    config: &CategoriesConfig,
    context: &OutputContext<'_>,
) -> serde_json::Value {
    let significant = result
        .categories
        .iter()
        .filter(|c| c.significant == Some(true))
        .count();
    let cooccurrence = result.partners.as_ref().map(|p| {
        json!({
            "weight": config.cooccurrence.map(|c| c.weight),
            "unit": p.config.unit,
            "chunk": p.config.chunk_rows,
            "measure": p.config.measure,
            "partners": p.partners,
            "min_joint": p.config.min_joint,
            "fires_above": p.config.fires_above,
            "units": p.units,
            "passes": p.passes,
        })
    });
    let levels = if config.method == Method::Leiden {
        json!(result.hierarchy)
    } else {
        json!(null)
    };
    json!({
        "sae": context.sae.display().to_string(),
        "provenance": context.provenance,
        "d_in": result.d_in,
        "d_out": result.d_out,
        "d_sae": result.d_sae,
        "method": result.method,
        "neighbours": result.graph.neighbours,
        "min_cosine": result.min_cosine,
        "rank_by": config.rank_by,
        "significance": {
            "statistic": "density: mean edge weight over all member pairs of the clustering graph",
            "null": "random connected groups of the same size grown over the same graph",
            "draws": config.null_draws,
            "significant_below_p": SIGNIFICANT_P,
            "significant_categories": significant,
        },
        "rows": result.rows_read,
        "cooccurrence": cooccurrence,
        "graph_edges": result.edges.pairs.len(),
        "levels": levels,
        "categories": result.categories,
    })
}

/// `sae hist`'s top_examples.jsonl: per feature, (activation, decoded context).
pub fn read_contexts(dir: &Path) -> anyhow::Result<HashMap<usize, Vec<(f32, String)>>> {
    let path = dir.join("top_examples.jsonl");
    let file = std::fs::File::open(&path).with_context(|| {
        format!(
            "{}: cannot open (run `sae hist … --tokenizer` into that folder first)",
            path.display()
        )
    })?;
    let mut out = HashMap::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("{}: cannot read", path.display()))?;
        let value: serde_json::Value = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let feature = value["feature"]
            .as_u64()
            .ok_or_else(|| anyhow!("{}:{}: no 'feature'", path.display(), n + 1))?;
        let examples = value["examples"]
            .as_array()
            .map(|list| {
                list.iter()
                    .map(|e| {
                        (
                            e["value"].as_f64().unwrap_or(0.0) as f32,
                            e["context"].as_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert(feature as usize, examples);
    }
    Ok(out)
}

/// across.json: how our dictionary and `--across`'s relate, with their paths.
fn across_json(across: &Across, ours: &Path, other: &Path) -> anyhow::Result<serde_json::Value> {
    let (narrow, wide) = if across.ours_narrow {
        (ours, other)
    } else {
        (other, ours)
    };
    let mut value = serde_json::to_value(across)?;
    value["narrow"] = json!(narrow.display().to_string());
    value["wide"] = json!(wide.display().to_string());
    Ok(value)
}

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
    /// Unit decoder rows.
    pub unit: &'a [f32],
    /// The decoder cosines between a category's members, for its cosine matrix.
    pub member_cosines: &'a dyn Fn(&[usize]) -> Vec<f64>,
    /// Decodes a token id for display.
    pub token_text: &'a dyn Fn(i32) -> String,
    /// Top activating contexts per feature (from `sae hist`'s top_examples.jsonl), if given.
    pub contexts: &'a dyn Fn(usize) -> Vec<(f32, String)>,
    /// `--feature N`: the feature and its category's members by their tie to it.
    pub feature: Option<(usize, Vec<MemberTie>)>,
}

pub(crate) fn escape(text: &str) -> String {
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

pub(crate) fn page(title: &str, body: &str) -> String {
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
    // The top categories' pages, and that of `--feature`'s category wherever it ranks.
    let feature_category = inputs
        .feature
        .as_ref()
        .and_then(|(f, _)| categories.iter().find(|c| c.members.contains(f)));
    for c in categories
        .iter()
        .take(inputs.pages)
        .chain(feature_category.filter(|c| c.rank > inputs.pages))
    {
        category_plots(&plots, c, inputs)?;
        write_atomic(&out.join(page_name(c)), category_page(c, inputs).as_bytes())?;
    }
    if let (Some((feature, ties)), Some(c)) = (&inputs.feature, feature_category) {
        write_atomic(
            &out.join(format!("feature-{feature}.html")),
            feature_page(*feature, ties, c, inputs).as_bytes(),
        )?;
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
    let cos = (inputs.member_cosines)(&c.members);
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
         <table><tr><th>rank</th><th>size</th><th>density z vs chance</th><th>p</th>\
         <th>structure score</th><th>PR</th><th>mean cos</th><th>(1−M)·S</th><th>circle residual</th><th class=l>members</th>\
         <th class=l>top tokens</th></tr>",
        escape(inputs.sae),
        inputs.d_sae,
        inputs.d_in,
        escape(inputs.method),
        match inputs.rank_by {
            RankBy::Null => "edge density against random connected groups of the same size (z)",
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
            "<tr><td>{rank}</td><td>{}</td>{}<td>{:.2}</td><td>{:.2}</td><td>{:.3}</td>\
             <td>{engels}</td><td>{residual}</td><td class=l>{}{more}</td><td class=l>{}</td></tr>",
            c.size,
            null_cells(c),
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

/// `--feature N`'s page: its category in one line, the members by their tie to N, and a link to
/// the category's own page (structure, writers, contexts).
fn feature_page(
    feature: usize,
    ties: &[MemberTie],
    c: &Category,
    inputs: &ReportInputs<'_>,
) -> String {
    let mut body = String::new();
    let significance = c.significance();
    let _ = write!(
        body,
        "<p><a href=\"index.html\">← all categories</a></p><h1>Feature {feature}</h1>\
         <p>Category <a href=\"{}\">#{}</a> of {} features, {significance}. Structure score {:.2} \
         (PR {:.2}), mean decoder cosine {:.3}. Top tokens: {}.</p>\
         <h2>Members by their tie to feature {feature}</h2>\
         <table><tr><th>feature</th><th>graph edge</th><th>co-occurrence</th>\
         <th>decoder cosine</th><th>fires</th><th class=l>top contexts</th></tr>",
        page_name(c),
        c.rank,
        c.size,
        c.shape.subspace_score,
        c.shape.participation_ratio,
        c.shape.mean_pairwise_cosine,
        fmt_tokens(c, inputs, 10)
    );
    for t in ties {
        let contexts: Vec<String> = (inputs.contexts)(t.feature)
            .iter()
            .take(2)
            .map(|(_, text)| escape(text))
            .collect();
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{:.3}</td><td>{}</td><td>{:+.3}</td><td>{}</td><td class=ctx>{}</td></tr>",
            t.feature,
            t.edge,
            t.cooccurrence.map_or("–".into(), |v| format!("{v:.3}")),
            t.decoder_cosine,
            t.fires.map_or("–".into(), |f| f.to_string()),
            contexts.join("<br>")
        );
    }
    body.push_str("</table>");
    page(&format!("Feature {feature}"), &body)
}

/// The z-score and p-value cells of a category (struck through when not significant).
fn null_cells(c: &Category) -> String {
    match c.null {
        Some(n) if c.significant == Some(true) => {
            format!("<td>{:.1}</td><td>{:.3}</td>", n.null_z, n.null_p)
        }
        Some(n) => format!(
            "<td><s>{:.1}</s></td><td><s>{:.3}</s> (chance)</td>",
            n.null_z, n.null_p
        ),
        None => "<td>–</td><td>–</td>".into(),
    }
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
    null_section(&mut body, c);
    structure_section(&mut body, c, inputs);
    members_section(&mut body, c, inputs);
    writers_section(&mut body, c, inputs);
    page(&format!("Category #{}", c.rank), &body)
}

/// The category's density against chance.
fn null_section(body: &mut String, c: &Category) {
    if let Some(n) = c.null {
        let _ = write!(
            *body,
            "<p>Internal edge density {:.4} against {:.4} ± {:.4} for {} random connected groups \
             of {} features drawn from the same graph: z = {:.1}, p = {:.3}{}.</p>",
            n.density,
            n.null_mean,
            n.null_sd,
            n.null_draws,
            c.size,
            n.null_z,
            n.null_p,
            if c.significant == Some(true) {
                ""
            } else {
                " — <b>not better than chance</b>"
            }
        );
    }
}

/// The category's reconstructions on data: PCA, Engels' indices, the circle and orders.
fn structure_section(body: &mut String, c: &Category, inputs: &ReportInputs<'_>) {
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
}

/// The members, their fire counts and top contexts, under the cosine matrix.
fn members_section(body: &mut String, c: &Category, inputs: &ReportInputs<'_>) {
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
}

/// The model weights that write the category's subspace, and its logit lens.
fn writers_section(body: &mut String, c: &Category, inputs: &ReportInputs<'_>) {
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
}
