//! `sae attribute`: loads the SAE, the component cache, the model's output weights and the
//! transcoders, checks that they fit together (every mismatch one line naming file and
//! tensor, before any GPU work), runs the attribution pass, tests each group against its null
//! and writes the report (run::outputs::attribution_report).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use serde_json::json;

use crate::analysis::attribute::{
    attribute, attribute_group, check_resolution, families, random_groups, AttributionSetup,
    GroupReport, GroupRequest, HeadWeights, NullConfig, Totals, TranscoderSpec, Universe,
};
use crate::analysis::categories::writers::load_model;
use crate::data::parts::{check_complete, split_by, Part, PartInfo};
use crate::data::ComponentCache;
use crate::gpu::{AdapterRequest, Gpu};
use crate::run::outputs::attribution_parts::{read_part, write_part, PART_JSON};
use crate::run::outputs::attribution_report::{write_report, ReportContext};
use crate::run::outputs::top_examples::load_tokenizer;
use crate::sae::formats::{load_sae_at, read_json, LoadedSae};
use crate::sae::params::{Activation, InputNorm};

/// Where groups come from.
#[derive(Clone, Debug, Default)]
pub struct GroupSources {
    /// `--members a,b,c`, each one group.
    pub members: Vec<Vec<usize>>,
    /// `--categories DIR`: every category of a `sae categories` output…
    pub categories: Option<PathBuf>,
    /// …or with `--feature N` only N's…
    pub feature: Option<usize>,
    /// …or the N best-ranked significant ones.
    pub top: Option<usize>,
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
    /// Only part I of N of the cache files: the sums are written for `sae attribute merge`.
    pub part: Option<Part>,
}

/// What the job found and wrote.
pub struct AttributeReport {
    pub totals: Totals,
    pub groups: Vec<GroupReport>,
    pub seconds: f64,
    /// A part's: what it covered (its sums are written, its groups left to the merge).
    pub part: Option<PartInfo>,
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
/// The SAE must read the cache's residual: where it names its hook (SAELens `hook_name`, a
/// sparsify hookpoint `layers.N`, the output of block N), that hook; and it must be an SAE of
/// that residual, not a transcoder reading another activation. An SAE that names no hook
/// (a bare sparsify directory) is checked by width alone.
fn check_hook(loaded: &LoadedSae, resid: &str) -> anyhow::Result<()> {
    let p = &loaded.provenance;
    let named = match (p.hook_name.as_deref(), p.hookpoint.as_deref()) {
        (Some(h), _) if h.starts_with("blocks.") && h.ends_with(".hook_resid_post") => {
            Some(h.to_string())
        }
        (_, Some(h)) => h
            .strip_prefix("layers.")
            .and_then(|n| n.parse::<usize>().ok())
            .map(|n| format!("blocks.{n}.hook_resid_post")),
        _ => None,
    };
    if let Some(hook) = named.filter(|h| h != resid) {
        bail!(
            "{}: the SAE reads '{hook}' but the cache's residual is '{resid}'",
            loaded.dir.display()
        );
    }
    if loaded.params.is_transcoder() {
        bail!("{}: a transcoder reads another activation than the residual it writes; attribute an SAE of '{resid}' (transcoders go in --transcoder)", loaded.dir.display());
    }
    if matches!(loaded.params.activation, Activation::Gated { .. }) {
        bail!("{}: a gated SAE fires on h + b_gate, not on the pre-activation attributed here; not supported", loaded.dir.display());
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
    if let Some(out) = loaded.provenance.hook_name_out.as_deref() {
        if out.starts_with("blocks.") && out != hook {
            bail!(
                "--transcoder {hook}={}: the transcoder writes '{out}'",
                dir.display()
            );
        }
    }
    let params = loaded.params;
    if !params.is_transcoder() {
        bail!(
            "--transcoder {hook}={}: an SAE, not a transcoder (its decoder rebuilds its own input)",
            dir.display()
        );
    }
    if params.input_norm != InputNorm::None || matches!(params.activation, Activation::Gated { .. })
    {
        bail!("--transcoder {hook}={}: per-row input normalisation and gated transcoders are not split into parts", dir.display());
    }
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
        groups.extend(category_groups(dir, sources.feature, sources.top)?);
    } else if sources.feature.is_some() {
        bail!("--feature needs --categories DIR (the category of a feature comes from there)");
    }
    for g in &groups {
        if let Some((n, &twice)) = g
            .members
            .iter()
            .enumerate()
            .find(|(n, m)| g.members[..*n].contains(m))
        {
            bail!(
                "group {}: latent {twice} appears twice (at positions {} and {n})",
                g.id,
                g.members.iter().position(|m| *m == twice).unwrap_or(0)
            );
        }
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

/// Every category of `dir/categories.json` (only `feature`'s, or the `top` best-ranked
/// significant ones), ids `category-{rank}` as the categories report names its pages.
fn category_groups(
    dir: &Path,
    feature: Option<usize>,
    top: Option<usize>,
) -> anyhow::Result<Vec<GroupRequest>> {
    let path = dir.join("categories.json");
    let json = read_json(&path).context("not a `sae categories` output")?;
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
        if top.is_some() && c["significant"].as_bool() != Some(true) {
            continue;
        }
        let rank = c["rank"].as_u64().unwrap_or(groups.len() as u64 + 1);
        groups.push((
            rank,
            GroupRequest {
                id: format!("category-{rank:03}"),
                members,
            },
        ));
    }
    if let Some(n) = top {
        groups.sort_by_key(|g| g.0);
        groups.truncate(n);
    }
    if let (Some(f), true) = (feature, groups.is_empty()) {
        bail!(
            "{}: feature {f} is in none of the categories",
            path.display()
        );
    }
    Ok(groups.into_iter().map(|g| g.1).collect())
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
    files: Vec<PathBuf>,
    part: Option<PartInfo>,
}

/// The cache files of this part (all of them without `--part`).
fn part_files(request: &AttributeRequest) -> anyhow::Result<(Vec<PathBuf>, Option<PartInfo>)> {
    let files = cache_files(&request.caches)?;
    let Some(part) = request.part else {
        return Ok((files, None));
    };
    let all = ComponentCache::open(&files)?;
    let sized: Vec<(PathBuf, u64)> = files
        .iter()
        .enumerate()
        .map(|(f, p)| (p.clone(), all.file_rows(f) as u64))
        .collect();
    let (mine, info) = split_by(sized, |(p, rows)| (p.as_path(), *rows), part)?;
    Ok((mine.into_iter().map(|(p, _)| p).collect(), Some(info)))
}

fn load(request: &AttributeRequest) -> anyhow::Result<Loaded> {
    let sae = load_sae_at(&request.sae, request.hookpoint.as_deref())?;
    let (files, part) = part_files(request)?;
    let cache = ComponentCache::open(&files)?;
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
        files,
        part,
    })
}

pub fn run_attribute(request: &AttributeRequest) -> anyhow::Result<AttributeReport> {
    if request.part.is_none() {
        let families = families(request.model.is_some(), request.transcoders.len());
        check_resolution(request.null, families).map_err(anyhow::Error::msg)?;
    }
    let loaded = load(request)?;
    let tokenizer = request
        .tokenizer
        .as_deref()
        .map(load_tokenizer)
        .transpose()?;
    let gpu = Gpu::new(&request.adapter)?;
    let start = std::time::Instant::now();
    let hooks = part_hooks(request, &loaded.transcoders);
    let setup = AttributionSetup {
        sae: &loaded.sae.params,
        cache: loaded.cache.clone(),
        resid: loaded.resid.clone(),
        components: loaded.components.clone(),
        heads: loaded.heads,
        transcoders: loaded.transcoders,
        batch_rows: request.batch_rows,
        cap: request.cap,
        token_groups: loaded.groups.iter().map(|g| g.members.clone()).collect(),
    };
    let bar = crate::run::progress::rows(loaded.cache.rows(), request.quiet);
    let totals = attribute(&gpu, &setup, |n| bar.inc(n))?;
    bar.finish_and_clear();
    if let Some(info) = loaded.part {
        let meta = json!({
            "format": "sae attribute part v1",
            "part": info,
            "sae": request.sae.display().to_string(),
            "hookpoint": request.hookpoint,
            "model": request.model.as_ref().map(|m| m.display().to_string()),
            "residual": loaded.resid,
            "d_sae": totals.d_sae,
            "rows": totals.rows,
            "dropped_beyond_cap": totals.dropped,
            "components": totals.components,
            "heads": totals.heads,
            "hooks": hooks,
            "token_groups": totals.token_groups(),
        });
        write_part(&request.out, &totals, &meta)?;
        return Ok(AttributeReport {
            seconds: start.elapsed().as_secs_f64(),
            totals,
            groups: Vec::new(),
            part: Some(info),
        });
    }
    let done = Finished {
        sae: &loaded.sae,
        resid: &loaded.resid,
        cache_files: loaded.files,
        groups: loaded.groups,
        seconds: start.elapsed().as_secs_f64(),
    };
    finish(request, totals, done, tokenizer.as_ref())
}

/// The transcoded hooks as a part records them.
fn part_hooks(
    request: &AttributeRequest,
    transcoders: &[TranscoderSpec],
) -> Vec<serde_json::Value> {
    transcoders
        .iter()
        .zip(&request.transcoders)
        .map(|(t, (_, dir))| json!({"hook": t.hook, "transcoder": dir.display().to_string()}))
        .collect()
}

/// What a finished pass (or a merge of parts) hands to the groups and the report.
struct Finished<'a> {
    sae: &'a LoadedSae,
    resid: &'a str,
    cache_files: Vec<PathBuf>,
    groups: Vec<GroupRequest>,
    seconds: f64,
}

/// Tests every group (and the random ones) against its null and writes the report.
fn finish(
    request: &AttributeRequest,
    totals: Totals,
    done: Finished<'_>,
    tokenizer: Option<&tokenizers::Tokenizer>,
) -> anyhow::Result<AttributeReport> {
    let universe = Universe::new(&totals);
    let mut groups = done.groups;
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
        sae: done.sae,
        resid: done.resid,
        cache_files: done.cache_files,
        tokenizer,
        seconds: done.seconds,
    };
    write_report(&request.out, &totals, &reports, &context)?;
    Ok(AttributeReport {
        seconds: done.seconds,
        totals,
        groups: reports,
        part: None,
    })
}

/// `sae attribute merge PARTS… --out DIR`: the parts' sums added (checked to be every part of
/// one split, of one SAE and the same columns), then the groups and the report as one pass
/// gives them. `request` gives the groups, null and output; its SAE and transcoders come from
/// the parts.
pub fn merge_attribute(
    parts: &[PathBuf],
    request: &AttributeRequest,
) -> anyhow::Result<AttributeReport> {
    let mut read = Vec::new();
    for dir in parts {
        let (meta, totals) = read_part(dir)?;
        let info: PartInfo = serde_json::from_value(meta["part"].clone())
            .with_context(|| format!("{}: no \"part\" record", dir.join(PART_JSON).display()))?;
        read.push((info, (dir.clone(), meta, totals)));
    }
    let read = check_complete(read, |(dir, _, _)| dir.display().to_string())
        .map_err(anyhow::Error::msg)?;
    let (_, (first_dir, first, _)) = &read[0];
    for (_, (dir, meta, _)) in &read[1..] {
        for key in [
            "sae",
            "hookpoint",
            "residual",
            "d_sae",
            "components",
            "heads",
            "hooks",
        ] {
            if meta[key] != first[key] {
                bail!(
                    "{}: its '{key}' differs from {}'s: parts of one job share the SAE, the cache's columns and the transcoders",
                    dir.display(),
                    first_dir.display()
                );
            }
        }
    }
    let hooks = first["hooks"].as_array().map_or(0, Vec::len);
    let heads = first["heads"].as_array().is_some_and(|h| !h.is_empty());
    check_resolution(request.null, families(heads, hooks)).map_err(anyhow::Error::msg)?;
    let mut totals = read[0].1 .2.clone_empty();
    let mut files = Vec::new();
    for (info, (_, _, part)) in &read {
        totals.absorb(part);
        files.extend(info.shards.iter().map(PathBuf::from));
    }
    let sae_dir = PathBuf::from(first["sae"].as_str().unwrap_or_default());
    let sae = load_sae_at(&sae_dir, first["hookpoint"].as_str())?;
    if sae.params.d_sae != totals.d_sae {
        bail!(
            "{}: has {} latents but the parts have {}",
            sae_dir.display(),
            sae.params.d_sae,
            totals.d_sae
        );
    }
    let mut request = request.clone();
    request.sae = sae_dir;
    request.transcoders = first["hooks"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| {
            (
                h["hook"].as_str().unwrap_or_default().to_string(),
                PathBuf::from(h["transcoder"].as_str().unwrap_or_default()),
            )
        })
        .collect();
    let tokenizer = request
        .tokenizer
        .as_deref()
        .map(load_tokenizer)
        .transpose()?;
    let groups = requested_groups(&request.groups, totals.d_sae)?;
    let resid = first["residual"].as_str().unwrap_or_default().to_string();
    let done = Finished {
        sae: &sae,
        resid: &resid,
        cache_files: files,
        groups,
        seconds: 0.0,
    };
    finish(&request, totals, done, tokenizer.as_ref())
}

fn median_size(groups: &[GroupRequest]) -> usize {
    let mut sizes: Vec<usize> = groups.iter().map(|g| g.members.len()).collect();
    sizes.sort_unstable();
    sizes.get(sizes.len() / 2).copied().unwrap_or(8)
}
