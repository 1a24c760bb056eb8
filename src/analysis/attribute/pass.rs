//! The attribution pass: one stream over a component cache. Per batch the SAE encodes the
//! residual on the GPU; for every (row, selected latent) pair, pair_dot gives each component's
//! term in the latent's pre-activation (the encoder column of that latent against the
//! component's row), each head's through tables W_O^{l,h}·W_enc precomputed once, and each
//! upstream transcoder feature's through W_dec^tc[j]·W_enc; the host adds them up per latent
//! in f64. The cost per row is the selected latents × d × terms, never d_sae × d.

use std::sync::Arc;

use anyhow::{bail, Context};

use super::totals::Totals;
use crate::analysis::scan::{Consumer, Scales, Scan, Scanned};
use crate::data::{ActDtype, Batch, ComponentCache, ComponentStream};
use crate::gpu::kernels::pair_dot::{launch_pair_dot, PairDotShape, NONE};
use crate::gpu::{Gpu, GpuBuffer, Recorder};
use crate::sae::params::{InputNorm, SaeParams};
use crate::sae::pass::{ForwardPass, PassDepth};
use crate::sae::GpuSae;

/// The output weights of the attention blocks whose heads are attributed.
pub struct HeadWeights {
    pub n_heads: usize,
    pub d_head: usize,
    /// (block, o_proj [d_model, n_heads·d_head]) per block, in cache order.
    pub blocks: Vec<(usize, Vec<f32>)>,
}

/// A transcoder standing in for one MLP: its input and output tensors in the cache.
pub struct TranscoderSpec {
    /// `blocks.{l}.hook_mlp_out`, the component it splits.
    pub hook: String,
    /// `blocks.{l}.ln2.hook_normalized`, what it reads.
    pub input: String,
    pub params: SaeParams,
}

/// What to attribute, and to what.
pub struct AttributionSetup<'a> {
    pub sae: &'a SaeParams,
    pub cache: Arc<ComponentCache>,
    /// The residual the SAE reads (`blocks.{L-1}.hook_resid_post`).
    pub resid: String,
    /// The components that sum to it.
    pub components: Vec<String>,
    pub heads: Option<HeadWeights>,
    pub transcoders: Vec<TranscoderSpec>,
    pub batch_rows: usize,
    /// Latents kept per row by thresholded SAEs.
    pub cap: usize,
    /// Groups (member lists) whose heads are also summed token by token, for their pages: the
    /// groups asked for, known before the pass (the first [`super::totals::MAX_TOKEN_GROUPS`]).
    pub token_groups: Vec<Vec<usize>>,
}

/// The largest relative gap between the components' sum and the residual a cache may show:
/// f32 rounding, or each component's 16-bit storage rounding (bf16 keeps 3 fewer bits).
fn sum_tolerance(coarsest: ActDtype) -> f64 {
    match coarsest {
        ActDtype::F32 => 1e-4,
        ActDtype::F16 => 5e-3,
        ActDtype::Bf16 => 3e-2,
    }
}

/// The GPU side of the pass: the SAE's and transcoders' forward passes and the launch buffers.
struct Launches<'g> {
    gpu: &'g Gpu,
    d: usize,
    k: usize,
    channels: usize,
    enc_rows: GpuBuffer,
    x: GpuBuffer,
    ia: GpuBuffer,
    ib: GpuBuffer,
    out: GpuBuffer,
    heads: Option<HeadLaunches>,
    upstream: Vec<UpstreamLaunch>,
}

struct HeadLaunches {
    n_heads: usize,
    d_head: usize,
    /// Per block: its W_O^{l,h}·W_enc tables [heads, d_sae, d_head].
    tables: Vec<GpuBuffer>,
    /// Per block: ia[r, h] = (r·blocks + b)·heads + h into `z`.
    ia: Vec<GpuBuffer>,
    z: GpuBuffer,
    out: Vec<GpuBuffer>,
}

struct UpstreamLaunch {
    k: usize,
    w_dec: GpuBuffer,
    ia: GpuBuffer,
    out: GpuBuffer,
}

/// `params.w_enc` [d, n] as rows [n, d].
fn encoder_rows(params: &SaeParams) -> Vec<f32> {
    params.w_enc_transposed()
}

/// The per-head tables W_O^{l,h}ᵀ·W_enc for one block: [heads, d_sae, d_head], by pair_dot
/// with one output row per (head, latent).
fn head_table(
    gpu: &Gpu,
    enc_rows: &GpuBuffer,
    o_proj: &[f32],
    d: usize,
    d_sae: usize,
    (n_heads, d_head): (usize, usize),
) -> anyhow::Result<GpuBuffer> {
    let width = n_heads * d_head;
    let mut o_t = vec![0.0f32; width * d];
    for row in 0..d {
        for col in 0..width {
            o_t[col * d + row] = o_proj[row * width + col];
        }
    }
    let ia: Vec<u32> = (0..n_heads * d_sae)
        .flat_map(|r| {
            let h = r / d_sae;
            (0..d_head).map(move |t| (h * d_head + t) as u32)
        })
        .collect();
    let ib: Vec<u32> = (0..n_heads * d_sae).map(|r| (r % d_sae) as u32).collect();
    let table = gpu.storage::<f32>("head table", n_heads * d_sae * d_head)?;
    let (x, ia, ib) = (
        gpu.upload("o_proj rows", &o_t)?,
        gpu.upload("head table ia", &ia)?,
        gpu.upload("head table ib", &ib)?,
    );
    let mut rec = Recorder::new(gpu, "head tables");
    let shape = PairDotShape {
        rows: n_heads * d_sae,
        ka: d_head,
        kb: 1,
        dim: d,
        y_step: 0,
    };
    launch_pair_dot(&mut rec, &x, enc_rows, &ia, &ib, &table, shape)?;
    rec.submit()?;
    Ok(table)
}

impl<'g> Launches<'g> {
    fn new(
        gpu: &'g Gpu,
        setup: &AttributionSetup<'_>,
        k: usize,
        tc_ks: &[usize],
    ) -> anyhow::Result<Self> {
        let (d, d_sae, cap) = (setup.sae.d_in, setup.sae.d_sae, setup.batch_rows);
        let channels = channel_names(setup).len();
        let enc_rows = gpu.upload("encoder rows", &encoder_rows(setup.sae))?;
        let ia: Vec<u32> = (0..cap * channels).map(|e| e as u32).collect();
        let heads = match &setup.heads {
            None => None,
            Some(hw) => {
                let blocks = hw.blocks.len();
                let mut tables = Vec::new();
                for (_, o_proj) in &hw.blocks {
                    let shape = (hw.n_heads, hw.d_head);
                    tables.push(head_table(gpu, &enc_rows, o_proj, d, d_sae, shape)?);
                }
                let ia = (0..blocks)
                    .map(|b| {
                        let idx: Vec<u32> = (0..cap * hw.n_heads)
                            .map(|e| {
                                let (r, h) = (e / hw.n_heads, e % hw.n_heads);
                                ((r * blocks + b) * hw.n_heads + h) as u32
                            })
                            .collect();
                        gpu.upload("head ia", &idx)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                let out = (0..blocks)
                    .map(|_| gpu.storage::<f32>("head terms", cap * k * hw.n_heads))
                    .collect::<Result<Vec<_>, _>>()?;
                Some(HeadLaunches {
                    n_heads: hw.n_heads,
                    d_head: hw.d_head,
                    tables,
                    ia,
                    z: gpu.storage::<f32>("hook_z", cap * blocks * hw.n_heads * hw.d_head)?,
                    out,
                })
            }
        };
        let upstream = setup
            .transcoders
            .iter()
            .zip(tc_ks)
            .map(|(tc, &k_tc)| {
                Ok(UpstreamLaunch {
                    k: k_tc,
                    w_dec: gpu.upload("transcoder decoder", &tc.params.w_dec)?,
                    ia: gpu.storage::<u32>("transcoder codes", cap * k_tc)?,
                    out: gpu.storage::<f32>("upstream terms", cap * k * k_tc)?,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Launches {
            gpu,
            d,
            k,
            channels,
            x: gpu.storage::<f32>("component rows", cap * channels * d)?,
            ia: gpu.upload("component ia", &ia)?,
            ib: gpu.storage::<u32>("selected latents", cap * k)?,
            out: gpu.storage::<f32>("component terms", cap * k * channels)?,
            enc_rows,
            heads,
            upstream,
        })
    }
}

/// The rows pair_dot reads per batch row: the residual, each component, then per transcoder
/// its skip path (if any), its bias and its error.
fn channel_names(setup: &AttributionSetup<'_>) -> Vec<String> {
    let mut names = vec![setup.resid.clone()];
    names.extend(setup.components.iter().cloned());
    for tc in &setup.transcoders {
        if tc.params.w_skip().is_some() {
            names.push(format!("{}:skip", tc.hook));
        }
        names.push(format!("{}:bias", tc.hook));
        names.push(format!("{}:error", tc.hook));
    }
    names
}

/// A selected latent's ids for pair_dot: NONE where the code is 0 (padding).
fn selected(idx: &[u32], val: &[f32]) -> Vec<u32> {
    idx.iter()
        .zip(val)
        .map(|(&i, &v)| if v != 0.0 { i } else { NONE })
        .collect()
}

/// What one transcoder gives on a batch: codes and the extra channels.
pub(super) struct TranscoderRows {
    pub idx: Vec<u32>,
    pub val: Vec<f32>,
    /// [rows, d] each: skip path (if any), bias (b_dec), error (target − reconstruction).
    pub extra: Vec<Vec<f32>>,
}

fn run_transcoder(
    pass: &ForwardPass<'_, '_>,
    params: &SaeParams,
    input: &[f32],
    target: &[f32],
    rows: usize,
) -> anyhow::Result<TranscoderRows> {
    let d = params.d_out();
    pass.run(input, rows, |_, _| Ok(()))?;
    let (idx, val) = pass.codes(rows)?;
    let recon = pass.reconstructions(rows)?;
    let k = idx.len() / rows.max(1);
    let mut sparse = vec![0.0f32; rows * d];
    for r in 0..rows {
        for s in 0..k {
            let (j, g) = (idx[r * k + s] as usize, val[r * k + s]);
            if g != 0.0 {
                let row = &params.w_dec[j * d..(j + 1) * d];
                for (o, w) in sparse[r * d..(r + 1) * d].iter_mut().zip(row) {
                    *o += g * w;
                }
            }
        }
    }
    let mut extra = Vec::new();
    if params.w_skip().is_some() {
        let skip = (0..rows * d)
            .map(|e| recon[e] - sparse[e] - params.b_dec[e % d])
            .collect();
        extra.push(skip);
    }
    extra.push((0..rows * d).map(|e| params.b_dec[e % d]).collect());
    extra.push((0..rows * d).map(|e| target[e] - recon[e]).collect());
    Ok(TranscoderRows { idx, val, extra })
}

/// ‖Σ components − residual‖ / ‖residual‖ over a batch.
fn sum_gap(batch: &Batch, n_components: usize) -> f64 {
    let resid = &batch.x;
    let (mut gap, mut norm) = (0.0f64, 0.0f64);
    for (e, &r) in resid.iter().enumerate() {
        let sum: f64 = (1..=n_components)
            .map(|c| f64::from(batch.columns[c - 1][e]))
            .sum();
        gap += (sum - f64::from(r)).powi(2);
        norm += f64::from(r).powi(2);
    }
    (gap / norm.max(f64::MIN_POSITIVE)).sqrt()
}

/// The pass as a consumer of the scan driver (analysis::scan): the scan encodes each batch's
/// residual; this runs the transcoders, the attribution launches and the sums.
struct Attribution<'a, 'g> {
    setup: &'a AttributionSetup<'a>,
    launches: Launches<'g>,
    tc_passes: Vec<ForwardPass<'g, 'a>>,
    totals: Totals,
    tolerance: f64,
}

impl Consumer for Attribution<'_, '_> {
    fn consume(&mut self, pass: &ForwardPass<'_, '_>, scanned: &Scanned<'_>) -> anyhow::Result<()> {
        let (setup, batch, rows) = (self.setup, scanned.batch, scanned.rows);
        let gap = sum_gap(batch, setup.components.len());
        if gap.is_nan() || gap > self.tolerance {
            let (file, start) = batch.origin.first().copied().unwrap_or((0, 0));
            bail!(
                "{}: the components do not sum to '{}' at rows {start}..{} (relative error {gap:.2e}, more than {:.0e}): the cache is not a decomposition of its residual",
                setup.cache.path(file as usize).display(),
                setup.resid,
                start as usize + rows,
                self.tolerance
            );
        }
        let (idx, val) = pass.codes(rows)?;
        if let Some(counts) = pass.active_counts(rows)? {
            let k = idx.len() / rows.max(1);
            self.totals.dropped += counts
                .iter()
                .map(|&a| u64::from(a).saturating_sub(k as u64))
                .sum::<u64>();
        }
        let tc_rows = setup
            .transcoders
            .iter()
            .zip(&self.tc_passes)
            .map(|(tc, tc_pass)| {
                let input = slot(batch, input_slot(setup, tc));
                let target = slot(batch, 1 + component_slot(setup, &tc.hook));
                run_transcoder(tc_pass, &tc.params, input, target, rows)
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let terms = self.launches.run(setup, batch, &idx, &val, &tc_rows)?;
        self.totals
            .add_batch(setup, batch, &idx, &val, &tc_rows, &terms);
        Ok(())
    }
}

/// Rows of the batch's tensor number `n` in [`stream_names`]' order (0: the residual).
pub(super) fn slot(batch: &Batch, n: usize) -> &[f32] {
    match n {
        0 => &batch.x,
        _ => &batch.columns[n - 1],
    }
}

/// Runs the pass; `on_rows` sees each batch's row count.
pub fn attribute(
    gpu: &Gpu,
    setup: &AttributionSetup<'_>,
    on_rows: impl FnMut(u64),
) -> anyhow::Result<Totals> {
    let sae = setup.sae;
    if sae.input_norm == InputNorm::LayerNorm {
        bail!("an SAE with SAELens' layer_norm input normalisation is not attributed: its per-row centring mixes every component into every other");
    }
    let gpu_sae = GpuSae::upload_with_cap(gpu, sae, setup.cap, setup.batch_rows)?;
    let tc_gpu = setup
        .transcoders
        .iter()
        .map(|tc| GpuSae::upload_with_cap(gpu, &tc.params, setup.cap, setup.batch_rows))
        .collect::<Result<Vec<_>, _>>()?;
    let tc_ks: Vec<usize> = tc_gpu.iter().map(|g| g.k).collect();
    let names = stream_names(setup);
    let dtypes: Vec<ActDtype> = names.iter().filter_map(|n| setup.cache.dtype(n)).collect();
    let coarsest = [ActDtype::Bf16, ActDtype::F16]
        .into_iter()
        .find(|d| dtypes.contains(d))
        .unwrap_or(ActDtype::F32);
    let mut consumer = Attribution {
        setup,
        launches: Launches::new(gpu, setup, gpu_sae.k, &tc_ks)?,
        tc_passes: tc_gpu
            .iter()
            .map(|g| ForwardPass::new(gpu, g, setup.batch_rows, PassDepth::Reconstruct))
            .collect::<Result<Vec<_>, _>>()?,
        totals: Totals::new(setup, channel_names(setup).len(), &tc_ks),
        tolerance: sum_tolerance(coarsest),
    };
    let scan = Scan::new(gpu, &gpu_sae, setup.batch_rows, false)?;
    let stream = ComponentStream::start(setup.cache.clone(), names, setup.batch_rows);
    scan.run(stream, Scales::NONE, &mut [&mut consumer], on_rows)?;
    Ok(consumer.totals)
}

/// The cache tensors a batch carries, in this order: the residual, the components, then the
/// heads' z per block, then each transcoder's input.
fn stream_names(setup: &AttributionSetup<'_>) -> Vec<String> {
    let mut names = vec![setup.resid.clone()];
    names.extend(setup.components.iter().cloned());
    if let Some(h) = &setup.heads {
        names.extend(
            h.blocks
                .iter()
                .map(|(l, _)| format!("blocks.{l}.attn.hook_z")),
        );
    }
    names.extend(setup.transcoders.iter().map(|t| t.input.clone()));
    names
}

/// Where a component is among the components (its slot: add 1 for the residual).
fn component_slot(setup: &AttributionSetup<'_>, name: &str) -> usize {
    setup.components.iter().position(|c| c == name).unwrap_or(0)
}

fn input_slot(setup: &AttributionSetup<'_>, tc: &TranscoderSpec) -> usize {
    let heads = setup.heads.as_ref().map_or(0, |h| h.blocks.len());
    let at = setup
        .transcoders
        .iter()
        .position(|t| t.hook == tc.hook)
        .unwrap_or(0);
    1 + setup.components.len() + heads + at
}

/// A batch's terms as pair_dot gave them.
pub(super) struct Terms {
    /// [rows, k, channels]: the residual's product first (h minus the bias), then each
    /// component's, then the transcoders' extra channels.
    pub channels: Vec<f32>,
    /// Per head block: [rows, k, heads].
    pub heads: Vec<Vec<f32>>,
    /// Per transcoder: [rows, k, k_tc] (times the upstream code: added on the host).
    pub upstream: Vec<Vec<f32>>,
}

/// `sources`, each [rows, width], interleaved row by row into [rows, sources, width]: the
/// layout whose row r, source c is pair_dot's x row r·sources + c.
fn interleave(sources: &[&[f32]], rows: usize, width: usize) -> Vec<f32> {
    let n = sources.len();
    let mut out = vec![0.0f32; rows * n * width];
    for r in 0..rows {
        for (c, src) in sources.iter().enumerate() {
            out[(r * n + c) * width..(r * n + c + 1) * width]
                .copy_from_slice(&src[r * width..(r + 1) * width]);
        }
    }
    out
}

impl Launches<'_> {
    /// Uploads a batch's rows and codes, records every launch, and reads the terms back.
    fn run(
        &self,
        setup: &AttributionSetup<'_>,
        batch: &Batch,
        idx: &[u32],
        val: &[f32],
        tc_rows: &[TranscoderRows],
    ) -> anyhow::Result<Terms> {
        self.upload(setup, batch, idx, val, tc_rows)?;
        let mut rec = Recorder::new(self.gpu, "attribution");
        self.record(&mut rec, setup, batch.rows)?;
        rec.submit()?;
        self.read_terms(batch.rows)
    }

    fn upload(
        &self,
        setup: &AttributionSetup<'_>,
        batch: &Batch,
        idx: &[u32],
        val: &[f32],
        tc_rows: &[TranscoderRows],
    ) -> anyhow::Result<()> {
        let (rows, gpu) = (batch.rows, self.gpu);
        let channels: Vec<&[f32]> = (0..=setup.components.len())
            .map(|n| slot(batch, n))
            .chain(
                tc_rows
                    .iter()
                    .flat_map(|t| t.extra.iter().map(Vec::as_slice)),
            )
            .collect();
        gpu.write(&self.x, &interleave(&channels, rows, self.d))?;
        gpu.write(&self.ib, &selected(idx, val))?;
        if let Some(h) = &self.heads {
            let z_from = 1 + setup.components.len();
            let z: Vec<&[f32]> = (0..h.tables.len())
                .map(|b| slot(batch, z_from + b))
                .collect();
            gpu.write(&h.z, &interleave(&z, rows, h.n_heads * h.d_head))?;
        }
        for (up, tc) in self.upstream.iter().zip(tc_rows) {
            gpu.write(&up.ia, &selected(&tc.idx, &tc.val))?;
        }
        Ok(())
    }

    fn record(
        &self,
        rec: &mut Recorder<'_>,
        setup: &AttributionSetup<'_>,
        rows: usize,
    ) -> anyhow::Result<()> {
        let shape = |ka, dim, y_step| PairDotShape {
            rows,
            ka,
            kb: self.k,
            dim,
            y_step,
        };
        let (enc, ib) = (&self.enc_rows, &self.ib);
        launch_pair_dot(
            rec,
            &self.x,
            enc,
            &self.ia,
            ib,
            &self.out,
            shape(self.channels, self.d, 0),
        )?;
        if let Some(h) = &self.heads {
            let s = shape(h.n_heads, h.d_head, setup.sae.d_sae);
            for ((table, ia), out) in h.tables.iter().zip(&h.ia).zip(&h.out) {
                launch_pair_dot(rec, &h.z, table, ia, ib, out, s)?;
            }
        }
        for up in &self.upstream {
            launch_pair_dot(
                rec,
                &up.w_dec,
                enc,
                &up.ia,
                ib,
                &up.out,
                shape(up.k, self.d, 0),
            )?;
        }
        Ok(())
    }

    fn read_terms(&self, rows: usize) -> anyhow::Result<Terms> {
        let read = |b: &GpuBuffer, per_pair: usize| -> anyhow::Result<Vec<f32>> {
            let mut v: Vec<f32> = self.gpu.read(b).context("reading attribution terms")?;
            v.truncate(rows * self.k * per_pair);
            Ok(v)
        };
        let heads = match &self.heads {
            None => Vec::new(),
            Some(h) => h
                .out
                .iter()
                .map(|o| read(o, h.n_heads))
                .collect::<anyhow::Result<_>>()?,
        };
        Ok(Terms {
            channels: read(&self.out, self.channels)?,
            heads,
            upstream: self
                .upstream
                .iter()
                .map(|u| read(&u.out, u.k))
                .collect::<anyhow::Result<_>>()?,
        })
    }
}

/// The per-row factor a constant-norm-rescaling SAE applies to its input (1 otherwise):
/// frozen at the row's value, it multiplies every component's term alike.
pub(super) fn row_factor(sae: &SaeParams, resid_row: &[f32]) -> f64 {
    match sae.input_norm {
        InputNorm::ConstantNormRescale => {
            let norm: f64 = resid_row
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt();
            (sae.d_in as f64).sqrt() / norm.max(f64::MIN_POSITIVE)
        }
        _ => 1.0,
    }
}
