//! `sae categories SAE [SHARDS…] --out DIR`: from one feature to the category it belongs to and
//! the structure that produces it. Flags become a [`CategoriesRequest`], the job
//! (run::categories) runs the pipeline and writes the report, and this prints.

use std::path::PathBuf;

use clap::Args;

use super::args::InputArgs;
use super::{GpuArgs, MatmulArgs};
use crate::analysis::categories::cluster::LeidenQuality;
use crate::analysis::categories::config::{CategoriesConfig, Method};
use crate::analysis::categories::cooccurrence::{CooccurrenceMeasure, CooccurrenceUnit};
use crate::analysis::categories::{CategoriesResult, RankBy};
use crate::run::categories::{
    categories, CategoriesOutcome, CategoriesRequest, CooccurrenceRequest,
};

#[derive(Args, Debug)]
pub struct CategoriesArgs {
    /// The SAE, the shards (files, directories or globs) to study the top categories on, and
    /// with `--part I/N` this part's co-occurrence count only (a later run with
    /// --cooccurrence-from sums the parts and finishes the categories).
    #[command(flatten)]
    input: InputArgs,
    /// Output directory: categories.json, categories.safetensors, index.html, plots/.
    #[arg(long)]
    out: PathBuf,
    /// Neighbours kept per feature in the decoder-cosine kNN graph.
    #[arg(long, default_value_t = 16)]
    neighbours: usize,
    /// Decoder edges need at least this cosine (default: the larger of 3/√d_in and
    /// √(2 ln d_sae / d_in), about the best cosine a feature has with random directions).
    #[arg(long)]
    min_cosine: Option<f32>,
    #[arg(long, value_enum, default_value_t = Method::Leiden)]
    method: Method,
    /// What Leiden optimises.
    #[arg(long, value_enum, default_value_t = LeidenQuality::Cpm)]
    quality: LeidenQuality,
    /// Leiden resolution(s) (CPM: the internal edge density a category must exceed;
    /// modularity: γ). Several, comma-separated, give a hierarchy with parent links; the
    /// first is the one categories come from.
    #[arg(long, value_delimiter = ',', default_value = "0.05")]
    resolution: Vec<f64>,
    /// Engels' mode: link each feature to this many of its nearest neighbours…
    #[arg(long, default_value_t = 2)]
    link_top: usize,
    /// …when their decoder cosine exceeds this.
    #[arg(long, default_value_t = 0.5)]
    link_cosine: f32,
    /// Spectral mode: the number of clusters.
    #[arg(long)]
    n_clusters: Option<usize>,
    /// Weight w of co-occurrence in the graph's edges, 1 − (1 − decoder)·(1 − w·co-occurrence),
    /// over the union of the decoder kNN graph and the co-occurrence kNN graph (default: 1 with
    /// shards, 0 without; 0 turns co-occurrence off).
    #[arg(long)]
    cooccurrence_weight: Option<f64>,
    /// The co-occurrence statistic (default phi).
    #[arg(long, value_enum)]
    cooccurrence: Option<CooccurrenceMeasure>,
    /// What counts as firing together: the same row (token; the default), the same chunk of
    /// --chunk consecutive rows, or the same document (--document-column).
    #[arg(long, value_enum)]
    cooccurrence_unit: Option<CooccurrenceUnit>,
    /// Consecutive rows per co-occurrence chunk (in file order, across shard boundaries;
    /// default 256).
    #[arg(long)]
    chunk: Option<usize>,
    /// With --cooccurrence-unit document: the shards' per-row integer tensor saying which
    /// document (or context window) each row belongs to.
    #[arg(long)]
    document_column: Option<String>,
    /// Co-occurrence partners kept per feature: the co-occurrence kNN graph (default 16).
    #[arg(long)]
    partners: Option<usize>,
    /// Pairs seen together in fewer units get no co-occurrence affinity (default 3).
    #[arg(long)]
    min_joint: Option<u32>,
    /// A feature fires in a unit when one of its activations there exceeds this (default 0).
    #[arg(long)]
    fires_above: Option<f32>,
    /// GPU memory the co-occurrence counts may take at once, in MiB; a larger d_sae² is
    /// counted in several passes over the shards.
    #[arg(long, default_value_t = 1024)]
    cooccurrence_memory: u64,
    /// Random groups drawn per category size to test each category against chance.
    #[arg(long, default_value_t = 200)]
    null_draws: usize,
    /// Seed of Leiden, spectral k-means and the reservoir of samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print this feature's category: its members ranked by how strongly they tie to it
    /// (decoder cosine, co-occurrence, the graph's blend), significance, structure, tokens.
    #[arg(long)]
    feature: Option<usize>,
    /// Match features with another SAE of the same d_in by maximum decoder cosine (parents,
    /// children, novel features) into across.json.
    #[arg(long)]
    across: Option<PathBuf>,
    /// Reconstructions kept per category for PCA and the indices.
    #[arg(long, default_value_t = 20000)]
    samples: usize,
    /// Categories studied on the shards and given a page of the report.
    #[arg(long, default_value_t = 20)]
    top: usize,
    /// What ranks the categories: `null` (edge density against random groups of the same
    /// size: z-score, significant ones first), `subspace` (members − PR) or `engels`.
    #[arg(long, value_enum, default_value_t = RankBy::Null)]
    rank_by: RankBy,
    /// The model's residual-writing weights (Hugging Face names; config.json beside it).
    #[arg(long)]
    model: Option<PathBuf>,
    /// tokenizer.json, to show tokens as text.
    #[arg(long)]
    tokenizer: Option<PathBuf>,
    /// A `sae hist --tokenizer` output directory, for each member's top activating contexts.
    #[arg(long)]
    hist: Option<PathBuf>,
    /// Directories of `--part I/N` runs: use the sum of their co-occurrence counts instead of
    /// counting on the shards (the same SAE and co-occurrence flags as the parts).
    #[arg(long, num_args = 1.., value_name = "PART_DIRS")]
    cooccurrence_from: Vec<PathBuf>,
    /// Token families to score the categories against: JSON, name → list of token strings or
    /// {"regex": "…"}; writes families.json (needs --tokenizer and shards with tokens).
    #[arg(long)]
    families: Option<PathBuf>,
    /// Rows (and features) per GPU batch.
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    matmul: MatmulArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

impl CategoriesArgs {
    fn request(&self) -> anyhow::Result<CategoriesRequest> {
        let usage = "usage: sae categories SAE [SHARDS…] --out DIR";
        Ok(CategoriesRequest {
            inputs: self.input.inputs(&self.gpu, self.matmul.matmul, usage)?,
            out: self.out.clone(),
            config: CategoriesConfig {
                neighbours: self.neighbours,
                min_cosine: self.min_cosine,
                method: self.method,
                quality: self.quality,
                resolution: self.resolution.clone(),
                link_top: self.link_top,
                link_cosine: self.link_cosine,
                n_clusters: self.n_clusters,
                cooccurrence: None,
                seed: self.seed,
                feature: self.feature,
                samples: self.samples,
                top: self.top,
                rank_by: self.rank_by,
                null_draws: self.null_draws,
                batch_size: self.batch_size,
                matmul: self.matmul.matmul,
            },
            cooccurrence: CooccurrenceRequest {
                weight: self.cooccurrence_weight,
                measure: self.cooccurrence,
                unit: self.cooccurrence_unit,
                chunk: self.chunk,
                document_column: self.document_column.clone(),
                partners: self.partners,
                min_joint: self.min_joint,
                fires_above: self.fires_above,
                memory_mib: self.cooccurrence_memory,
            },
            cooccurrence_from: self.cooccurrence_from.clone(),
            model: self.model.clone(),
            tokenizer: self.tokenizer.clone(),
            hist: self.hist.clone(),
            families: self.families.clone(),
            across: self.across.clone(),
            quiet: self.quiet,
        })
    }
}

pub fn run(args: CategoriesArgs) -> anyhow::Result<()> {
    let request = args.request()?;
    let (result, tokens) = match categories(&request)? {
        CategoriesOutcome::Part { info, units, pairs } => {
            if !args.quiet {
                println!(
                    "part {}/{}: {} of {} shards, {} rows, {units} units, {pairs} pairs seen together → {}",
                    info.index,
                    info.count,
                    info.shards.len(),
                    info.total_shards,
                    info.rows,
                    args.out.display()
                );
            }
            return Ok(());
        }
        CategoriesOutcome::Report(report) => (report.result, report.tokens),
    };
    let token_text = |t: i32| tokens.text(t);
    if !args.quiet {
        print_summary(&args, &result, &token_text);
    }
    if !result.families.is_empty() {
        print_families(&result);
    }
    if let Some(feature) = args.feature {
        print_feature(feature, &result, &args.out, &token_text);
    }
    Ok(())
}

fn print_families(result: &CategoriesResult) {
    println!("token families: specific features → best category (precision, recall)");
    for f in &result.families {
        match (f.category_rank, f.category_size) {
            (Some(rank), Some(size)) => println!(
                "  {:<16} {:>5} tokens  {:>4} specific  → #{rank} ({size} features{}): {} of them, precision {:.2}, recall {:.2}",
                f.family,
                f.tokens,
                f.specific.len(),
                if f.significant == Some(true) { ", significant" } else { "" },
                f.found,
                f.precision,
                f.recall
            ),
            _ => println!(
                "  {:<16} {:>5} tokens  {:>4} specific  → no category holds one",
                f.family,
                f.tokens,
                f.specific.len()
            ),
        }
    }
}

fn print_summary(
    args: &CategoriesArgs,
    result: &CategoriesResult,
    token_text: &dyn Fn(i32) -> String,
) {
    let found = &result.categories;
    let ranked = found.iter().filter(|c| c.size >= 3).count();
    let significant = found.iter().filter(|c| c.significant == Some(true)).count();
    println!(
        "{} categories ({ranked} of ≥ 3 features, {significant} denser than chance) among {} features → {}",
        found.len(),
        result.d_sae,
        args.out.join("index.html").display()
    );
    for c in found.iter().take(5) {
        let tokens: Vec<String> = c
            .top_tokens
            .iter()
            .take(5)
            .map(|t| format!("{:?}", token_text(t.token)))
            .collect();
        let engels = c.structure.as_ref().map_or(String::new(), |s| {
            format!("  (1−M)·S {:.3}", s.engels_score)
        });
        let null = c.null.map_or(String::new(), |n| {
            format!(
                "  z {:5.1} p {:.3}{}",
                n.null_z,
                n.null_p,
                if c.significant == Some(true) {
                    ""
                } else {
                    " (chance)"
                }
            )
        });
        println!(
            "  #{:<3} {:>4} features{null}  score {:6.2}  PR {:5.2}  mean cos {:.3}{engels}  {}",
            c.rank,
            c.size,
            c.shape.subspace_score,
            c.shape.participation_ratio,
            c.shape.mean_pairwise_cosine,
            tokens.join(" ")
        );
    }
}

/// The seed's question for one feature: its category, the members ranked by how strongly they
/// tie to it, whether the category beats chance, its structure on data and its writers.
fn print_feature(
    feature: usize,
    result: &CategoriesResult,
    out: &std::path::Path,
    token_text: &dyn Fn(i32) -> String,
) {
    let Some(c) = result.category_of(feature) else {
        println!("feature {feature} belongs to no category (no neighbours in the graph)");
        return;
    };
    let significance = c.significance();
    println!(
        "feature {feature}: category #{} of {} features, {significance}",
        c.rank, c.size
    );
    println!(
        "  shape: structure score {:.2} (PR {:.2}), mean decoder cosine {:.3}",
        c.shape.subspace_score, c.shape.participation_ratio, c.shape.mean_pairwise_cosine
    );
    if let Some(s) = &c.structure {
        println!(
            "  on data: {} rows fired, PCA variance {:?}, (1−M)·S {:.3}, circle residual {:.3}",
            s.rows_fired,
            s.pca_variance
                .iter()
                .map(|v| format!("{v:.2}"))
                .collect::<Vec<_>>(),
            s.engels_score,
            s.circle.relative_residual
        );
        println!("  cyclic order: {:?}", s.cyclic_order);
    }
    if !c.top_tokens.is_empty() {
        let tokens: Vec<String> = c
            .top_tokens
            .iter()
            .take(10)
            .map(|t| format!("{:?}×{}", token_text(t.token), t.count))
            .collect();
        println!("  top tokens: {}", tokens.join(" "));
    }
    if let Some(w) = &c.writers {
        if let Ok(text) = serde_json::to_string(w) {
            let short: String = text.chars().take(300).collect();
            println!("  writers: {short}…");
        }
    }
    println!("  members by tie to {feature}:   edge   co-occ.  decoder cos   fires");
    for t in result.member_ties(feature) {
        let cooc = t
            .cooccurrence
            .map_or("      –".to_string(), |v| format!("{v:7.3}"));
        let fires = t.fires.map_or(String::new(), |f| f.to_string());
        println!(
            "  {:>8}               {:6.3}  {cooc}     {:+.3}     {fires}",
            t.feature, t.edge, t.decoder_cosine
        );
    }
    println!(
        "  report page: {}",
        out.join(format!("feature-{feature}.html")).display()
    );
}
