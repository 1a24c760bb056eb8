//! `sae attribute SAE CACHE… --out DIR`: what writes each latent and each group of latents.
//! Flags become an [`AttributeRequest`]; the job (run::attribute) runs the pass, tests the
//! groups and writes the report; this prints each group's significant writers.

use std::path::PathBuf;

use anyhow::{anyhow, bail};
use clap::Args;

use super::GpuArgs;
use crate::analysis::attribute::{GroupReport, NullConfig};
use crate::run::attribute::{run_attribute, AttributeRequest, GroupSources};
use crate::sae::forward::DEFAULT_CAP;

#[derive(Args, Debug)]
pub struct AttributeArgs {
    /// SAE directory: sparsify, SAELens, or a `sae train` run directory.
    sae: PathBuf,
    /// Component caches (scripts/cache_components.py): files or directories.
    #[arg(required = true)]
    caches: Vec<PathBuf>,
    /// Output directory: attribution.json, attribution.safetensors, index.html, group pages.
    #[arg(long)]
    out: PathBuf,
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
    /// A group of latents, comma-separated. Repeatable: each is one group.
    #[arg(long)]
    members: Vec<String>,
    /// A `sae categories` output directory: every category is a group.
    #[arg(long)]
    categories: Option<PathBuf>,
    /// With --categories: only this feature's category.
    #[arg(long)]
    feature: Option<usize>,
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
    /// Rows per GPU batch.
    #[arg(long, default_value_t = 256)]
    batch_size: usize,
    /// ReLU / JumpReLU SAEs: latents kept per row.
    #[arg(long, default_value_t = DEFAULT_CAP)]
    cap: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    gpu: GpuArgs,
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

fn request(args: &AttributeArgs) -> anyhow::Result<AttributeRequest> {
    if args.null_draws < 10 {
        bail!(
            "--null-draws {}: at least 10 draws are needed for a null",
            args.null_draws
        );
    }
    if !(args.alpha > 0.0 && args.alpha < 1.0) {
        bail!("--alpha {}: must lie in (0, 1)", args.alpha);
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    let members = args
        .members
        .iter()
        .map(|m| parse_members(m))
        .collect::<anyhow::Result<Vec<_>>>()?;
    if members.is_empty() && args.categories.is_none() && args.random_groups == 0 {
        bail!("no groups: give --members, --categories DIR or --random-groups N");
    }
    Ok(AttributeRequest {
        sae: args.sae.clone(),
        hookpoint: args.hookpoint.clone(),
        caches: args.caches.clone(),
        out: args.out.clone(),
        model: args.model.clone(),
        transcoders: args
            .transcoder
            .iter()
            .map(|t| parse_transcoder(t))
            .collect::<anyhow::Result<_>>()?,
        groups: GroupSources {
            members,
            categories: args.categories.clone(),
            feature: args.feature,
            random: args.random_groups,
            random_size: args.random_size,
        },
        null: NullConfig {
            draws: args.null_draws,
            seed: args.seed,
            alpha: args.alpha,
        },
        tokenizer: args.tokenizer.clone(),
        batch_rows: args.batch_size,
        cap: args.cap,
        adapter: args.gpu.request(),
        quiet: args.quiet,
    })
}

fn print_group(g: &GroupReport) {
    let mut found: Vec<String> = g
        .components
        .iter()
        .chain(&g.heads)
        .filter(|w| w.significant)
        .map(|w| {
            format!(
                "{} {:.3} (z {})",
                w.name,
                w.share,
                w.z.map_or("∞".into(), |z| format!("{z:.1}"))
            )
        })
        .collect();
    found.extend(
        g.upstream
            .iter()
            .filter(|u| u.significant)
            .map(|u| format!("{}#{} {:.3}", u.hook, u.feature, u.share)),
    );
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

pub fn run(args: AttributeArgs) -> anyhow::Result<()> {
    let request = request(&args)?;
    let report = run_attribute(&request)?;
    let c = report.totals.completeness();
    println!(
        "{} rows, {} (row, latent) pairs in {:.1} s; parts sum to h within {:.1e} (max relative)",
        c.rows, c.pairs, report.seconds, c.max_rel_error
    );
    for g in &report.groups {
        print_group(g);
    }
    println!("report: {}", request.out.join("index.html").display());
    Ok(())
}
