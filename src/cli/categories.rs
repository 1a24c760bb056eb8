//! `sae categories SAE [SHARDS…] --out DIR`: from one feature to the category it belongs to and
//! the structure that produces it. Flags become a [`CategoriesConfig`], the pipeline runs in
//! `analysis::categories::pipeline`, the report module writes the files, and this prints.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use clap::Args;

use super::eval::progress;
use super::GpuArgs;
use crate::analysis::categories::cluster::LeidenQuality;
use crate::analysis::categories::cooccurrence::pair_counts;
use crate::analysis::categories::cooccurrence::{
    CooccurrenceMeasure, CooccurrenceUnit, PartnerConfig,
};
use crate::analysis::categories::families::load_families;
use crate::analysis::categories::pipeline::{
    find_categories, shard_passes, CategoriesConfig, CategoriesInputs, CategoriesResult,
    CooccurrenceConfig, Method,
};
use crate::analysis::categories::report::{
    prepare_output_dir, read_contexts, write_outputs, OutputContext,
};
use crate::analysis::categories::writers::load_model;
use crate::analysis::categories::RankBy;
use crate::analysis::contexts::load_tokenizer;
use crate::data::column::RowColumn;
use crate::data::parts::{split, Part};
use crate::data::{expand_inputs, open_shards};
use crate::run::parts::{merge_cooccurrence_parts, save_cooccurrence_part};
use crate::sae::formats::{load_sae, load_sae_at};
use crate::sae::forward::{GpuSae, DEFAULT_CAP};
use crate::sae::params::SaeParams;

#[derive(Args, Debug)]
pub struct CategoriesArgs {
    /// SAE directory: sparsify, SAELens, or a `sae train` run directory.
    sae: PathBuf,
    /// Activation shards (files, directories or globs) to study the top categories on.
    shards: Vec<PathBuf>,
    /// Output directory: categories.json, categories.safetensors, index.html, plots/.
    #[arg(long)]
    out: PathBuf,
    /// A sparsify run saved for several hookpoints: the one to use (its subdirectory).
    #[arg(long)]
    hookpoint: Option<String>,
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
    /// Count only the co-occurrence of part I of N (0-based) of the shards (sorted by path,
    /// split into N groups of whole shards balanced by rows) into --out; a later run with
    /// --cooccurrence-from sums the parts and finishes the categories.
    #[arg(long, value_name = "I/N")]
    part: Option<Part>,
    /// Directories of `--part I/N` runs: use the sum of their co-occurrence counts instead of
    /// counting on the shards (the same SAE and co-occurrence flags as the parts).
    #[arg(long, num_args = 1.., value_name = "PART_DIRS")]
    cooccurrence_from: Vec<PathBuf>,
    /// Token families to score the categories against: JSON, name → list of token strings or
    /// {"regex": "…"}; writes families.json (needs --tokenizer and shards with tokens).
    #[arg(long)]
    families: Option<PathBuf>,
    /// Name of the activation tensor in the shards.
    #[arg(long, default_value = "activations")]
    tensor: String,
    /// Rows (and features) per GPU batch.
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

pub fn run(args: CategoriesArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    anyhow::ensure!(
        (1..=511).contains(&args.neighbours),
        "--neighbours must be between 1 and 511"
    );
    anyhow::ensure!(
        args.link_top >= 1 && args.link_top <= args.neighbours,
        "--link-top must be between 1 and --neighbours"
    );
    anyhow::ensure!(
        args.samples > 0,
        "--samples must be at least 1 (it is the number of reconstructions kept per category)"
    );
    anyhow::ensure!(
        args.resolution.iter().all(|r| r.is_finite() && *r > 0.0),
        "--resolution values must be positive"
    );
    anyhow::ensure!(args.null_draws >= 10, "--null-draws must be at least 10");
    if args.method == Method::Spectral && args.n_clusters.is_none() {
        bail!("--method spectral needs --n-clusters");
    }
    let cooccurrence = cooccurrence_config(&args)?;
    if args.rank_by == RankBy::Engels && args.shards.is_empty() {
        bail!("--rank-by engels needs shards: the indices are measured on reconstructions");
    }
    let loaded = load_sae_at(&args.sae, args.hookpoint.as_deref())?;
    let params = &loaded.params;
    let (d_in, d_sae) = (params.d_in, params.d_sae);
    anyhow::ensure!(
        d_sae >= 2,
        "{}: the SAE has one feature",
        args.sae.display()
    );
    if let Some(feature) = args.feature {
        if feature >= d_sae {
            bail!(
                "--feature {feature} is out of range: {} has features 0..{}",
                args.sae.display(),
                d_sae - 1
            );
        }
    }
    // Everything that can be refused is checked before any GPU work or output.
    let model = args.model.as_deref().map(load_model).transpose()?;
    if let Some(model) = &model {
        if model.d_model != d_in {
            bail!(
                "{}: the SAE's d_in is {d_in} but the model's hidden size is {} ({})",
                args.sae.display(),
                model.d_model,
                model.path.with_file_name("config.json").display()
            );
        }
    }
    let tokenizer = args.tokenizer.as_deref().map(load_tokenizer).transpose()?;
    let token_text = |t: i32| -> String {
        match (&tokenizer, u32::try_from(t)) {
            (Some(tok), Ok(id)) => tok
                .decode(&[id], false)
                .unwrap_or_else(|_| format!("#{id}")),
            _ => format!("#{t}"),
        }
    };
    let families = match (&args.families, &tokenizer) {
        (None, _) => None,
        (Some(_), None) => bail!("--families needs --tokenizer: families are sets of tokens"),
        (Some(path), Some(tok)) => {
            if args.shards.is_empty() {
                bail!("--families needs shards: specific features are counted on data");
            }
            Some(load_families(path, tok.get_vocab_size(true), &token_text)?)
        }
    };
    let other = args.across.as_deref().map(load_sae).transpose()?;
    if let Some(other) = &other {
        if other.params.d_in != d_in {
            bail!(
                "--across {}: d_in {} differs from {}'s {d_in}",
                other.dir.display(),
                other.params.d_in,
                args.sae.display()
            );
        }
    }
    let shards = Arc::new(if args.shards.is_empty() {
        Vec::new()
    } else {
        open_shards(&expand_inputs(&args.shards)?, &args.tensor, Some(d_in))?
    });
    if let Some(part) = args.part {
        return count_part(&args, part, cooccurrence, &loaded, shards);
    }
    let merged = match (&cooccurrence, args.cooccurrence_from.is_empty()) {
        (_, true) => None,
        (None, false) => {
            bail!("--cooccurrence-from needs co-occurrence on (a --cooccurrence-weight above 0)")
        }
        (Some(c), false) => {
            let (counts, rows) = merge_cooccurrence_parts(
                &args.cooccurrence_from,
                &part_settings(&loaded.params, c),
            )?;
            let here: u64 = shards.iter().map(|s| s.rows as u64).sum();
            if !shards.is_empty() && here != rows {
                bail!(
                    "the parts in --cooccurrence-from split {rows} rows but the shards given hold {here}: give the same shards"
                );
            }
            Some(counts)
        }
    };
    let documents = match (&cooccurrence, &args.document_column, &merged) {
        (Some(_), Some(name), None) => Some(RowColumn::open(&shards, name)?),
        _ => None,
    };
    let contexts = args.hist.as_deref().map(read_contexts).transpose()?;
    prepare_output_dir(&args.out)?;

    let config = CategoriesConfig {
        neighbours: args.neighbours,
        min_cosine: args.min_cosine,
        method: args.method,
        quality: args.quality,
        resolution: args.resolution.clone(),
        link_top: args.link_top,
        link_cosine: args.link_cosine,
        n_clusters: args.n_clusters,
        cooccurrence,
        seed: args.seed,
        feature: args.feature,
        samples: args.samples,
        top: args.top,
        rank_by: args.rank_by,
        null_draws: args.null_draws,
        batch_size: args.batch_size,
    };
    let gpu = args.gpu.open()?;
    let total_rows: u64 = shards.iter().map(|s| s.rows as u64).sum();
    let passes = if shards.is_empty() {
        0
    } else {
        shard_passes(&config, d_sae, gpu.binding_limit(), merged.is_some())
    };
    let bar = progress(total_rows * passes, args.quiet || passes == 0);
    let result = find_categories(
        &gpu,
        &CategoriesInputs {
            params,
            shards,
            model: model.as_ref(),
            vocab: tokenizer.as_ref().map(|t| {
                (
                    t.get_vocab_size(true),
                    &token_text as &dyn Fn(i32) -> String,
                )
            }),
            across: other.as_ref().map(|o| &o.params),
            families: families.as_ref(),
            documents: documents.as_ref(),
            counts: merged.as_ref(),
        },
        &config,
        |rows| bar.inc(rows),
    )
    .map_err(|e| match &args.tokenizer {
        Some(path) if e.to_string().contains("tokenizer's vocabulary") => {
            anyhow::anyhow!("{}: {e}", path.display())
        }
        _ => e,
    })?;
    bar.finish_and_clear();
    write_outputs(
        &args.out,
        &result,
        &config,
        &OutputContext {
            sae: &args.sae,
            provenance: serde_json::to_value(&loaded.provenance)?,
            sae_description: &loaded.provenance.describe(),
            across: other.as_ref().map(|o| (o.dir.as_path(), o.params.d_sae)),
            token_text: &token_text,
            contexts: contexts.as_ref(),
        },
    )?;
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

/// What the parts of a split co-occurrence count must share: the SAE (its decoder, by a
/// fingerprint, since machines may see it at different paths) and the counting flags.
fn part_settings(params: &SaeParams, c: &CooccurrenceConfig) -> serde_json::Value {
    // FNV-1a over the decoder's bytes.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in bytemuck::cast_slice::<f32, u8>(&params.w_dec) {
        hash = (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3);
    }
    let p = &c.partners;
    serde_json::json!({
        "d_sae": params.d_sae,
        "decoder_fnv1a": format!("{hash:016x}"),
        "unit": p.unit,
        "chunk": (p.unit == CooccurrenceUnit::Chunk).then_some(p.chunk_rows),
        "fires_above": p.fires_above,
    })
}

/// `--part I/N`: the co-occurrence counts of this part's shards, written into --out.
fn count_part(
    args: &CategoriesArgs,
    part: Part,
    cooccurrence: Option<CooccurrenceConfig>,
    loaded: &crate::sae::formats::LoadedSae,
    shards: Arc<Vec<crate::data::Shard>>,
) -> anyhow::Result<()> {
    let Some(c) = cooccurrence else {
        bail!("--part splits the co-occurrence count: it needs shards and co-occurrence on (a --cooccurrence-weight above 0)");
    };
    if !args.cooccurrence_from.is_empty() {
        bail!("--part counts one part; --cooccurrence-from merges parts: use one of them");
    }
    // The run has not shared the list yet.
    let mut sorted = Arc::try_unwrap(shards)
        .map_err(|_| anyhow::anyhow!("the shard list is in use elsewhere"))?;
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    if c.partners.unit == CooccurrenceUnit::Chunk {
        // Chunks run across shard boundaries; a split between whole shards is exact only
        // where no chunk straddles one.
        if let Some(s) = sorted[..sorted.len() - 1]
            .iter()
            .find(|s| s.rows % c.partners.chunk_rows != 0)
        {
            bail!(
                "{}: {} rows is not a multiple of --chunk {}, so a chunk would straddle two parts; use --cooccurrence-unit row or document, or a --chunk dividing every shard",
                s.path.display(),
                s.rows,
                c.partners.chunk_rows
            );
        }
    }
    let (mine, info) = split(sorted, part)?;
    let mine = Arc::new(mine);
    let documents = args
        .document_column
        .as_ref()
        .map(|name| RowColumn::open(&mine, name))
        .transpose()?;
    prepare_output_dir(&args.out)?;
    let gpu = args.gpu.open()?;
    let sae = GpuSae::upload_with_cap(&gpu, &loaded.params, DEFAULT_CAP, args.batch_size)?;
    let bar = progress(info.rows, args.quiet);
    let counts = pair_counts(
        &gpu,
        &sae,
        Arc::clone(&mine),
        c.partners,
        documents.as_ref(),
        args.batch_size,
        |rows| bar.inc(rows),
    )?;
    bar.finish_and_clear();
    save_cooccurrence_part(&args.out, &counts, &info, part_settings(&loaded.params, &c))?;
    if !args.quiet {
        println!(
            "part {}/{}: {} of {} shards, {} rows, {} units, {} pairs seen together → {}",
            info.index,
            info.count,
            info.shards.len(),
            info.total_shards,
            info.rows,
            counts.units,
            counts.i.len(),
            args.out.display()
        );
    }
    Ok(())
}

/// The co-occurrence half of the graph from the flags: on by default with shards (weight 1),
/// off without; any co-occurrence flag without shards is an error.
fn cooccurrence_config(args: &CategoriesArgs) -> anyhow::Result<Option<CooccurrenceConfig>> {
    let given: Vec<&str> = [
        ("--cooccurrence-weight", args.cooccurrence_weight.is_some()),
        ("--cooccurrence", args.cooccurrence.is_some()),
        ("--cooccurrence-unit", args.cooccurrence_unit.is_some()),
        ("--chunk", args.chunk.is_some()),
        ("--document-column", args.document_column.is_some()),
        ("--partners", args.partners.is_some()),
        ("--min-joint", args.min_joint.is_some()),
        ("--fires-above", args.fires_above.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, set)| set.then_some(flag))
    .collect();
    if let Some(w) = args.cooccurrence_weight {
        anyhow::ensure!(
            (0.0..=1.0).contains(&w),
            "--cooccurrence-weight must lie in [0, 1]"
        );
    }
    if let Some(flag) = given.first() {
        if args.shards.is_empty() && args.cooccurrence_weight != Some(0.0) {
            bail!("{flag} needs shards: co-occurrence is counted on data");
        }
    }
    anyhow::ensure!(
        args.partners.is_none_or(|m| m >= 1),
        "--partners must be at least 1"
    );
    anyhow::ensure!(
        args.chunk.is_none_or(|c| c >= 1),
        "--chunk must be at least 1"
    );
    if args.chunk.is_some() && args.cooccurrence_unit != Some(CooccurrenceUnit::Chunk) {
        bail!("--chunk sets the chunk of --cooccurrence-unit chunk; add that flag");
    }
    match (args.cooccurrence_unit, &args.document_column) {
        (Some(CooccurrenceUnit::Document), None) => {
            bail!("--cooccurrence-unit document needs --document-column NAME (the shards' per-row document id)")
        }
        (unit, Some(_)) if unit != Some(CooccurrenceUnit::Document) => {
            bail!("--document-column is read with --cooccurrence-unit document; add that flag")
        }
        _ => {}
    }
    let fires_above = args.fires_above.unwrap_or(0.0);
    anyhow::ensure!(
        fires_above.is_finite() && fires_above >= 0.0,
        "--fires-above must be a non-negative number"
    );
    anyhow::ensure!(
        args.cooccurrence_memory >= 1,
        "--cooccurrence-memory must be at least 1 MiB"
    );
    if args.method == Method::Engels {
        if args.cooccurrence_weight.is_some_and(|w| w > 0.0) {
            bail!("--cooccurrence-weight blends the graph's affinities, which --method engels does not use (it links by decoder cosine alone)");
        }
        return Ok(None);
    }
    let weight = args
        .cooccurrence_weight
        .unwrap_or(if args.shards.is_empty() { 0.0 } else { 1.0 });
    if weight == 0.0 {
        return Ok(None);
    }
    Ok(Some(CooccurrenceConfig {
        weight,
        partners: PartnerConfig {
            unit: args.cooccurrence_unit.unwrap_or(CooccurrenceUnit::Row),
            chunk_rows: args.chunk.unwrap_or(256),
            fires_above,
            measure: args.cooccurrence.unwrap_or(CooccurrenceMeasure::Phi),
            partners: args.partners.unwrap_or(16),
            min_joint: args.min_joint.unwrap_or(3),
            memory_bytes: args.cooccurrence_memory << 20,
        },
    }))
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
