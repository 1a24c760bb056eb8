//! Kernel benchmarks shared by `sae bench kernels` and `cargo bench`: every dispatch of the
//! trainer's own step (the one `sae train` runs, AuxK off so each kernel runs once per step)
//! timed with GPU timestamps at a given shape, and the encoder GEMM's tile candidates.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use super::{median, AdapterRecord};
use crate::data::Batch;
use crate::gpu::kernels::coop::{
    launch_encode_coop, launch_pack_rows, launch_pack_weights, CoopShape, PackedRows,
};
use crate::gpu::kernels::encoder::{EncoderShape, GemmTiles};
use crate::gpu::kernels::optim::AdamConfig;
use crate::gpu::tune::{time_gemm, time_recording, GemmOperands};
use crate::gpu::{CoopTile, Gpu, GpuResult, Recorder};
use crate::sae::params::SaeParams;
use crate::sae::trainer::Trainer;
use crate::sae::trainer::{Feed, MemberStep};

/// One benchmark shape: a batch of `batch` rows through an SAE of `d_in` × `d_sae` with TopK k.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct BenchShape {
    pub batch: usize,
    pub d_in: usize,
    pub d_sae: usize,
    pub k: usize,
}

impl BenchShape {
    pub fn label(&self) -> String {
        format!("B{}_d{}_s{}_k{}", self.batch, self.d_in, self.d_sae, self.k)
    }

    /// The default set: batch 4096, d_in 576/768/2048, d_sae 8× and 32× d_in, k 32.
    pub fn defaults() -> Vec<BenchShape> {
        let mut shapes = Vec::new();
        for d_in in [576, 768, 2048] {
            for factor in [8, 32] {
                shapes.push(BenchShape {
                    batch: 4096,
                    d_in,
                    d_sae: d_in * factor,
                    k: 32,
                });
            }
        }
        shapes
    }
}

impl std::str::FromStr for BenchShape {
    type Err = String;

    /// `BATCH,D_IN,D_SAE,K`, e.g. `4096,576,4608,32`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parts: Vec<usize> = s
            .split(',')
            .map(|p| p.trim().parse::<usize>())
            .collect::<Result<_, _>>()
            .map_err(|e| format!("shape '{s}': {e}; expected BATCH,D_IN,D_SAE,K"))?;
        match parts[..] {
            [batch, d_in, d_sae, k]
                if batch > 0 && d_in > 0 && d_sae > 0 && k > 0 && k <= d_sae =>
            {
                Ok(BenchShape {
                    batch,
                    d_in,
                    d_sae,
                    k,
                })
            }
            _ => Err(format!(
                "shape '{s}': expected four positive numbers BATCH,D_IN,D_SAE,K with K ≤ D_SAE"
            )),
        }
    }
}

/// One JSON line of `sae bench kernels --json`.
#[derive(Clone, Debug, Serialize)]
pub struct BenchRecord {
    pub kernel: String,
    pub shape: String,
    pub ms_median: f64,
    pub ms_min: f64,
    pub gflops: Option<f64>,
    pub gbps: Option<f64>,
    /// Dispatches of this kernel in one step (split dictionaries and Adam run several).
    pub dispatches: usize,
    #[serde(flatten)]
    pub adapter: AdapterRecord,
    pub timing_method: String,
}

/// Work of one step's dispatches of `kernel` (its entry point), as (flops, bytes), for the
/// kernels whose cost has a simple form; `None` for the rest.
fn work(kernel: &str, s: BenchShape) -> Option<(Option<f64>, f64)> {
    let (b, d, n, k) = (s.batch as f64, s.d_in as f64, s.d_sae as f64, s.k as f64);
    let gather = (Some(2.0 * b * k * d), 4.0 * (b * k * d + b * d));
    Some(match kernel {
        "encode_gemm" => (Some(2.0 * b * d * n), 4.0 * (b * d + d * n + b * n)),
        "topk_rows" | "topk_rows_narrow" => (None, 4.0 * (b * n + 2.0 * b * k)),
        "decode_sparse" | "code_grad" => gather,
        "decoder_weight_grad" | "encoder_weight_grad" => (gather.0, gather.1 + 4.0 * n * d),
        "adam_step" => (
            Some(12.0 * (2.0 * n * d + n + d)),
            4.0 * 7.0 * (2.0 * n * d + n + d),
        ),
        "widen" => (None, 8.0 * b * d),
        _ => return None,
    })
}

/// Times the trainer's step at `shape` over `reps` repetitions (after one warm-up step), one
/// record per kernel (entry point, summed over its dispatches in the step), then the encoder
/// GEMM at every tile candidate; `on_record` is called as each record is ready.
pub fn bench_kernels(
    gpu: &Gpu,
    shape: BenchShape,
    reps: usize,
    filter: Option<&str>,
    mut on_record: impl FnMut(&BenchRecord),
) -> GpuResult<Vec<BenchRecord>> {
    let reps = reps.max(1);
    let BenchShape {
        batch,
        d_in,
        d_sae,
        k,
    } = shape;
    let mut params = SaeParams::init_topk(d_in, d_sae, k, 0);
    params.b_dec = vec![0.0; d_in];
    let mut trainer = Trainer::new(gpu, &params, batch, AdamConfig::default(), 10_000_000, None)?;
    let mut feed = Feed::new(gpu, batch, d_in)?;
    let args = |step: u64| MemberStep {
        scale: 1.0,
        target_scale: 1.0,
        lr: 1e-4,
        step,
        with_metrics: false,
        penalty: 0.0,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let batch_of = |rng: &mut ChaCha8Rng| Batch {
        x: (0..batch * d_in)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect(),
        rows: batch,
        ..Batch::default()
    };
    feed.step(&batch_of(&mut rng), [(&mut trainer, args(1))])?;
    gpu.wait()?;
    let timing_method = if gpu.has_timestamps() {
        "gpu_timestamps"
    } else {
        "none (no TIMESTAMP_QUERY)"
    };
    // kernel → per-repetition milliseconds, and dispatches per step.
    let mut per_kernel: BTreeMap<String, (Vec<f64>, usize)> = BTreeMap::new();
    for rep in 0..reps {
        let timings = feed.step_timed(&batch_of(&mut rng), &mut trainer, args(rep as u64 + 2))?;
        let mut this_rep: BTreeMap<String, (f64, usize)> = BTreeMap::new();
        for (_, label, ms) in timings {
            let entry = label.rsplit("::").next().unwrap_or(&label).to_string();
            let slot = this_rep.entry(entry).or_default();
            slot.0 += ms;
            slot.1 += 1;
        }
        for (kernel, (ms, count)) in this_rep {
            let slot = per_kernel.entry(kernel).or_default();
            slot.0.push(ms);
            slot.1 = count;
        }
    }
    let mut records = Vec::new();
    let mut emit = |kernel: String,
                    mut times: Vec<f64>,
                    dispatches: usize,
                    work: Option<(Option<f64>, f64)>| {
        if filter.is_some_and(|f| !kernel.contains(f)) {
            return;
        }
        let ms_min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let ms_median = median(&mut times);
        let seconds = (ms_median / 1e3).max(1e-12);
        let record = BenchRecord {
            kernel,
            shape: shape.label(),
            ms_median,
            ms_min,
            gflops: work.and_then(|(f, _)| f).map(|f| f / seconds / 1e9),
            gbps: work.map(|(_, b)| b / seconds / 1e9),
            dispatches,
            adapter: AdapterRecord::of(gpu),
            timing_method: timing_method.to_string(),
        };
        on_record(&record);
        records.push(record);
    };
    for (kernel, (times, dispatches)) in per_kernel {
        let work = work(&kernel, shape);
        emit(kernel, times, dispatches, work);
    }
    // The GEMM at every tile shape this adapter can run (what `sae bench tune` chooses from).
    let gemm = EncoderShape {
        rows: batch,
        d_in,
        d_sae,
    };
    let wants_gemm = filter.is_none_or(|f| "encode_gemm".contains(f) || f.contains("encode_gemm"));
    for tiles in GemmTiles::CANDIDATES
        .iter()
        .filter(|t| wants_gemm && t.fits(&gpu.limits))
    {
        let ms = time_gemm(gpu, gemm, *tiles, reps)?;
        emit(
            format!("encode_gemm[{}]", tiles.label()),
            vec![ms],
            1,
            work("encode_gemm", shape),
        );
    }
    // The same GEMM on the matrix units (f16 operands), where the adapter has them.
    let coop_kernels = ["encode_coop", "pack_rows", "pack_weights"];
    let wants_coop =
        wants_gemm || filter.is_some_and(|f| coop_kernels.iter().any(|k| k.contains(f)));
    if let (Some(tile), true) = (gpu.coop, wants_coop) {
        for (kernel, ms) in time_coop(gpu, gemm, tile, reps)? {
            let flops = work("encode_gemm", shape).and_then(|(f, _)| f);
            let (b, d, n) = (batch as f64, d_in as f64, d_sae as f64);
            let bytes = match kernel {
                "encode_coop" => 2.0 * (b * d + d * n) + 4.0 * (b * n + b),
                "pack_rows" => 4.0 * b * d + 2.0 * b * d,
                _ => 4.0 * d * n + 2.0 * d * n,
            };
            let work = Some((flops.filter(|_| kernel == "encode_coop"), bytes));
            let label = format!("{kernel}[{}x{}]", tile.edge, tile.edge);
            emit(label, vec![ms], 1, work);
        }
    }
    Ok(records)
}

/// The f16 encoder GEMM's kernels at `shape`: the GEMM itself, packing a batch's rows, and
/// refreshing the f16 copy of W_enc (what a training step adds), in ms.
fn time_coop(
    gpu: &Gpu,
    shape: EncoderShape,
    tile: CoopTile,
    reps: usize,
) -> GpuResult<Vec<(&'static str, f64)>> {
    let EncoderShape { rows, d_in, d_sae } = shape;
    let GemmOperands {
        x,
        w_enc: w,
        b_dec,
        b_enc,
        h,
    } = GemmOperands::new(gpu, shape)?;
    let a = gpu.storage::<half::f16>("x f16", rows * d_in)?;
    let row_scale = gpu.storage::<f32>("row scales", rows)?;
    let w16 = gpu.storage::<half::f16>("w_enc f16", d_in * d_sae)?;
    let overflow = gpu.storage::<u32>("overflow", 2)?;
    let packed = PackedRows {
        a: &a,
        row_scale: &row_scale,
        overflow: &overflow,
    };
    let coop = CoopShape {
        rows,
        k: d_in,
        n: d_sae,
    };
    let pack_rows = |rec: &mut Recorder<'_>| launch_pack_rows(rec, &x, &b_dec, &packed, coop, tile);
    let pack_weights =
        |rec: &mut Recorder<'_>| launch_pack_weights(rec, &w, &w16, &overflow, d_in, d_sae, tile);
    let gemm =
        |rec: &mut Recorder<'_>| launch_encode_coop(rec, &packed, &w16, &b_enc, &h, coop, tile);
    Ok(vec![
        ("encode_coop", time_recording(gpu, reps, gemm)?),
        ("pack_rows", time_recording(gpu, reps, pack_rows)?),
        ("pack_weights", time_recording(gpu, reps, pack_weights)?),
    ])
}
