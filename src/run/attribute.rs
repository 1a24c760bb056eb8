//! `sae attribute`: loads the SAE, the component cache, the model's output weights and the
//! transcoders, checks that they fit together (every mismatch one line naming file and
//! tensor, before any GPU work), runs the attribution pass, tests each group against its null
//! and writes the report (run::outputs::attribution_report).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};

use crate::analysis::attribute::{
    attribute, attribute_group, random_groups, AttributionSetup, GroupReport, GroupRequest,
    HeadWeights, NullConfig, Totals, TranscoderSpec, Universe,
};
use crate::analysis::categories::writers::load_model;
use crate::data::ComponentCache;
use crate::gpu::{AdapterRequest, Gpu};
use crate::run::outputs::attribution_report::{write_report, ReportContext};
use crate::run::outputs::top_examples::load_tokenizer;
use crate::sae::formats::{load_sae_at, LoadedSae};

/// Where groups come from.
#[derive(Clone, Debug, Default)]
pub struct GroupSources {
    /// `--members a,b,c`, each one group.
    pub members: Vec<Vec<usize>>,
    /// `--categories DIR`: every category of a `sae categories` output…
    pub categories: Option<PathBuf>,
    /// …or with `--feature N` only N's.
    pub feature: Option<usize>,
    /// `--random-groups N`: calibration groups of random live latents.
    pub random: usize,
    /// Their size (default: the median size of the other groups, else 8).
    pub random_size: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct AttributeRequest {
    pub sae: PathBuf,
    pub hookpoint: Option<String>,
    /// Cache files or directories (`components_*.safetensors` inside).
    pub caches: Vec<PathBuf>,
    pub out: PathBuf,
    /// `writers.safetensors` (o_proj per block) for per-head terms.
    pub model: Option<PathBuf>,
    /// (`blocks.{l}.hook_mlp_out`, transcoder directory).
    pub transcoders: Vec<(String, PathBuf)>,
    pub groups: GroupSources,
    pub null: NullConfig,
    pub tokenizer: Option<PathBuf>,
    pub batch_rows: usize,
    pub cap: usize,
    pub adapter: AdapterRequest,
    pub quiet: bool,
}

/// What the job found and wrote.
pub struct AttributeReport {
    pub totals: Totals,
    pub groups: Vec<GroupReport>,
    pub seconds: f64,
}

/// The cache files: files as given, directories by their `components_*.safetensors`.
pub fn cache_files(args: &[PathBuf]) -> anyhow::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for arg in args {
        if arg.is_dir() {
            let mut found: Vec<PathBuf> = std::fs::read_dir(arg)
                .with_context(|| format!("{}: cannot list", arg.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with("components_") && n.ends_with(".safetensors")
                    })
                })
                .collect();
            if found.is_empty() {
                bail!(
                    "{}: no components_*.safetensors (a cache of scripts/cache_components.py)",
                    arg.display()
                );
            }
            found.sort();
            files.extend(found);
        } else if arg.is_file() {
            files.push(arg.clone());
        } else {
            bail!("{}: no such cache file or directory", arg.display());
        }
    }
    Ok(files)
}

/// The residual tensor of the cache (`blocks.{L-1}.hook_resid_post`) and L.
fn find_residual(cache: &ComponentCache) -> anyhow::Result<(String, usize)> {
    let found: Vec<(String, usize)> = cache
        .names()
        .into_iter()
        .filter_map(|n| {
            let l: usize = n
                .strip_prefix("blocks.")?
                .strip_suffix(".hook_resid_post")?
                .parse()
                .ok()?;
            Some((n, l + 1))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "{}: no blocks.N.hook_resid_post tensor (the residual the SAE reads)",
            cache.path(0).display()
        ),
        _ => bail!(
            "{}: several hook_resid_post tensors; a cache holds one residual",
            cache.path(0).display()
        ),
    }
}

/// The components that sum to the residual after block L−1, each checked for width d.
fn components(cache: &ComponentCache, layers: usize, d: usize) -> anyhow::Result<Vec<String>> {
    let mut names = vec!["hook_embed".to_string()];
    if cache.has("hook_pos_embed") {
        names.push("hook_pos_embed".into());
    }
    for l in 0..layers {
        names.push(format!("blocks.{l}.hook_attn_out"));
        names.push(format!("blocks.{l}.hook_mlp_out"));
    }
    for n in &names {
        cache.require(n, d, "a component of the residual the SAE reads")?;
    }
    Ok(names)
}

/// The SAE's hook, where it names one, must be the cache's residual.
fn check_hook(loaded: &LoadedSae, resid: &str) -> anyhow::Result<()> {
    let hook = loaded.provenance.hook_name.as_deref().unwrap_or("");
    if hook.starts_with("blocks.") && hook.ends_with(".hook_resid_post") && hook != resid {
        bail!(
            "{}: the SAE reads '{hook}' but the cache's residual is '{resid}'",
            loaded.dir.display()
        );
    }
    Ok(())
}

fn head_weights(
    path: &Path,
    cache: &ComponentCache,
    layers: usize,
    d: usize,
) -> anyhow::Result<HeadWeights> {
    let model = load_model(path)?;
    if model.d_model != d {
        bail!(
            "{}: d_model {} but the cache's residual has width {d}",
            path.display(),
            model.d_model
        );
    }
    let mut blocks = Vec::new();
    for (l, o_proj, _) in model.blocks.into_iter().filter(|(l, _, _)| *l < layers) {
        let z = format!("blocks.{l}.attn.hook_z");
        match cache.row_shape(&z) {
            Some([h, dh]) if *h == model.n_heads && *dh == model.head_dim => {}
            Some(shape) => bail!(
                "{}: tensor '{z}' has rows of shape {shape:?} but {} has {} heads of {}",
                cache.path(0).display(),
                path.display(),
                model.n_heads,
                model.head_dim
            ),
            None => bail!(
                "{}: no tensor '{z}': --model needs the heads' inputs in the cache (scripts/cache_components.py --heads)",
                cache.path(0).display()
            ),
        }
        blocks.push((l, o_proj));
    }
    if blocks.len() != layers {
        bail!(
            "{}: holds o_proj for {} of the {layers} blocks below the residual",
            path.display(),
            blocks.len()
        );
    }
    Ok(HeadWeights {
        n_heads: model.n_heads,
        d_head: model.head_dim,
        blocks,
    })
}

fn transcoder(
    hook: &str,
    dir: &Path,
    cache: &ComponentCache,
    components: &[String],
    d: usize,
) -> anyhow::Result<TranscoderSpec> {
    if !components.iter().any(|c| c == hook) || !hook.ends_with(".hook_mlp_out") {
        bail!("--transcoder {hook}={}: '{hook}' is not one of the cache's blocks.N.hook_mlp_out below the residual", dir.display());
    }
    let block = hook.trim_end_matches(".hook_mlp_out");
    let input = format!("{block}.ln2.hook_normalized");
    let loaded = load_sae_at(dir, None)?;
    let params = loaded.params;
    if params.d_out() != d {
        bail!(
            "{}: writes {} values but '{hook}' has width {d}",
            dir.display(),
            params.d_out()
        );
    }
    cache
        .require(
            &input,
            params.d_in,
            &format!("the transcoder {}", dir.display()),
        )
        .map_err(|e| {
            anyhow!(
                "{e} (scripts/cache_components.py --mlp-in {})",
                block.trim_start_matches("blocks.")
            )
        })?;
    Ok(TranscoderSpec {
        hook: hook.to_string(),
        input,
        params,
    })
}

/// The groups asked for, members checked against d_sae.
fn requested_groups(sources: &GroupSources, d_sae: usize) -> anyhow::Result<Vec<GroupRequest>> {
    let mut groups: Vec<GroupRequest> = sources
        .members
        .iter()
        .enumerate()
        .map(|(n, m)| GroupRequest {
            id: format!("members-{}", n + 1),
            members: m.clone(),
        })
        .collect();
    if let Some(dir) = &sources.categories {
        groups.extend(category_groups(dir, sources.feature)?);
    } else if sources.feature.is_some() {
        bail!("--feature needs --categories DIR (the category of a feature comes from there)");
    }
    for g in &groups {
        if let Some(&bad) = g.members.iter().find(|&&m| m >= d_sae) {
            bail!(
                "group {}: latent {bad} is out of range (the SAE has {d_sae})",
                g.id
            );
        }
        if g.members.is_empty() {
            bail!("group {}: no members", g.id);
        }
    }
    Ok(groups)
}

/// Every category of `dir/categories.json` (or only `feature`'s), ids `category-{label}`.
fn category_groups(dir: &Path, feature: Option<usize>) -> anyhow::Result<Vec<GroupRequest>> {
    let path = dir.join("categories.json");
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: cannot read (a `sae categories` output)",
            path.display()
        )
    })?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let list = json["categories"]
        .as_array()
        .ok_or_else(|| anyhow!("{}: no 'categories' list", path.display()))?;
    let mut groups = Vec::new();
    for c in list {
        let members: Vec<usize> = c["members"]
            .as_array()
            .ok_or_else(|| anyhow!("{}: a category without 'members'", path.display()))?
            .iter()
            .map(|m| m.as_u64().map(|v| v as usize))
            .collect::<Option<_>>()
            .ok_or_else(|| anyhow!("{}: 'members' must be latent ids", path.display()))?;
        if feature.is_some_and(|f| !members.contains(&f)) {
            continue;
        }
        let label = c["label"].as_u64().unwrap_or(groups.len() as u64 + 1);
        groups.push(GroupRequest {
            id: format!("category-{label:03}"),
            members,
        });
    }
    if let (Some(f), true) = (feature, groups.is_empty()) {
        bail!(
            "{}: feature {f} is in none of the categories",
            path.display()
        );
    }
    Ok(groups)
}

/// Everything the pass needs, loaded and checked before the GPU starts.
struct Loaded {
    sae: LoadedSae,
    cache: Arc<ComponentCache>,
    resid: String,
    components: Vec<String>,
    heads: Option<HeadWeights>,
    transcoders: Vec<TranscoderSpec>,
    groups: Vec<GroupRequest>,
}

fn load(request: &AttributeRequest) -> anyhow::Result<Loaded> {
    let sae = load_sae_at(&request.sae, request.hookpoint.as_deref())?;
    let cache = ComponentCache::open(&cache_files(&request.caches)?)?;
    let (resid, layers) = find_residual(&cache)?;
    let d = sae.params.d_in;
    cache.require(&resid, d, &format!("the SAE {}", request.sae.display()))?;
    check_hook(&sae, &resid)?;
    let components = components(&cache, layers, d)?;
    let heads = request
        .model
        .as_deref()
        .map(|m| head_weights(m, &cache, layers, d))
        .transpose()?;
    let transcoders = request
        .transcoders
        .iter()
        .map(|(hook, dir)| transcoder(hook, dir, &cache, &components, d))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let groups = requested_groups(&request.groups, sae.params.d_sae)?;
    Ok(Loaded {
        sae,
        cache: Arc::new(cache),
        resid,
        components,
        heads,
        transcoders,
        groups,
    })
}

pub fn run_attribute(request: &AttributeRequest) -> anyhow::Result<AttributeReport> {
    let loaded = load(request)?;
    let tokenizer = request
        .tokenizer
        .as_deref()
        .map(load_tokenizer)
        .transpose()?;
    let gpu = Gpu::new(&request.adapter)?;
    let start = std::time::Instant::now();
    let setup = AttributionSetup {
        sae: &loaded.sae.params,
        cache: loaded.cache.clone(),
        resid: loaded.resid.clone(),
        components: loaded.components.clone(),
        heads: loaded.heads,
        transcoders: loaded.transcoders,
        batch_rows: request.batch_rows,
        cap: request.cap,
    };
    let bar = crate::run::progress::rows(loaded.cache.rows(), request.quiet);
    let totals = attribute(&gpu, &setup, |n| bar.inc(n))?;
    bar.finish_and_clear();
    let universe = Universe::new(&totals);
    let mut groups = loaded.groups;
    if request.groups.random > 0 {
        let size = request
            .groups
            .random_size
            .unwrap_or_else(|| median_size(&groups));
        groups.extend(random_groups(
            &universe,
            request.groups.random,
            size,
            request.null.seed,
        ));
    }
    let reports: Vec<GroupReport> = groups
        .iter()
        .map(|g| attribute_group(&universe, g, request.null))
        .collect();
    let context = ReportContext {
        request,
        sae: &loaded.sae,
        resid: &loaded.resid,
        cache_files: cache_files(&request.caches)?,
        tokenizer: tokenizer.as_ref(),
        seconds: start.elapsed().as_secs_f64(),
    };
    write_report(&request.out, &totals, &reports, &context)?;
    Ok(AttributeReport {
        seconds: context.seconds,
        totals,
        groups: reports,
    })
}

fn median_size(groups: &[GroupRequest]) -> usize {
    let mut sizes: Vec<usize> = groups.iter().map(|g| g.members.len()).collect();
    sizes.sort_unstable();
    sizes.get(sizes.len() / 2).copied().unwrap_or(8)
}
