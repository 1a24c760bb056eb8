//! The `sae categories` job: every input checked and loaded before any GPU work, the pipeline
//! (analysis::categories::pipeline) run over the SAE and shards, and the report written; or,
//! with `--part I/N`, one part's co-occurrence counts for a later `--cooccurrence-from` merge.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;
use tokenizers::Tokenizer;

use super::inputs::SaeInputs;
use super::merge::{merge_cooccurrence_parts, save_cooccurrence_part};
use super::outputs::categories_report::{
    prepare_output_dir, read_contexts, write_outputs, OutputContext,
};
use super::outputs::top_examples::load_tokenizer;
use super::progress;
use crate::analysis::categories::config::{
    CategoriesConfig, CategoriesInputs, CooccurrenceConfig, Method,
};
use crate::analysis::categories::cooccurrence::{
    pair_counts, CooccurrenceMeasure, CooccurrenceUnit, PartnerConfig, SparseCounts,
};
use crate::analysis::categories::families::{load_families, TokenFamilies};
use crate::analysis::categories::pipeline::{find_categories, shard_passes};
use crate::analysis::categories::writers::{load_model, ModelWeights};
use crate::analysis::categories::{CategoriesResult, RankBy};
use crate::data::column::RowColumn;
use crate::data::parts::{split, PartInfo};
use crate::data::{expand_inputs, open_shards, Shard};
use crate::gpu::Gpu;
use crate::sae::formats::{load_sae, load_sae_at, LoadedSae};
use crate::sae::forward::{GpuSae, DEFAULT_CAP};
use crate::sae::params::SaeParams;

/// The co-occurrence flags as given (`None`: not given).
#[derive(Clone, Debug, Default)]
pub struct CooccurrenceRequest {
    pub weight: Option<f64>,
    pub measure: Option<CooccurrenceMeasure>,
    pub unit: Option<CooccurrenceUnit>,
    pub chunk: Option<usize>,
    pub document_column: Option<String>,
    pub partners: Option<usize>,
    pub min_joint: Option<u32>,
    pub fires_above: Option<f32>,
    /// MiB the counts may take at once.
    pub memory_mib: u64,
}

pub struct CategoriesRequest {
    /// The SAE, the shards (may be none), `--part`.
    pub inputs: SaeInputs,
    pub out: PathBuf,
    /// The pipeline's settings, but for co-occurrence (resolved from `cooccurrence`).
    pub config: CategoriesConfig,
    pub cooccurrence: CooccurrenceRequest,
    /// `--part` runs' directories whose counts to sum instead of counting.
    pub cooccurrence_from: Vec<PathBuf>,
    pub model: Option<PathBuf>,
    pub tokenizer: Option<PathBuf>,
    pub hist: Option<PathBuf>,
    pub families: Option<PathBuf>,
    pub across: Option<PathBuf>,
    pub quiet: bool,
}

/// Token ids as text, through the tokenizer when one is given.
pub struct TokenText(Option<Tokenizer>);

impl TokenText {
    pub fn text(&self, t: i32) -> String {
        match (&self.0, u32::try_from(t)) {
            (Some(tok), Ok(id)) => tok
                .decode(&[id], false)
                .unwrap_or_else(|_| format!("#{id}")),
            _ => format!("#{t}"),
        }
    }
}

/// The categories found and written, and how to show their tokens.
pub struct CategoriesReport {
    pub result: CategoriesResult,
    pub tokens: TokenText,
}

/// What the job did.
pub enum CategoriesOutcome {
    /// The categories, written into `out`.
    Report(Box<CategoriesReport>),
    /// One part's co-occurrence counts.
    Part {
        info: PartInfo,
        units: u64,
        pairs: usize,
    },
}

/// Everything the pipeline reads, loaded and checked.
struct Loaded {
    sae: LoadedSae,
    shards: Arc<Vec<Shard>>,
    model: Option<ModelWeights>,
    tokens: TokenText,
    families: Option<TokenFamilies>,
    across: Option<LoadedSae>,
}

pub fn categories(request: &CategoriesRequest) -> anyhow::Result<CategoriesOutcome> {
    check_settings(request)?;
    let cooccurrence = resolve_cooccurrence(request)?;
    let config = CategoriesConfig {
        cooccurrence,
        ..request.config.clone()
    };
    if config.rank_by == RankBy::Engels && request.inputs.shards.is_empty() {
        bail!("--rank-by engels needs shards: the indices are measured on reconstructions");
    }
    let loaded = load_inputs(request)?;
    if let Some(part) = request.inputs.part {
        let Some(c) = cooccurrence else {
            bail!("--part splits the co-occurrence count: it needs shards and co-occurrence on (a --cooccurrence-weight above 0)");
        };
        return count_part(request, part, c, loaded);
    }
    let merged = merged_counts(request, &config, &loaded)?;
    let documents = match (
        &cooccurrence,
        &request.cooccurrence.document_column,
        &merged,
    ) {
        (Some(_), Some(name), None) => Some(RowColumn::open(&loaded.shards, name)?),
        _ => None,
    };
    let contexts = request.hist.as_deref().map(read_contexts).transpose()?;
    prepare_output_dir(&request.out)?;
    let gpu = request.inputs.gpu()?;
    let result = run_pipeline(
        &gpu,
        request,
        &config,
        &loaded,
        documents.as_ref(),
        merged.as_ref(),
    )?;
    let sae = &loaded.sae;
    let context = OutputContext {
        sae: &request.inputs.sae,
        provenance: serde_json::to_value(&sae.provenance)?,
        sae_description: &sae.provenance.describe(),
        token_text: &|t| loaded.tokens.text(t),
        contexts: contexts.as_ref(),
        across: loaded.across.as_ref().map(|o| o.dir.as_path()),
    };
    write_outputs(&request.out, &result, &config, &context)?;
    Ok(CategoriesOutcome::Report(Box::new(CategoriesReport {
        result,
        tokens: loaded.tokens,
    })))
}

/// The pipeline over the loaded inputs, with a progress bar over its passes on the shards.
fn run_pipeline(
    gpu: &Gpu,
    request: &CategoriesRequest,
    config: &CategoriesConfig,
    loaded: &Loaded,
    documents: Option<&RowColumn>,
    merged: Option<&SparseCounts>,
) -> anyhow::Result<CategoriesResult> {
    let params = &loaded.sae.params;
    let shards = &loaded.shards;
    let total_rows: u64 = shards.iter().map(|s| s.rows as u64).sum();
    let passes = if shards.is_empty() {
        0
    } else {
        shard_passes(config, params.d_sae, gpu.binding_limit(), merged.is_some())
    };
    let bar = progress::rows(total_rows * passes, request.quiet || passes == 0);
    let token_text = |t: i32| loaded.tokens.text(t);
    let vocab = loaded.tokens.0.as_ref().map(|t| {
        (
            t.get_vocab_size(true),
            &token_text as &dyn Fn(i32) -> String,
        )
    });
    let inputs = CategoriesInputs {
        params,
        shards: Arc::clone(shards),
        model: loaded.model.as_ref(),
        vocab,
        across: loaded.across.as_ref().map(|o| &o.params),
        families: loaded.families.as_ref(),
        documents,
        counts: merged,
    };
    let result =
        find_categories(gpu, &inputs, config, |rows| bar.inc(rows)).map_err(|e| match &request
            .tokenizer
        {
            Some(path) if e.to_string().contains("tokenizer's vocabulary") => {
                anyhow::anyhow!("{}: {e}", path.display())
            }
            _ => e,
        })?;
    bar.finish_and_clear();
    Ok(result)
}

/// The settings checked before anything is read.
fn check_settings(request: &CategoriesRequest) -> anyhow::Result<()> {
    let c = &request.config;
    anyhow::ensure!(c.batch_size > 0, "--batch-size must be at least 1");
    anyhow::ensure!(
        (1..=511).contains(&c.neighbours),
        "--neighbours must be between 1 and 511"
    );
    anyhow::ensure!(
        c.link_top >= 1 && c.link_top <= c.neighbours,
        "--link-top must be between 1 and --neighbours"
    );
    anyhow::ensure!(
        c.samples > 0,
        "--samples must be at least 1 (it is the number of reconstructions kept per category)"
    );
    anyhow::ensure!(
        c.resolution.iter().all(|r| r.is_finite() && *r > 0.0),
        "--resolution values must be positive"
    );
    anyhow::ensure!(c.null_draws >= 10, "--null-draws must be at least 10");
    if c.method == Method::Spectral && c.n_clusters.is_none() {
        bail!("--method spectral needs --n-clusters");
    }
    Ok(())
}

/// The SAE, the model, the tokenizer, the families, the other SAE and the shards, each
/// checked against the SAE: everything that can be refused, before any GPU work or output.
fn load_inputs(request: &CategoriesRequest) -> anyhow::Result<Loaded> {
    let inputs = &request.inputs;
    let sae = load_sae_at(&inputs.sae, inputs.hookpoint.as_deref())?;
    let (d_in, d_out, d_sae) = (sae.params.d_in, sae.params.d_out(), sae.params.d_sae);
    let name = inputs.sae.display();
    anyhow::ensure!(d_sae >= 2, "{name}: the SAE has one feature");
    if let Some(feature) = request.config.feature.filter(|&f| f >= d_sae) {
        bail!(
            "--feature {feature} is out of range: {name} has features 0..{}",
            d_sae - 1
        );
    }
    let model = request.model.as_deref().map(load_model).transpose()?;
    // The model's writers are compared with the decoder rows, in the space the decoder writes.
    if let Some(model) = model.as_ref().filter(|m| m.d_model != d_out) {
        bail!(
            "{name}: the SAE's decoder writes {d_out} values but the model's hidden size is {} ({})",
            model.d_model,
            model.path.with_file_name("config.json").display()
        );
    }
    let tokens = TokenText(
        request
            .tokenizer
            .as_deref()
            .map(load_tokenizer)
            .transpose()?,
    );
    let families = load_token_families(request, &tokens)?;
    let across = request.across.as_deref().map(load_sae).transpose()?;
    if let Some(other) = across.as_ref().filter(|o| o.params.d_out() != d_out) {
        bail!(
            "--across {}: its decoder writes {} values, {name}'s {d_out}",
            other.dir.display(),
            other.params.d_out()
        );
    }
    let shards = Arc::new(if inputs.shards.is_empty() {
        Vec::new()
    } else {
        open_shards(&expand_inputs(&inputs.shards)?, &inputs.tensor, Some(d_in))?
    });
    Ok(Loaded {
        sae,
        shards,
        model,
        tokens,
        families,
        across,
    })
}

fn load_token_families(
    request: &CategoriesRequest,
    tokens: &TokenText,
) -> anyhow::Result<Option<TokenFamilies>> {
    match (&request.families, &tokens.0) {
        (None, _) => Ok(None),
        (Some(_), None) => bail!("--families needs --tokenizer: families are sets of tokens"),
        (Some(path), Some(tok)) => {
            if request.inputs.shards.is_empty() {
                bail!("--families needs shards: specific features are counted on data");
            }
            let text = |t: i32| tokens.text(t);
            Ok(Some(load_families(path, tok.get_vocab_size(true), &text)?))
        }
    }
}

/// `--cooccurrence-from`: the parts' summed counts, checked to cover the shards given.
fn merged_counts(
    request: &CategoriesRequest,
    config: &CategoriesConfig,
    loaded: &Loaded,
) -> anyhow::Result<Option<SparseCounts>> {
    if request.cooccurrence_from.is_empty() {
        return Ok(None);
    }
    let Some(c) = &config.cooccurrence else {
        bail!("--cooccurrence-from needs co-occurrence on (a --cooccurrence-weight above 0)")
    };
    let settings = part_settings(&loaded.sae.params, c);
    let (counts, rows) = merge_cooccurrence_parts(&request.cooccurrence_from, &settings)?;
    let here: u64 = loaded.shards.iter().map(|s| s.rows as u64).sum();
    if !loaded.shards.is_empty() && here != rows {
        bail!(
            "the parts in --cooccurrence-from split {rows} rows but the shards given hold {here}: give the same shards"
        );
    }
    Ok(Some(counts))
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

/// `--part I/N`: the co-occurrence counts of this part's shards, written into `out`.
fn count_part(
    request: &CategoriesRequest,
    part: crate::data::parts::Part,
    c: CooccurrenceConfig,
    loaded: Loaded,
) -> anyhow::Result<CategoriesOutcome> {
    if !request.cooccurrence_from.is_empty() {
        bail!("--part counts one part; --cooccurrence-from merges parts: use one of them");
    }
    // The run has not shared the list yet.
    let mut sorted = Arc::try_unwrap(loaded.shards)
        .map_err(|_| anyhow::anyhow!("the shard list is in use elsewhere"))?;
    sorted.sort_by(|a, b| a.path.cmp(&b.path));
    if c.partners.unit == CooccurrenceUnit::Chunk {
        check_chunks_fit(&sorted, c.partners.chunk_rows)?;
    }
    let (mine, info) = split(sorted, part)?;
    let mine = Arc::new(mine);
    let documents = request
        .cooccurrence
        .document_column
        .as_ref()
        .map(|name| RowColumn::open(&mine, name))
        .transpose()?;
    prepare_output_dir(&request.out)?;
    let gpu = request.inputs.gpu()?;
    let batch_rows = request.config.batch_size;
    let mut sae = GpuSae::upload_with_cap(&gpu, &loaded.sae.params, DEFAULT_CAP, batch_rows)?;
    sae.set_matmul(&gpu, gpu.matmul(request.config.matmul)?)?;
    let bar = progress::rows(info.rows, request.quiet);
    let counts = pair_counts(
        &gpu,
        &sae,
        Arc::clone(&mine),
        c.partners,
        documents.as_ref(),
        batch_rows,
        |rows| bar.inc(rows),
    )?;
    bar.finish_and_clear();
    let settings = part_settings(&loaded.sae.params, &c);
    save_cooccurrence_part(&request.out, &counts, &info, settings)?;
    Ok(CategoriesOutcome::Part {
        info,
        units: counts.units,
        pairs: counts.i.len(),
    })
}

/// Chunks run across shard boundaries; a split between whole shards is exact only where no
/// chunk straddles one.
fn check_chunks_fit(sorted: &[Shard], chunk_rows: usize) -> anyhow::Result<()> {
    if let Some(s) = sorted[..sorted.len() - 1]
        .iter()
        .find(|s| s.rows % chunk_rows != 0)
    {
        bail!(
            "{}: {} rows is not a multiple of --chunk {}, so a chunk would straddle two parts; use --cooccurrence-unit row or document, or a --chunk dividing every shard",
            s.path.display(),
            s.rows,
            chunk_rows
        );
    }
    Ok(())
}

/// The co-occurrence half of the graph from the flags: on by default with shards (weight 1),
/// off without; any co-occurrence flag without shards is an error.
fn resolve_cooccurrence(request: &CategoriesRequest) -> anyhow::Result<Option<CooccurrenceConfig>> {
    let r = &request.cooccurrence;
    let has_shards = !request.inputs.shards.is_empty();
    check_cooccurrence_flags(r, has_shards)?;
    if request.config.method == Method::Engels {
        if r.weight.is_some_and(|w| w > 0.0) {
            bail!("--cooccurrence-weight blends the graph's affinities, which --method engels does not use (it links by decoder cosine alone)");
        }
        return Ok(None);
    }
    let weight = r.weight.unwrap_or(if has_shards { 1.0 } else { 0.0 });
    if weight == 0.0 {
        return Ok(None);
    }
    Ok(Some(CooccurrenceConfig {
        weight,
        partners: PartnerConfig {
            unit: r.unit.unwrap_or(CooccurrenceUnit::Row),
            chunk_rows: r.chunk.unwrap_or(256),
            fires_above: r.fires_above.unwrap_or(0.0),
            measure: r.measure.unwrap_or(CooccurrenceMeasure::Phi),
            partners: r.partners.unwrap_or(16),
            min_joint: r.min_joint.unwrap_or(3),
            memory_bytes: r.memory_mib << 20,
        },
    }))
}

/// Each co-occurrence flag checked, and checked against the others it needs.
fn check_cooccurrence_flags(r: &CooccurrenceRequest, has_shards: bool) -> anyhow::Result<()> {
    let given: Vec<&str> = [
        ("--cooccurrence-weight", r.weight.is_some()),
        ("--cooccurrence", r.measure.is_some()),
        ("--cooccurrence-unit", r.unit.is_some()),
        ("--chunk", r.chunk.is_some()),
        ("--document-column", r.document_column.is_some()),
        ("--partners", r.partners.is_some()),
        ("--min-joint", r.min_joint.is_some()),
        ("--fires-above", r.fires_above.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, set)| set.then_some(flag))
    .collect();
    if let Some(w) = r.weight {
        anyhow::ensure!(
            (0.0..=1.0).contains(&w),
            "--cooccurrence-weight must lie in [0, 1]"
        );
    }
    if let Some(flag) = given.first() {
        if !has_shards && r.weight != Some(0.0) {
            bail!("{flag} needs shards: co-occurrence is counted on data");
        }
    }
    anyhow::ensure!(
        r.partners.is_none_or(|m| m >= 1),
        "--partners must be at least 1"
    );
    anyhow::ensure!(r.chunk.is_none_or(|c| c >= 1), "--chunk must be at least 1");
    if r.chunk.is_some() && r.unit != Some(CooccurrenceUnit::Chunk) {
        bail!("--chunk sets the chunk of --cooccurrence-unit chunk; add that flag");
    }
    match (r.unit, &r.document_column) {
        (Some(CooccurrenceUnit::Document), None) => {
            bail!("--cooccurrence-unit document needs --document-column NAME (the shards' per-row document id)")
        }
        (unit, Some(_)) if unit != Some(CooccurrenceUnit::Document) => {
            bail!("--document-column is read with --cooccurrence-unit document; add that flag")
        }
        _ => {}
    }
    let fires_above = r.fires_above.unwrap_or(0.0);
    anyhow::ensure!(
        fires_above.is_finite() && fires_above >= 0.0,
        "--fires-above must be a non-negative number"
    );
    anyhow::ensure!(
        r.memory_mib >= 1,
        "--cooccurrence-memory must be at least 1 MiB"
    );
    Ok(())
}
