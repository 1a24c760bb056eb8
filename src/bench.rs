//! Kernel benchmarks shared by `sae bench kernels` and `cargo bench`: every kernel of a TopK
//! SAE training step timed at a given shape, with GPU timestamps when the adapter has them.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::gpu::kernels::backward::{
    launch_bias_dec_grad, launch_code_grad, launch_decoder_weight_grad, launch_encoder_weight_grad,
    launch_loss_grad, launch_reverse_index, BackwardShape, LossScale, ReverseIndex,
};
use crate::gpu::kernels::decoder::launch_decode_sparse;
use crate::gpu::kernels::encoder::{launch_encode_gemm, EncoderShape, GemmTiles};
use crate::gpu::kernels::optim::{
    launch_adam, launch_normalize_rows, launch_remove_parallel_grad, AdamConfig,
};
use crate::gpu::kernels::reduce::Reducer;
use crate::gpu::kernels::topk::launch_topk;
use crate::gpu::{Gpu, GpuBuffer, GpuResult, InputPrecision, Recorder};

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
    pub adapter: String,
    pub backend: String,
    pub driver: String,
    pub timing_method: String,
}

/// The buffers of one forward + backward pass, filled once so each kernel sees real inputs.
struct Workspace {
    x: GpuBuffer,
    x_f16: Option<GpuBuffer>,
    w_enc: GpuBuffer,
    b_enc: GpuBuffer,
    w_dec: GpuBuffer,
    b_dec: GpuBuffer,
    h: GpuBuffer,
    top_idx: GpuBuffer,
    top_val: GpuBuffer,
    x_hat: GpuBuffer,
    stats: GpuBuffer,
    col_mean: GpuBuffer,
    grad_out: GpuBuffer,
    code_grad: GpuBuffer,
    g_w_enc: GpuBuffer,
    g_b_enc: GpuBuffer,
    g_w_dec: GpuBuffer,
    g_b_dec: GpuBuffer,
    m: GpuBuffer,
    v: GpuBuffer,
    index: ReverseIndex,
    reducer: Reducer,
}

fn random(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-scale..scale)).collect()
}

impl Workspace {
    fn new(gpu: &Gpu, s: BenchShape) -> GpuResult<Workspace> {
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (b, d, n) = (s.batch, s.d_in, s.d_sae);
        let x = random(&mut rng, b * d, 1.0);
        let x_f16 = if gpu.has_f16() {
            let half: Vec<half::f16> = x.iter().map(|&v| half::f16::from_f32(v)).collect();
            Some(gpu.upload("x_f16", &half)?)
        } else {
            None
        };
        let scale = 1.0 / (d as f32).sqrt();
        let w_dec = random(&mut rng, n * d, scale);
        let mut w_enc = vec![0.0f32; d * n];
        for i in 0..n {
            for c in 0..d {
                w_enc[c * n + i] = w_dec[i * d + c];
            }
        }
        let shape = BackwardShape {
            rows: b,
            d_in: d,
            d_sae: n,
            k: s.k,
        };
        Ok(Workspace {
            x: gpu.upload("x", &x)?,
            x_f16,
            w_enc: gpu.upload("w_enc", &w_enc)?,
            b_enc: gpu.storage::<f32>("b_enc", n)?,
            w_dec: gpu.upload("w_dec", &w_dec)?,
            b_dec: gpu.storage::<f32>("b_dec", d)?,
            h: gpu.storage::<f32>("h", b * n)?,
            top_idx: gpu.storage::<u32>("top_idx", b * s.k)?,
            top_val: gpu.storage::<f32>("top_val", b * s.k)?,
            x_hat: gpu.storage::<f32>("x_hat", b * d)?,
            stats: gpu.storage::<f32>("stats", 4)?,
            col_mean: gpu.storage::<f32>("col_mean", d)?,
            grad_out: gpu.storage::<f32>("grad_out", b * d)?,
            code_grad: gpu.storage::<f32>("code_grad", b * s.k)?,
            g_w_enc: gpu.storage::<f32>("g_w_enc", d * n)?,
            g_b_enc: gpu.storage::<f32>("g_b_enc", n)?,
            g_w_dec: gpu.storage::<f32>("g_w_dec", n * d)?,
            g_b_dec: gpu.storage::<f32>("g_b_dec", d)?,
            m: gpu.storage::<f32>("adam_m", d * n)?,
            v: gpu.storage::<f32>("adam_v", d * n)?,
            index: ReverseIndex::new(gpu, shape)?,
            reducer: Reducer::new(gpu)?,
        })
    }
}

/// Records one repetition of a kernel into a recorder.
type RecordFn = Box<dyn Fn(&mut Recorder<'_>, &Workspace) -> GpuResult<()>>;

/// A kernel to time: how to record one repetition, and its work in flops and bytes.
struct BenchKernel {
    name: &'static str,
    flops: Option<f64>,
    bytes: f64,
    record: RecordFn,
}

fn kernels(gpu: &Gpu, s: BenchShape) -> Vec<BenchKernel> {
    let (b, d, n, k) = (s.batch as f64, s.d_in as f64, s.d_sae as f64, s.k as f64);
    let enc = EncoderShape {
        rows: s.batch,
        d_in: s.d_in,
        d_sae: s.d_sae,
    };
    let bw = BackwardShape {
        rows: s.batch,
        d_in: s.d_in,
        d_sae: s.d_sae,
        k: s.k,
    };
    let gemm_bytes = 4.0 * (b * d + d * n + b * n);
    let gather_flops = 2.0 * b * k * d;
    let gather_bytes = 4.0 * (b * k * d + b * d);
    let mut list = vec![
        BenchKernel {
            name: "encode_gemm",
            flops: Some(2.0 * b * d * n),
            bytes: gemm_bytes,
            record: Box::new(move |rec, w| {
                launch_encode_gemm(
                    rec,
                    &w.x,
                    InputPrecision::F32,
                    &w.w_enc,
                    &w.b_dec,
                    &w.b_enc,
                    &w.h,
                    enc,
                    GemmTiles::default(),
                )
            }),
        },
        BenchKernel {
            name: "encode_gemm_t128",
            flops: Some(2.0 * b * d * n),
            bytes: gemm_bytes,
            record: Box::new(move |rec, w| {
                launch_encode_gemm(
                    rec,
                    &w.x,
                    InputPrecision::F32,
                    &w.w_enc,
                    &w.b_dec,
                    &w.b_enc,
                    &w.h,
                    enc,
                    GemmTiles::LARGE,
                )
            }),
        },
    ];
    if gpu.has_f16() {
        list.push(BenchKernel {
            name: "encode_gemm_f16in",
            flops: Some(2.0 * b * d * n),
            bytes: gemm_bytes - 2.0 * b * d,
            record: Box::new(move |rec, w| {
                let x = w
                    .x_f16
                    .as_ref()
                    .expect("f16 copy exists when the adapter has SHADER_F16");
                launch_encode_gemm(
                    rec,
                    x,
                    InputPrecision::F16,
                    &w.w_enc,
                    &w.b_dec,
                    &w.b_enc,
                    &w.h,
                    enc,
                    GemmTiles::default(),
                )
            }),
        });
    }
    list.extend([
        BenchKernel {
            name: "topk",
            flops: None,
            bytes: 4.0 * (b * n + 2.0 * b * k),
            record: Box::new(move |rec, w| {
                launch_topk(
                    rec, &w.h, s.batch, s.d_sae, s.k, &w.top_idx, &w.top_val, None,
                )
            }),
        },
        BenchKernel {
            name: "decode_sparse",
            flops: Some(gather_flops),
            bytes: gather_bytes,
            record: Box::new(move |rec, w| {
                launch_decode_sparse(
                    rec, &w.top_idx, &w.top_val, &w.w_dec, &w.b_dec, &w.x_hat, s.batch, s.d_in,
                    s.d_sae, s.k,
                )
            }),
        },
        BenchKernel {
            name: "loss_grad",
            flops: Some(3.0 * b * d),
            bytes: 12.0 * b * d,
            record: Box::new(move |rec, w| {
                launch_loss_grad(
                    rec,
                    &w.x_hat,
                    &w.x,
                    &w.stats,
                    LossScale::fvu(0),
                    &w.grad_out,
                    bw,
                )
            }),
        },
        BenchKernel {
            name: "code_grad",
            flops: Some(gather_flops),
            bytes: gather_bytes,
            record: Box::new(move |rec, w| {
                launch_code_grad(
                    rec,
                    &w.grad_out,
                    &w.top_idx,
                    &w.top_val,
                    &w.w_dec,
                    &w.code_grad,
                    bw,
                )
            }),
        },
        BenchKernel {
            name: "reverse_index",
            flops: None,
            bytes: 4.0 * (3.0 * b * k + 2.0 * n) + n * (b / 8.0),
            record: Box::new(move |rec, w| launch_reverse_index(rec, &w.top_idx, &w.index)),
        },
        BenchKernel {
            name: "decoder_weight_grad",
            flops: Some(gather_flops),
            bytes: gather_bytes + 4.0 * n * d,
            record: Box::new(move |rec, w| {
                launch_decoder_weight_grad(
                    rec,
                    &w.index,
                    &w.top_val,
                    &w.grad_out,
                    &w.g_w_dec,
                    false,
                )
            }),
        },
        BenchKernel {
            name: "encoder_weight_grad",
            flops: Some(gather_flops),
            bytes: gather_bytes + 4.0 * n * d,
            record: Box::new(move |rec, w| {
                launch_encoder_weight_grad(
                    rec,
                    &w.index,
                    &w.code_grad,
                    &w.x,
                    &w.b_dec,
                    &w.g_w_enc,
                    &w.g_b_enc,
                    false,
                )
            }),
        },
        BenchKernel {
            name: "bias_dec_grad",
            flops: Some(2.0 * (b * d + d * n)),
            bytes: 4.0 * (b * d + d * n),
            record: Box::new(move |rec, w| {
                launch_bias_dec_grad(rec, &w.grad_out, &w.w_enc, &w.g_b_enc, &w.g_b_dec, bw)
            }),
        },
        BenchKernel {
            name: "decoder_constraint",
            flops: Some(6.0 * n * d),
            bytes: 4.0 * 5.0 * n * d,
            record: Box::new(move |rec, w| {
                launch_remove_parallel_grad(rec, &w.w_dec, &w.g_w_dec, s.d_sae, s.d_in)?;
                launch_normalize_rows(rec, &w.w_dec, s.d_sae, s.d_in)
            }),
        },
        BenchKernel {
            name: "adam_w_enc",
            flops: Some(12.0 * n * d),
            bytes: 4.0 * 7.0 * n * d,
            record: Box::new(move |rec, w| {
                launch_adam(
                    rec,
                    &w.w_enc,
                    &w.g_w_enc,
                    &w.m,
                    &w.v,
                    &AdamConfig::default(),
                    1e-9,
                    1,
                )
            }),
        },
        BenchKernel {
            name: "sum_sq_error",
            flops: Some(3.0 * b * d),
            bytes: 8.0 * b * d,
            record: Box::new(move |rec, w| {
                w.reducer
                    .launch_sum_sq_diff(rec, &w.x_hat, &w.x, s.batch * s.d_in, &w.stats, 1)
            }),
        },
    ]);
    list
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

/// Times every kernel at `shape` over `reps` repetitions (after one warm-up) and returns one
/// record per kernel, calling `on_record` as each finishes so long runs show progress.
pub fn bench_kernels(
    gpu: &Gpu,
    shape: BenchShape,
    reps: usize,
    filter: Option<&str>,
    mut on_record: impl FnMut(&BenchRecord),
) -> GpuResult<Vec<BenchRecord>> {
    let reps = reps.max(1);
    let workspace = Workspace::new(gpu, shape)?;
    // Fill every buffer with the results of a real step, in order, so each kernel sees the
    // data it would in training.
    let all = kernels(gpu, shape);
    let mut rec = Recorder::new(gpu, "bench warm-up");
    workspace.reducer.launch_centered_sq(
        &mut rec,
        &workspace.x,
        shape.batch,
        shape.d_in,
        &workspace.col_mean,
        &workspace.stats,
        0,
    )?;
    for kernel in &all {
        (kernel.record)(&mut rec, &workspace)?;
    }
    rec.submit()?;
    gpu.wait()?;

    let timing_method = if gpu.has_timestamps() {
        "gpu_timestamps"
    } else {
        "wall_clock"
    };
    let mut records = Vec::new();
    for kernel in all
        .iter()
        .filter(|k| filter.is_none_or(|f| k.name.contains(f)))
    {
        let mut times = Vec::with_capacity(reps);
        if gpu.has_timestamps() {
            // Up to 8 dispatches per repetition (reverse_index has three).
            let mut rec = Recorder::timed(gpu, kernel.name, (reps * 8) as u32);
            let mut per_rep = Vec::with_capacity(reps);
            for _ in 0..reps {
                let before = rec.timed_dispatches();
                (kernel.record)(&mut rec, &workspace)?;
                per_rep.push(rec.timed_dispatches() - before);
            }
            let spans = rec.submit_timed()?;
            let mut cursor = 0;
            for count in per_rep {
                times.push(spans[cursor..cursor + count].iter().map(|(_, ms)| ms).sum());
                cursor += count;
            }
        } else {
            for _ in 0..reps {
                let mut rec = Recorder::new(gpu, kernel.name);
                (kernel.record)(&mut rec, &workspace)?;
                let start = Instant::now();
                rec.submit()?;
                gpu.wait()?;
                times.push(start.elapsed().as_secs_f64() * 1e3);
            }
        }
        let ms_min = times.iter().copied().fold(f64::INFINITY, f64::min);
        let ms_median = median(&mut times);
        let seconds = ms_median / 1e3;
        let record = BenchRecord {
            kernel: kernel.name.to_string(),
            shape: shape.label(),
            ms_median,
            ms_min,
            gflops: kernel.flops.map(|f| f / seconds / 1e9),
            gbps: Some(kernel.bytes / seconds / 1e9),
            adapter: gpu.info.name.clone(),
            backend: format!("{:?}", gpu.info.backend).to_lowercase(),
            driver: format!("{} {}", gpu.info.driver, gpu.info.driver_info)
                .trim()
                .to_string(),
            timing_method: timing_method.to_string(),
        };
        on_record(&record);
        records.push(record);
    }
    Ok(records)
}
