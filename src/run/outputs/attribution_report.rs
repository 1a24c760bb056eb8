//! The outputs of `sae attribute`: attribution.safetensors (per-latent means), one page per
//! group (its members × components shares, heads, upstream features with their tokens),
//! index.html, and attribution.json last, so a directory without it is an unfinished run.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde_json::json;
use tokenizers::Tokenizer;

use super::categories_report::{escape, page};
use crate::analysis::attribute::groups::Writer;
use crate::analysis::attribute::{top_token_sums, top_tokens, GroupReport, Totals, HOOK_PARTS};
use crate::io::{write_atomic, write_json_atomic, write_safetensors, TensorOut};
use crate::run::attribute::AttributeRequest;
use crate::sae::formats::LoadedSae;

/// Outputs whose presence says the run finished; removed before a run writes anything.
const FINAL_OUTPUTS: [&str; 3] = ["attribution.json", "attribution.safetensors", "index.html"];
/// A compact heatmap: one narrow cell per component.
const MAP_STYLE: &str = "<style>table.map td,table.map th{padding:1px 3px;font-size:10px}</style>";
/// Marks the link this report adds to a categories report (so it is added once).
const LINK_MARK: &str = "<!-- sae attribute -->";

pub struct ReportContext<'a> {
    pub request: &'a AttributeRequest,
    pub sae: &'a LoadedSae,
    pub resid: &'a str,
    pub cache_files: Vec<PathBuf>,
    pub tokenizer: Option<&'a Tokenizer>,
    pub seconds: f64,
}

impl ReportContext<'_> {
    fn token(&self, t: i32) -> String {
        match (self.tokenizer, u32::try_from(t)) {
            (Some(tok), Ok(id)) => tok
                .decode(&[id], false)
                .unwrap_or_else(|_| format!("#{id}")),
            _ => format!("#{t}"),
        }
    }

    fn tokens(&self, counts: Option<&HashMap<i32, u32>>) -> String {
        top_tokens(counts, 8)
            .iter()
            .map(|(t, c)| format!("{} ({c})", escape(&format!("{:?}", self.token(*t)))))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

pub fn write_report(
    out: &Path,
    totals: &Totals,
    groups: &[GroupReport],
    context: &ReportContext<'_>,
) -> anyhow::Result<()> {
    super::prepare_output_dir(out, &FINAL_OUTPUTS, |n| {
        n.starts_with("group-") && n.ends_with(".html")
    })?;
    write_tensors(&out.join("attribution.safetensors"), totals)?;
    for g in groups {
        write_atomic(
            &out.join(page_name(&g.id)),
            group_page(g, totals, context).as_bytes(),
        )?;
    }
    write_atomic(
        &out.join("index.html"),
        index_page(groups, totals, context).as_bytes(),
    )?;
    if let Some(dir) = &context.request.groups.categories {
        link_from_categories(dir, out)?;
    }
    write_json_atomic(
        &out.join("attribution.json"),
        &attribution_json(totals, groups, context),
    )
}

fn page_name(id: &str) -> String {
    format!("group-{id}.html")
}

fn write_tensors(path: &Path, totals: &Totals) -> anyhow::Result<()> {
    let d = totals.d_sae;
    let (nc, nh) = (totals.components.len(), totals.heads.len());
    let mut tensors = vec![
        TensorOut::f32(
            "mean_contribution",
            &[d, nc],
            &totals.means(&totals.contribution, nc),
        ),
        TensorOut::f32("mean_pre", &[d], &totals.means(&totals.sum_pre, 1)),
        TensorOut::i64(
            "fire_count",
            &[d],
            &totals
                .fire_count
                .iter()
                .map(|&c| c as i64)
                .collect::<Vec<_>>(),
        ),
    ];
    if nh > 0 {
        let means = totals.means(&totals.head_contribution, nh);
        tensors.push(TensorOut::f32("mean_head_contribution", &[d, nh], &means));
    }
    for hook in &totals.hooks {
        let means = totals.means(&hook.parts, HOOK_PARTS.len());
        tensors.push(TensorOut::f32(
            &format!("{}.parts", hook.hook),
            &[d, HOOK_PARTS.len()],
            &means,
        ));
    }
    let metadata = HashMap::from([
        ("components".to_string(), totals.components.join(",")),
        ("heads".to_string(), totals.heads.join(",")),
        ("hook_parts".to_string(), HOOK_PARTS.join(",")),
    ]);
    write_safetensors(path, &tensors, Some(metadata))
}

fn attribution_json(
    totals: &Totals,
    groups: &[GroupReport],
    c: &ReportContext<'_>,
) -> serde_json::Value {
    let r = c.request;
    let mut value = json!({
        "sae": c.sae.dir.display().to_string(),
        "provenance": c.sae.provenance,
        "caches": c.cache_files.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
        "residual": c.resid,
        "rows": totals.rows,
        "dropped_beyond_cap": totals.dropped,
        "components": totals.components,
        "heads": totals.heads,
        "completeness": totals.completeness(),
        "null": {
            "draws": r.null.draws,
            "seed": r.null.seed,
            "alpha": r.null.alpha,
            "matching": "each member's partner drawn from the same decile of firing count among live latents, none of the group",
            "families": "components; heads; per transcoded hook its parts and its upstream features; mechanism similarity — each group's p compared with alpha / families",
        },
        "seconds": c.seconds,
        "groups": groups,
    });
    if !totals.heads.is_empty() {
        value["head_completeness"] = json!({
            "max_rel_error": totals.head_gaps.max_rel_error(),
            "rms_rel_error": totals.head_gaps.rms_rel_error(),
        });
    }
    value["transcoders"] = json!(totals
        .hooks
        .iter()
        .zip(&r.transcoders)
        .map(|(h, (_, dir))| json!({
            "hook": h.hook,
            "transcoder": dir.display().to_string(),
            "parts": HOOK_PARTS,
            "completeness": {
                "max_rel_error": h.gaps.max_rel_error(),
                "rms_rel_error": h.gaps.rms_rel_error(),
            },
        }))
        .collect::<Vec<_>>());
    value
}

fn significant_names(g: &GroupReport) -> Vec<String> {
    let writers = g.significant_writers().map(|w| w.name.clone());
    let upstream = g
        .significant_upstream()
        .map(|u| format!("{}#{}", u.hook, u.feature));
    writers.chain(upstream).collect()
}

fn index_page(groups: &[GroupReport], totals: &Totals, c: &ReportContext<'_>) -> String {
    let comp = totals.completeness();
    let mut body = format!(
        "<h1>Attribution</h1><p>{} rows of {}; {} (row, latent) pairs; parts sum to the pre-activation within {:.1e} (max) / {:.1e} (RMS) relative.</p>",
        comp.rows,
        escape(c.resid),
        comp.pairs,
        comp.max_rel_error,
        comp.rms_rel_error
    );
    body.push_str("<table><tr><th>group</th><th>members</th><th>top writer (share, z)</th><th>similarity (p)</th><th>significant</th></tr>");
    for g in groups {
        let top = g
            .components
            .iter()
            .filter(|w| w.name != "bias")
            .max_by(|a, b| {
                a.z.unwrap_or(f64::INFINITY)
                    .total_cmp(&b.z.unwrap_or(f64::INFINITY))
            });
        let top = top.map_or(String::new(), |w| {
            format!("{} ({:.3}, {})", escape(&w.name), w.share, fmt_z(w.z))
        });
        let _ = write!(
            body,
            "<tr><td class=l><a href=\"{}\">{}</a></td><td>{}</td><td class=l>{top}</td><td>{:.3} ({:.3})</td><td class=l>{}</td></tr>",
            page_name(&g.id),
            escape(&g.id),
            g.members.len(),
            g.mechanism_similarity.value,
            g.mechanism_similarity.p,
            escape(&significant_names(g).join(", "))
        );
    }
    body.push_str("</table>");
    page("Attribution", &body)
}

fn fmt_z(z: Option<f64>) -> String {
    z.map_or("∞".into(), |z| format!("z {z:.1}"))
}

/// A share as a cell shaded by its size (blue up, red down), for the members × components map.
fn shade(v: f64) -> String {
    let a = (v.abs().min(1.0) * 0.85).clamp(0.0, 0.85);
    let colour = if v >= 0.0 {
        (60, 110, 200)
    } else {
        (200, 70, 60)
    };
    format!(
        "<td style=\"background:rgba({},{},{},{a:.2})\">{v:.2}</td>",
        colour.0, colour.1, colour.2
    )
}

/// A column beside the writers: its heading, and its cell for the writer at an index.
type ExtraColumn<'a> = (&'a str, &'a dyn Fn(usize) -> String);

/// The `top` writers by share, with `extra`'s column if given.
fn writers_table(
    title: &str,
    writers: &[Writer],
    top: usize,
    extra: Option<ExtraColumn<'_>>,
) -> String {
    let mut sorted: Vec<(usize, &Writer)> = writers.iter().enumerate().collect();
    sorted.sort_by(|a, b| b.1.share.total_cmp(&a.1.share));
    let mut s = format!("<h2>{title}</h2><table><tr><th>writer</th><th>share</th><th>null mean</th><th>z</th><th>p</th>");
    if let Some((heading, _)) = extra {
        let _ = write!(s, "<th>{heading}</th>");
    }
    s.push_str("</tr>");
    for (at, w) in sorted.into_iter().take(top) {
        let _ = write!(
            s,
            "<tr><td class=l>{}{}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td><td>{:.4}</td>",
            escape(&w.name),
            if w.significant { " ✱" } else { "" },
            w.share,
            w.null_mean,
            fmt_z(w.z),
            w.p
        );
        if let Some((_, cell)) = extra {
            let _ = write!(s, "<td class=l>{}</td>", cell(at));
        }
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

/// The members × components map: each member's terms over its summed pre-activation.
fn member_map(g: &GroupReport, totals: &Totals) -> String {
    let mut s = String::from("<h2>Members × components</h2><p>Each member's summed terms over its firing rows divided by its summed pre-activation (blue: writes it up, red: down).</p><table class=map><tr><th>member</th>");
    for n in &totals.components[..totals.components.len() - 1] {
        let short = n
            .replace("blocks.", "")
            .replace(".hook_", " ")
            .replace("_out", "");
        let _ = write!(s, "<th>{}</th>", escape(&short));
    }
    s.push_str("</tr>");
    for (i, profile) in &g.member_profiles {
        let _ = write!(s, "<tr><td>{i}</td>");
        profile.iter().for_each(|v| s.push_str(&shade(*v)));
        s.push_str("</tr>");
    }
    s.push_str("</table>");
    s
}

/// The heads by share, each with the tokens where it writes the most into this group's
/// members (into every selected latent when the group was not known before the pass).
fn heads_table(g: &GroupReport, totals: &Totals, c: &ReportContext<'_>) -> String {
    let mine = totals.group_head_tokens(&g.members);
    let tokens = |at: usize| {
        let sums = match mine {
            Some(group) => group.tokens.heads.get(at),
            None => totals.head_tokens.heads.get(at),
        };
        top_token_sums(sums, 5)
            .iter()
            .map(|(t, _)| escape(&format!("{:?}", c.token(*t))))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let title = match mine {
        Some(_) => "tokens where it writes most into these members",
        None => "tokens where it writes most (into every latent)",
    };
    writers_table("Top heads", &g.heads, 12, Some((title, &tokens)))
}

fn group_page(g: &GroupReport, totals: &Totals, c: &ReportContext<'_>) -> String {
    let s = &g.mechanism_similarity;
    let mut body = format!(
        "<h1>{}</h1><p>{} members ({} fire), {} (row, member) pairs. Significant (✱) means p &lt; {:.4} (--alpha over the group's families). Mechanism similarity {:.3} (null {:.3}, {}, p {:.4}).</p>",
        escape(&g.id), g.members.len(), g.live_members, g.rows, g.alpha, s.value, s.null_mean, fmt_z(s.z), s.p
    );
    body.insert_str(0, MAP_STYLE);
    body.push_str(&writers_table(
        "Components",
        &g.components,
        g.components.len(),
        None,
    ));
    body.push_str(&member_map(g, totals));
    body.push_str("<h2>Members' tokens</h2><table><tr><th>member</th><th>most frequent tokens where it fires</th></tr>");
    for (i, _) in &g.member_profiles {
        let tokens = c.tokens(totals.latent_tokens.get(*i));
        let _ = write!(body, "<tr><td>{i}</td><td class=l>{tokens}</td></tr>");
    }
    body.push_str("</table>");
    if !g.heads.is_empty() {
        body.push_str(&heads_table(g, totals, c));
    }
    for hook in &totals.hooks {
        let _ = write!(body, "<h2>Upstream features of {}</h2><table><tr><th>feature</th><th>share</th><th>null mean</th><th>z</th><th>p</th><th>tokens where it fires</th></tr>", escape(&hook.hook));
        for u in g.upstream.iter().filter(|u| u.hook == hook.hook) {
            let _ = write!(
                body,
                "<tr><td>{}{}</td><td>{:.4}</td><td>{:.4}</td><td>{}</td><td>{:.4}</td><td class=l>{}</td></tr>",
                u.feature,
                if u.significant { " ✱" } else { "" },
                u.share,
                u.null_mean,
                fmt_z(u.z),
                u.p,
                c.tokens(hook.feature_tokens.get(&u.feature))
            );
        }
        body.push_str("</table>");
        let parts: Vec<_> = g
            .hook_parts
            .iter()
            .filter(|p| p.hook == hook.hook)
            .map(|p| p.writer.clone())
            .collect();
        body.push_str(&writers_table(
            &format!("Parts of {}", escape(&hook.hook)),
            &parts,
            parts.len(),
            None,
        ));
    }
    body.push_str("<p><a href=\"index.html\">all groups</a></p>");
    page(&g.id, &body)
}

/// Adds a link to this report at the end of the categories report's index (once).
fn link_from_categories(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let index = dir.join("index.html");
    let Ok(text) = std::fs::read_to_string(&index) else {
        return Ok(());
    };
    let target =
        std::path::absolute(out.join("index.html")).unwrap_or_else(|_| out.join("index.html"));
    let link = format!(
        "{LINK_MARK}<p>What writes these categories: <a href=\"file://{}\">attribution</a></p>",
        escape(&target.display().to_string())
    );
    let kept: Vec<&str> = text.lines().filter(|l| !l.contains(LINK_MARK)).collect();
    let mut updated = kept.join("\n");
    match updated.rfind("</body>") {
        Some(at) => updated.insert_str(at, &format!("{link}\n")),
        None => updated.push_str(&link),
    }
    updated.push('\n');
    write_atomic(&index, updated.as_bytes())
}
