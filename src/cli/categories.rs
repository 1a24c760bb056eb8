//! `sae categories SAE [SHARDS…] --out DIR`: from one feature to the category it belongs to and
//! the structure that produces it. Clusters the decoder-cosine kNN graph, ranks the groups by
//! how much lower-dimensional they are than their size, and (with shards, a model and a
//! tokenizer) studies each top category's reconstructions, circle and writers. Writes
//! categories.json, categories.safetensors, PNGs and a static HTML report.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use clap::{Args, ValueEnum};
use serde_json::json;

use super::eval::progress;
use super::GpuArgs;
use crate::analysis::categories::cluster::{parents, spectral_embedding, LeidenQuality};
use crate::analysis::categories::cooccurrence::{
    chunk_batch_rows, count_chunks, ChunkCounts, Chunking, CooccurrenceMeasure,
};
use crate::analysis::categories::graph::{angular_affinity, match_across, Blend, Matching};
use crate::analysis::categories::report::{write_report, ReportInputs};
use crate::analysis::categories::structure::{analyse, gather, CategorySamples, Sampling};
use crate::analysis::categories::writers::{load_model, writers, ModelWeights};
use crate::analysis::categories::{
    categories, engels_components, knn_graph, leiden, rank, spectral, unit_rows, Category, RankBy,
    TokenCount,
};
use crate::analysis::contexts::load_tokenizer;
use crate::data::{expand_inputs, open_shards};
use crate::io::{write_json_atomic, write_safetensors, TensorOut};
use crate::sae::formats::{load_sae, load_sae_at};
use crate::sae::forward::{GpuSae, DEFAULT_CAP};
use crate::sae::pass::{ForwardPass, PassDepth};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Method {
    /// Leiden communities of the kNN graph (modularity at each --resolution).
    Leiden,
    /// Engels et al.: each feature joined to its top --link-top neighbours with cosine above
    /// --link-cosine; categories are connected components.
    Engels,
    /// Spectral clustering of the kNN graph into --n-clusters groups.
    Spectral,
}

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
    /// Graph edges need at least this cosine (default 3/√d_in: chance level is 1/√d_in).
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
    /// Weight of the co-occurrence affinity blended into the graph's edges (0: decoder
    /// cosine alone; needs shards). Counted for the kNN graph's pairs only.
    #[arg(long, default_value_t = 0.0)]
    cooccurrence_weight: f64,
    /// The co-occurrence statistic used as an affinity.
    #[arg(long, value_enum, default_value_t = CooccurrenceMeasure::Phi)]
    cooccurrence: CooccurrenceMeasure,
    /// Consecutive rows per co-occurrence chunk (in file order, across shard boundaries).
    #[arg(long, default_value_t = 256)]
    chunk: usize,
    /// A feature fires in a chunk when one of its activations there exceeds this.
    #[arg(long, default_value_t = 0.0)]
    fires_above: f32,
    /// Seed of Leiden, spectral k-means and the reservoir of samples.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print this feature's category: members, cosines, fire counts, top tokens.
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
    #[arg(long, value_enum, default_value_t = RankBy::Subspace)]
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

/// The outputs whose presence says "this report is complete"; removed before a run starts so a
/// failed run never leaves an older one looking like its result.
const FINAL_OUTPUTS: [&str; 4] = [
    "categories.json",
    "categories.safetensors",
    "index.html",
    "across.json",
];

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
    if args.method == Method::Spectral && args.n_clusters.is_none() {
        bail!("--method spectral needs --n-clusters");
    }
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.cooccurrence_weight),
        "--cooccurrence-weight must lie in [0, 1]"
    );
    anyhow::ensure!(args.chunk >= 1, "--chunk must be at least 1");
    anyhow::ensure!(
        args.fires_above.is_finite() && args.fires_above >= 0.0,
        "--fires-above must be a non-negative number"
    );
    if args.cooccurrence_weight > 0.0 && args.method == Method::Engels {
        bail!("--cooccurrence-weight blends the graph's affinities, which --method engels does not use (it links by decoder cosine alone)");
    }
    if args.cooccurrence_weight > 0.0 && args.shards.is_empty() {
        bail!("--cooccurrence-weight needs shards: co-occurrence is counted on data");
    }
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
    let contexts = args.hist.as_deref().map(read_contexts).transpose()?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    for name in FINAL_OUTPUTS {
        let path = args.out.join(name);
        if path.exists() {
            std::fs::remove_file(&path)
                .with_context(|| format!("{}: cannot replace", path.display()))?;
        }
    }

    let gpu = args.gpu.open()?;
    let neighbours = args.neighbours.min(d_sae - 1);
    let unit = unit_rows(&params.w_dec, d_in);
    let graph = knn_graph(&gpu, &unit, d_in, d_sae, neighbours, args.batch_size)?;
    let min_cosine = args
        .min_cosine
        .unwrap_or(3.0 / (d_in as f32).sqrt())
        .clamp(-1.0, 1.0);
    let knn_pairs = graph.pairs();
    let total_rows: u64 = shards.iter().map(|s| s.rows as u64).sum();
    // One upload serves both passes over the shards.
    let max_rows = args
        .batch_size
        .max(chunk_batch_rows(args.chunk, args.batch_size));
    let sae = (!shards.is_empty())
        .then(|| GpuSae::upload_with_cap(&gpu, params, DEFAULT_CAP, max_rows))
        .transpose()?;
    let cooccurrence = match &sae {
        Some(sae) if args.cooccurrence_weight > 0.0 => {
            let bar = progress(total_rows, args.quiet);
            let counts = count_chunks(
                &gpu,
                sae,
                Arc::clone(&shards),
                knn_pairs.pairs.clone(),
                Chunking {
                    chunk_rows: args.chunk,
                    fires_above: args.fires_above,
                },
                args.batch_size,
                |rows| bar.inc(rows),
            )?;
            bar.finish_and_clear();
            Some(counts)
        }
        _ => None,
    };
    let cooc_affinity = cooccurrence.as_ref().map(|c| c.affinity(args.cooccurrence));
    let edges = knn_pairs.edges(
        min_cosine,
        cooc_affinity.as_deref().map(|affinity| Blend {
            affinity,
            weight: args.cooccurrence_weight,
        }),
    );

    // The clustering(s): the primary labels, and every level of a Leiden hierarchy.
    let mut levels: Vec<(f64, Vec<usize>)> = Vec::new();
    let (labels, method) = match args.method {
        Method::Leiden => {
            for &r in &args.resolution {
                levels.push((r, leiden(d_sae, &edges, args.quality, r, args.seed)?));
            }
            (
                levels[0].1.clone(),
                format!(
                    "Leiden ({:?}, resolution {}) on the {neighbours}-NN graph, edges of cosine ≥ {min_cosine:.3}",
                    args.quality,
                    args.resolution[0]
                ),
            )
        }
        Method::Engels => (
            engels_components(&graph, args.link_top, args.link_cosine),
            format!(
                "Engels' graph: top {} neighbours with cosine > {}, connected components",
                args.link_top, args.link_cosine
            ),
        ),
        Method::Spectral => {
            let n = args.n_clusters.unwrap_or(2);
            (
                spectral(d_sae, &edges, n, args.seed)?,
                format!("spectral clustering into {n} clusters on the {neighbours}-NN graph"),
            )
        }
    };
    let method = match &cooccurrence {
        Some(c) => format!(
            "{method}; affinities blended {:.2} : {:.2} with chunk co-occurrence ({:?}, {} chunks of {} rows, fires above {})",
            1.0 - args.cooccurrence_weight,
            args.cooccurrence_weight,
            args.cooccurrence,
            c.chunks,
            args.chunk,
            args.fires_above
        ),
        None => method,
    };
    let mut found = categories(&labels, &unit, d_in);

    // The structure of the top categories (and the asked-for feature's) on the shards.
    let token_text = |t: i32| -> String {
        match (&tokenizer, u32::try_from(t)) {
            (Some(tok), Ok(id)) => tok
                .decode(&[id], false)
                .unwrap_or_else(|_| format!("#{id}")),
            _ => format!("#{t}"),
        }
    };
    let studied: Vec<usize> = (0..found.len())
        .filter(|&i| {
            (i < args.top && found[i].size >= 3)
                || args.feature.is_some_and(|f| found[i].members.contains(&f))
        })
        .collect();
    let mut rows_read: Option<u64> = None;
    if let Some(sae) = &sae {
        let pass = ForwardPass::new(&gpu, sae, args.batch_size, PassDepth::Codes)?;
        let samples: Vec<CategorySamples> = studied
            .iter()
            .map(|&i| CategorySamples::new(&found[i].members, &params.w_dec, d_in))
            .collect();
        let bar = progress(total_rows, args.quiet);
        let gathered = gather(
            &pass,
            Arc::clone(&shards),
            samples,
            Sampling {
                per_category: args.samples,
                seed: args.seed,
            },
            |rows| bar.inc(rows),
        )?;
        bar.finish_and_clear();
        if let (Some(tok), Some(max)) = (&tokenizer, gathered.max_token) {
            let vocab = tok.get_vocab_size(true);
            if max as usize >= vocab {
                bail!(
                    "{}: the shards hold token id {max} but the tokenizer's vocabulary has {vocab} ids",
                    args.tokenizer.as_deref().unwrap_or(Path::new("")).display()
                );
            }
        }
        for (&i, cat) in studied.iter().zip(&gathered.categories) {
            let c = &mut found[i];
            c.structure = analyse(cat, d_in);
            let mut counts: HashMap<i32, usize> = HashMap::new();
            for &t in cat.tokens.iter().filter(|&&t| t >= 0) {
                *counts.entry(t).or_default() += 1;
            }
            let mut counts: Vec<(i32, usize)> = counts.into_iter().collect();
            counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            c.top_tokens = counts
                .into_iter()
                .take(20)
                .map(|(token, count)| TokenCount {
                    token,
                    count,
                    text: tokenizer.as_ref().map(|_| token_text(token)),
                })
                .collect();
            if let Some(model) = &model {
                c.writers = Some(category_writers(model, cat, c));
            }
        }
        for c in found.iter_mut() {
            c.fire_counts = Some(c.members.iter().map(|&m| gathered.fire_count[m]).collect());
        }
        rows_read = Some(gathered.rows);
    } else if let Some(model) = &model {
        for &i in &studied {
            let cat = CategorySamples::new(&found[i].members, &params.w_dec, d_in);
            let c = &mut found[i];
            c.writers = Some(category_writers(model, &cat, c));
        }
    }
    rank(&mut found, args.rank_by);

    let matching = other
        .as_ref()
        .map(|o| -> anyhow::Result<Matching> {
            let other_unit = unit_rows(&o.params.w_dec, d_in);
            Ok(match_across(
                &gpu,
                &unit,
                &other_unit,
                d_in,
                args.batch_size,
            )?)
        })
        .transpose()?;

    // Outputs: the report pages first, then the files whose presence marks a finished run.
    let full = knn_pairs.edges(-1.0, None);
    let dims = 3.min(d_sae);
    let embedding = spectral_embedding(d_sae, &full, dims, args.seed)?;
    let map: Vec<(f64, f64)> = (0..d_sae)
        .map(|i| {
            let at = |c: usize| embedding.get(i * dims + c).copied().unwrap_or(0.0);
            (at(1), at(2))
        })
        .collect();
    let no_contexts = HashMap::new();
    let contexts = contexts.as_ref().unwrap_or(&no_contexts);
    let context_of = |f: usize| contexts.get(&f).cloned().unwrap_or_default();
    let sae_name = args.sae.display().to_string();
    let sae_description = loaded.provenance.describe();
    write_report(
        &args.out,
        &found,
        &ReportInputs {
            sae: &sae_description,
            d_in,
            d_sae,
            method: &method,
            rank_by: args.rank_by,
            pages: args.top.min(found.len()),
            map: &map,
            unit: &unit,
            token_text: &token_text,
            contexts: &context_of,
        },
    )?;
    if let (Some(matching), Some(o)) = (&matching, &other) {
        write_json_atomic(
            &args.out.join("across.json"),
            &across_json(matching, &args.sae, &o.dir, d_sae, o.params.d_sae),
        )?;
    }
    let mut rank_of = vec![0i32; d_sae];
    for category in &found {
        for &m in &category.members {
            rank_of[m] = category.rank as i32;
        }
    }
    let index: Vec<i32> = graph.index.iter().map(|&i| i as i32).collect();
    let affinity: Vec<f32> = graph
        .cosine
        .iter()
        .map(|&c| angular_affinity(c) as f32)
        .collect();
    if levels.is_empty() {
        levels.push((0.0, labels.clone()));
    }
    let flat_labels: Vec<i32> = levels
        .iter()
        .flat_map(|(_, l)| l.iter().map(|&v| v as i32))
        .collect();
    let resolutions: Vec<f32> = levels.iter().map(|(r, _)| *r as f32).collect();
    let knn_shape = [d_sae, graph.neighbours];
    // Per kNN slot, the co-occurrence statistics of its pair (when counted).
    let per_slot = |c: &ChunkCounts, stat: fn(&ChunkCounts, usize) -> f64| -> Vec<f32> {
        knn_pairs
            .slot_pair
            .iter()
            .map(|&e| stat(c, e) as f32)
            .collect()
    };
    let cooc_tensors = cooccurrence.as_ref().map(|c| {
        (
            per_slot(c, ChunkCounts::phi),
            per_slot(c, ChunkCounts::jaccard),
        )
    });
    let mut tensors = vec![
        TensorOut::i32("category", &[d_sae], &rank_of),
        TensorOut::i32("labels", &[levels.len(), d_sae], &flat_labels),
        TensorOut::f32("resolutions", &[levels.len()], &resolutions),
        TensorOut::i32("knn_index", &knn_shape, &index),
        TensorOut::f32("knn_cosine", &knn_shape, &graph.cosine),
        TensorOut::f32("knn_affinity", &knn_shape, &affinity),
    ];
    if let Some((phi, jaccard)) = &cooc_tensors {
        tensors.push(TensorOut::f32("knn_phi", &knn_shape, phi));
        tensors.push(TensorOut::f32("knn_jaccard", &knn_shape, jaccard));
    }
    write_safetensors(&args.out.join("categories.safetensors"), &tensors, None)?;
    // The hierarchy: levels ordered coarse (low resolution) to fine, each cluster's parent.
    let mut order: Vec<usize> = (0..levels.len()).collect();
    order.sort_by(|&a, &b| levels[a].0.total_cmp(&levels[b].0));
    let hierarchy: Vec<serde_json::Value> = order
        .iter()
        .enumerate()
        .map(|(pos, &l)| {
            let (resolution, labels) = &levels[l];
            let clusters = {
                let mut sizes: HashMap<usize, usize> = HashMap::new();
                for &v in labels {
                    *sizes.entry(v).or_default() += 1;
                }
                sizes.values().filter(|&&s| s >= 2).count()
            };
            let parent = (pos > 0).then(|| {
                let coarse = &levels[order[pos - 1]].1;
                parents(coarse, labels)
                    .into_iter()
                    .map(|(f, c)| (f.to_string(), c))
                    .collect::<std::collections::BTreeMap<_, _>>()
            });
            json!({
                "resolution": resolution,
                "tensor_row": l,
                "clusters_of_2_or_more": clusters,
                "parent": parent,
            })
        })
        .collect();
    write_json_atomic(
        &args.out.join("categories.json"),
        &json!({
            "sae": sae_name,
            "provenance": loaded.provenance,
            "d_in": d_in,
            "d_sae": d_sae,
            "method": method,
            "neighbours": graph.neighbours,
            "min_cosine": min_cosine,
            "rank_by": args.rank_by,
            "rows": rows_read,
            "cooccurrence": cooccurrence.as_ref().map(|c| json!({
                "weight": args.cooccurrence_weight,
                "measure": args.cooccurrence,
                "chunk": args.chunk,
                "fires_above": args.fires_above,
                "chunks": c.chunks,
            })),
            "levels": if args.method == Method::Leiden { json!(hierarchy) } else { json!(null) },
            "categories": found,
        }),
    )?;
    if !args.quiet {
        print_summary(&args, &found, d_sae, &token_text);
    }
    if let Some(feature) = args.feature {
        print_feature(feature, &found, &unit, d_in, &token_text);
    }
    Ok(())
}

fn category_writers(
    model: &ModelWeights,
    cat: &CategorySamples,
    c: &Category,
) -> crate::analysis::categories::writers::Writers {
    // Logit-lens axes: the reconstructions' principal axes when measured, else the basis.
    let axes: Vec<Vec<f64>> = match &c.structure {
        Some(s) => s.axes.clone(),
        None => cat
            .basis
            .chunks_exact(model.d_model)
            .take(5)
            .map(|r| r.to_vec())
            .collect(),
    };
    writers(model, &cat.basis, &axes)
}

/// `sae hist`'s top_examples.jsonl: per feature, (activation, decoded context).
fn read_contexts(dir: &Path) -> anyhow::Result<HashMap<usize, Vec<(f32, String)>>> {
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

/// Parents, children and novel features between two dictionaries: a feature of the wider SAE
/// whose best match in the narrower one has cosine ≥ 0.5 is that feature's child; features of
/// either side with no match that close are novel.
fn across_json(
    m: &Matching,
    ours: &Path,
    other: &Path,
    d_ours: usize,
    d_other: usize,
) -> serde_json::Value {
    const MATCHED: f32 = 0.5;
    let (narrow_to_wide, wide_to_narrow, narrow, wide) = if d_ours <= d_other {
        (&m.ours_to_other, &m.other_to_ours, ours, other)
    } else {
        (&m.other_to_ours, &m.ours_to_other, other, ours)
    };
    let mut children: std::collections::BTreeMap<u32, Vec<u32>> = Default::default();
    let mut novel_wide = Vec::new();
    for (w, &(n, c)) in wide_to_narrow.iter().enumerate() {
        if c >= MATCHED {
            children.entry(n).or_default().push(w as u32);
        } else {
            novel_wide.push(w as u32);
        }
    }
    let novel_narrow: Vec<u32> = narrow_to_wide
        .iter()
        .enumerate()
        .filter(|(n, &(_, c))| c < MATCHED && !children.contains_key(&(*n as u32)))
        .map(|(n, _)| n as u32)
        .collect();
    let split: Vec<serde_json::Value> = children
        .iter()
        .filter(|(_, kids)| kids.len() >= 2)
        .map(|(p, kids)| json!({"parent": p, "children": kids}))
        .collect();
    json!({
        "narrow": narrow.display().to_string(),
        "wide": wide.display().to_string(),
        "match_cosine": MATCHED,
        "narrow_best_match": narrow_to_wide,
        "wide_best_match": wide_to_narrow,
        "split_parents": split,
        "novel_in_wide": novel_wide,
        "unmatched_in_narrow": novel_narrow,
    })
}

fn print_summary(
    args: &CategoriesArgs,
    found: &[Category],
    d_sae: usize,
    token_text: &dyn Fn(i32) -> String,
) {
    let ranked = found.iter().filter(|c| c.size >= 3).count();
    println!(
        "{} categories ({ranked} of ≥ 3 features) among {d_sae} features → {}",
        found.len(),
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
        println!(
            "  #{:<3} {:>4} features  score {:6.2}  PR {:5.2}  mean cos {:.3}{engels}  {}",
            c.rank,
            c.size,
            c.shape.subspace_score,
            c.shape.participation_ratio,
            c.shape.mean_pairwise_cosine,
            tokens.join(" ")
        );
    }
}

fn print_feature(
    feature: usize,
    found: &[Category],
    unit: &[f32],
    d_in: usize,
    token_text: &dyn Fn(i32) -> String,
) {
    let dot = |a: usize, b: usize| -> f64 {
        unit[a * d_in..(a + 1) * d_in]
            .iter()
            .zip(&unit[b * d_in..(b + 1) * d_in])
            .map(|(x, y)| f64::from(*x) * f64::from(*y))
            .sum()
    };
    let Some(c) = found.iter().find(|c| c.members.contains(&feature)) else {
        println!("feature {feature} belongs to no category (no close neighbours)");
        return;
    };
    let order = c
        .structure
        .as_ref()
        .map_or(&c.shape.cyclic_order, |s| &s.cyclic_order);
    println!(
        "feature {feature}: category #{} of {} features, score {:.2} (PR {:.2})",
        c.rank, c.size, c.shape.subspace_score, c.shape.participation_ratio
    );
    println!("  cyclic order: {order:?}");
    if !c.top_tokens.is_empty() {
        let tokens: Vec<String> = c
            .top_tokens
            .iter()
            .take(10)
            .map(|t| format!("{:?}×{}", token_text(t.token), t.count))
            .collect();
        println!("  top tokens: {}", tokens.join(" "));
    }
    for (i, &m) in c.members.iter().enumerate() {
        let fires = c
            .fire_counts
            .as_ref()
            .map_or(String::new(), |f| format!("  fires {}", f[i]));
        println!("  {m:>8}  cos {:+.3}{fires}", dot(feature, m));
    }
}
