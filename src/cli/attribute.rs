//! `sae attribute SAE CACHE… --out DIR`: what writes each latent and each group of latents.
//! Flags become an [`AttributeRequest`]; the job (run::attribute) runs the pass, tests the
//! groups and writes the report; this prints each group's significant writers.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::{Args, Subcommand};

use super::GpuArgs;
use crate::analysis::attribute::{GroupReport, NullConfig};
use crate::data::parts::Part;
use crate::run::attribute::{
    merge_attribute, run_attribute, AttributeReport, AttributeRequest, GroupSources,
};
use crate::sae::forward::DEFAULT_CAP;

#[derive(Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct AttributeArgs {
    #[command(subcommand)]
    merge: Option<AttributeCommand>,
    /// SAE directory: sparsify, SAELens, or a `sae train` run directory.
    sae: Option<PathBuf>,
    /// Component caches (scripts/cache_components.py): files or directories.
    caches: Vec<PathBuf>,
    /// A sparsify run saved for several hookpoints: the one to use.
    #[arg(long)]
    hookpoint: Option<String>,
    /// writers.safetensors (o_proj per block, config.json beside it): per-head terms, from the
    /// cache's blocks.N.attn.hook_z.
    #[arg(long)]
    model: Option<PathBuf>,
    /// HOOK=TRANSCODER: split blocks.N.hook_mlp_out into the transcoder's features, skip,
    /// bias and error (the cache must hold blocks.N.ln2.hook_normalized). Repeatable.
    #[arg(long, value_name = "HOOK=DIR")]
    transcoder: Vec<String>,
    /// Only part I of N of the cache files (sorted by path, balanced by rows): writes the
    /// part's sums into --out for `sae attribute merge`. Groups given here also get their
    /// heads' tokens summed (for their pages); the merge tests the groups it is given.
    #[arg(long, value_name = "I/N")]
    part: Option<Part>,
    /// Rows per GPU batch.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// ReLU / JumpReLU SAEs: latents kept per row.
    #[arg(long, default_value_t = DEFAULT_CAP)]
    cap: usize,
    #[command(flatten)]
    groups: GroupArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Subcommand, Debug)]
enum AttributeCommand {
    /// Add the sums of `sae attribute --part I/N` outputs into one pass's, then test the
    /// groups and write the report.
    Merge {
        /// The parts' output directories.
        #[arg(required = true)]
        parts: Vec<PathBuf>,
        #[command(flatten)]
        groups: GroupArgs,
    },
}

/// The groups, their null and the report (a pass's or a merge's).
#[derive(Args, Debug)]
struct GroupArgs {
    /// Output directory: attribution.json, attribution.safetensors, index.html, group pages
    /// (a part's sums with --part). Required.
    #[arg(long)]
    out: Option<PathBuf>,
    /// A group of latents, comma-separated. Repeatable: each is one group.
    #[arg(long)]
    members: Vec<String>,
    /// A `sae categories` output directory: every category is a group.
    #[arg(long)]
    categories: Option<PathBuf>,
    /// With --categories: only this feature's category.
    #[arg(long, requires = "categories", conflicts_with = "top")]
    feature: Option<usize>,
    /// With --categories: only the N best-ranked significant categories.
    #[arg(long, requires = "categories")]
    top: Option<usize>,
    /// Also attribute this many random groups of live latents (the calibration: at the
    /// level used, about 1 in 100 should show a significant writer).
    #[arg(long, default_value_t = 0)]
    random_groups: usize,
    /// The random groups' size (default: the median size of the other groups, else 8).
    #[arg(long)]
    random_size: Option<usize>,
    /// Random matched groups per group's null.
    #[arg(long, default_value_t = 1000)]
    null_draws: usize,
    /// The family-wise level (divided by the number of families each group is tested in).
    #[arg(long, default_value_t = 0.01)]
    alpha: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// tokenizer.json: tokens shown as text in the pages.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

fn parse_members(text: &str) -> anyhow::Result<Vec<usize>> {
    text.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| {
            s.trim()
                .parse()
                .map_err(|_| anyhow!("--members {text}: '{s}' is not a latent id"))
        })
        .collect()
}

fn parse_transcoder(text: &str) -> anyhow::Result<(String, PathBuf)> {
    match text.split_once('=') {
        Some((hook, dir)) if !hook.is_empty() && !dir.is_empty() => {
            Ok((hook.to_string(), PathBuf::from(dir)))
        }
        _ => bail!("--transcoder {text}: expected HOOK=DIR, e.g. blocks.14.hook_mlp_out=runs/tc"),
    }
}

/// The request of a pass (`part_of_job`: groups may be left to the merge) or of a merge.
fn request(
    args: &AttributeArgs,
    g: &GroupArgs,
    part_of_job: bool,
) -> anyhow::Result<AttributeRequest> {
    let Some(out) = g.out.clone() else {
        bail!("--out DIR is required (where the report, or a part's sums, go)");
    };
    if g.null_draws < 10 {
        bail!(
            "--null-draws {}: at least 10 draws are needed for a null",
            g.null_draws
        );
    }
    if !(g.alpha > 0.0 && g.alpha < 1.0) {
        bail!("--alpha {}: must lie in (0, 1)", g.alpha);
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let members = g
        .members
        .iter()
        .map(|m| parse_members(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if !part_of_job && members.is_empty() && g.categories.is_none() && g.random_groups == 0 {
        bail!("no groups: give --members, --categories DIR or --random-groups N");
    }
    Ok(AttributeRequest {
        sae: args.sae.clone().unwrap_or_default(),
        hookpoint: args.hookpoint.clone(),
        caches: args.caches.clone(),
        out,
        model: args.model.clone(),
        transcoders: args
            .transcoder
            .iter()
            .map(|t| parse_transcoder(t))
            .collect::<anyhow::Result<_>>()?,
        groups: GroupSources {
            members,
            categories: g.categories.clone(),
            feature: g.feature,
            top: g.top,
            random: g.random_groups,
            random_size: g.random_size,
        },
        null: NullConfig {
            draws: g.null_draws,
            seed: g.seed,
            alpha: g.alpha,
        },
        tokenizer: g.tokenizer.clone(),
        batch_rows: args.batch_size,
        cap: args.cap,
        adapter: args.gpu.request(),
        quiet: g.quiet,
        part: args.part,
    })
}

/// Each significant writer of a group, as printed (upstream features at most 5, then a count).
fn significant_writers(g: &GroupReport) -> Vec<String> {
    let mut found: Vec<String> = g
        .significant_writers()
        .map(|w| {
            format!(
                "{} {:.3} (z {})",
                w.name,
                w.share,
                w.z.map_or("∞".into(), |z| format!("{z:.1}"))
            )
        })
        .collect();
    let upstream: Vec<String> = g
        .significant_upstream()
        .map(|u| format!("{}#{} {:.3}", u.hook, u.feature, u.share))
        .collect();
    let more = upstream.len().saturating_sub(5);
    found.extend(upstream.into_iter().take(5));
    if more > 0 {
        found.push(format!("{more} more upstream features"));
    }
    found
}

fn print_group(g: &GroupReport) {
    let found = significant_writers(g);
    let s = &g.mechanism_similarity;
    let similarity = match s.significant {
        true => format!("; one mechanism (similarity {:.2}, p {:.3})", s.value, s.p),
        false => String::new(),
    };
    let writers = match found.is_empty() {
        true => "no significant writer".to_string(),
        false => found.join(", "),
    };
    println!(
        "{:<14} {:>3} members: {writers}{similarity}",
        g.id,
        g.members.len()
    );
}

fn print_report(report: &AttributeReport, out: &std::path::Path) {
    let c = report.totals.completeness();
    println!(
        "{} rows, {} (row, latent) pairs in {:.1} s; parts sum to h within {:.1e} (max relative)",
        c.rows, c.pairs, report.seconds, c.max_rel_error
    );
    if report.totals.dropped > 0 {
        println!(
            "warning: {} activations beyond --cap were left out of every sum (raise --cap)",
            report.totals.dropped
        );
    }
    // The calibration groups in one line: only those flagged are named.
    let (random, asked): (Vec<&GroupReport>, Vec<&GroupReport>) = report
        .groups
        .iter()
        .partition(|g| g.id.starts_with("random-"));
    asked.iter().for_each(|g| print_group(g));
    if !random.is_empty() {
        let flagged: Vec<&str> = random
            .iter()
            .filter(|g| !significant_writers(g).is_empty() || g.mechanism_similarity.significant)
            .map(|g| g.id.as_str())
            .collect();
        println!(
            "random groups: {} of {} with a significant writer or similarity{}",
            flagged.len(),
            random.len(),
            match flagged.is_empty() {
                true => String::new(),
                false => format!(" ({})", flagged.join(", ")),
            }
        );
    }
    match &report.part {
        Some(p) => println!(
            "part {}/{}: {} of {} rows; sums in {} (combine with `sae attribute merge`)",
            p.index,
            p.count,
            p.rows,
            p.total_rows,
            out.display()
        ),
        None => println!("report: {}", out.join("index.html").display()),
    }
}

pub fn run(args: AttributeArgs) -> anyhow::Result<()> {
    if let Some(AttributeCommand::Merge { parts, groups }) = &args.merge {
        let request = request(&args, groups, false)?;
        let report = merge_attribute(parts, &request)?;
        println!("merged {} parts", parts.len());
        print_report(&report, &request.out);
        return Ok(());
    }
    const USAGE: &str =
        "usage: sae attribute SAE CACHE… --out DIR (or sae attribute merge PARTS… --out DIR)";
    if args.sae.is_none() || args.caches.is_empty() {
        bail!("{USAGE}");
    }
    let request = request(&args, &args.groups, args.part.is_some())?;
    let report = run_attribute(&request)?;
    print_report(&report, &request.out);
    Ok(())
}
