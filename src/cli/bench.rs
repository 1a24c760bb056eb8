//! `sae bench kernels|train|tune`: kernel timings from the trainer's own step, end-to-end
//! training steps, and the encoder GEMM's tile choice for this adapter.

use clap::{Args, Subcommand};

use super::{GpuArgs, MatmulArgs};
use crate::bench::train::{bench_train, TrainBench, TrainBenchRecord};
use crate::bench::{bench_kernels, BenchRecord, BenchShape};
use crate::data::ActDtype;
use crate::gpu::kernels::encoder::EncoderShape;
use crate::gpu::tune::tune;
use crate::gpu::Gpu;
use crate::sae::arch::Architecture;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time each kernel of a training step (the trainer's own step) at realistic shapes
    /// (batch 4096; d_in 576, 768, 2048; d_sae 8× and 32× d_in; k 32), and the encoder GEMM at
    /// every tile candidate. On a CPU adapter only the smallest shape runs unless --all-shapes.
    Kernels(KernelsArgs),
    /// End-to-end steps of the real trainer on synthetic shards streamed from disk: tokens/s,
    /// host time per step, GPU time per stage, GPU busy fraction, peak GPU memory.
    Train(TrainArgs),
    /// Time the encoder GEMM's tile candidates at a shape and cache the fastest for this
    /// adapter and driver (what `sae train` does by itself on a new adapter).
    Tune(TuneArgs),
}

#[derive(Args, Debug)]
pub struct KernelsArgs {
    /// A shape BATCH,D_IN,D_SAE,K to run instead of the defaults (repeatable).
    #[arg(long = "shape", value_name = "B,D_IN,D_SAE,K")]
    shapes: Vec<BenchShape>,
    /// Run the full default set even on a CPU adapter.
    #[arg(long)]
    all_shapes: bool,
    /// Timed repetitions per kernel, after one warm-up (default 10; 3 on a CPU adapter).
    #[arg(long)]
    reps: Option<usize>,
    /// Only kernels whose name contains this.
    #[arg(long)]
    kernel: Option<String>,
    /// One JSON object per kernel and shape on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Shapes BATCH,D_IN,D_SAE,K (repeatable; default 4096,576,4608,32, or the quick start's
    /// 512,64,256,8 on a CPU adapter).
    #[arg(long = "shape", value_name = "B,D_IN,D_SAE,K")]
    shapes: Vec<BenchShape>,
    /// Measured steps (after --warmup).
    #[arg(long, default_value_t = 40)]
    steps: usize,
    /// Steps run before measuring.
    #[arg(long, default_value_t = 10)]
    warmup: usize,
    /// Steps with every dispatch timed, for the per-stage GPU times.
    #[arg(long, default_value_t = 3)]
    timed_steps: usize,
    /// dtype of the synthetic shards: f32, f16 or bf16 (16-bit rows are widened on the GPU).
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    dtype: ActDtype,
    /// What to train (as `sae train --architecture`; comma-separated: each in turn). For relu
    /// and jumprelu the shape's K is the cap on the codes per row.
    #[arg(long, value_enum, value_delimiter = ',', default_value = "topk")]
    architecture: Vec<Architecture>,
    /// One JSON object per shape on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    matmul: MatmulArgs,
    #[command(flatten)]
    gpu: GpuArgs,
}

#[derive(Args, Debug)]
pub struct TuneArgs {
    /// The GEMM shape ROWS,D_IN,D_SAE (a run's batch size, d_in and d_sae).
    #[arg(long, value_name = "ROWS,D_IN,D_SAE", value_parser = parse_gemm_shape)]
    shape: EncoderShape,
    /// Timed repetitions per candidate (default 10; 2 on a CPU adapter).
    #[arg(long)]
    reps: Option<usize>,
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

fn parse_dtype(text: &str) -> Result<ActDtype, String> {
    match text {
        "f32" => Ok(ActDtype::F32),
        "f16" => Ok(ActDtype::F16),
        "bf16" => Ok(ActDtype::Bf16),
        other => Err(format!("dtype '{other}': expected f32, f16 or bf16")),
    }
}

fn parse_gemm_shape(text: &str) -> Result<EncoderShape, String> {
    let parts: Vec<usize> = text
        .split(',')
        .map(|p| p.trim().parse::<usize>())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("shape '{text}': {e}; expected ROWS,D_IN,D_SAE"))?;
    match parts[..] {
        [rows, d_in, d_sae] if rows > 0 && d_in > 0 && d_sae > 0 => {
            Ok(EncoderShape { rows, d_in, d_sae })
        }
        _ => Err(format!(
            "shape '{text}': expected three positive numbers ROWS,D_IN,D_SAE"
        )),
    }
}

fn print_row(record: &BenchRecord) {
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!(
        "{:<30} {:<22} {:>10.3} {:>10.3} {:>10} {:>9}",
        record.kernel,
        record.shape,
        record.ms_median,
        record.ms_min,
        fmt(record.gflops),
        fmt(record.gbps)
    );
}

fn on_cpu(gpu: &Gpu) -> bool {
    gpu.info.device_type == wgpu::DeviceType::Cpu
}

fn print_json(value: &impl serde::Serialize) {
    match serde_json::to_string(value) {
        Ok(line) => println!("{line}"),
        Err(error) => eprintln!("error: {error}"),
    }
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Kernels(args) => kernels(args),
        BenchCommand::Train(args) => train(args),
        BenchCommand::Tune(args) => tune_command(args),
    }
}

fn kernels(args: KernelsArgs) -> anyhow::Result<()> {
    let gpu = args.gpu.open()?;
    let cpu = on_cpu(&gpu);
    let shapes = if !args.shapes.is_empty() {
        args.shapes.clone()
    } else if cpu && !args.all_shapes {
        BenchShape::defaults().into_iter().take(1).collect()
    } else {
        BenchShape::defaults()
    };
    if !args.json {
        println!("adapter: {}", gpu.describe());
        if cpu && args.shapes.is_empty() && !args.all_shapes {
            println!("CPU adapter: smallest default shape only (--all-shapes for all)");
        }
        println!(
            "{:<30} {:<22} {:>10} {:>10} {:>10} {:>9}",
            "kernel", "shape", "ms median", "ms min", "GFLOP/s", "GB/s"
        );
    }
    let reps = args.reps.unwrap_or(if cpu { 3 } else { 10 });
    for shape in shapes {
        let result = bench_kernels(&gpu, shape, reps, args.kernel.as_deref(), |record| {
            if args.json {
                print_json(record);
            } else {
                print_row(record);
            }
        });
        if let Err(error) = result {
            // A shape too large for this adapter is reported and skipped; the others still run.
            eprintln!("skipping shape {}: {error}", shape.label());
        }
    }
    Ok(())
}

fn print_train(record: &TrainBenchRecord) {
    println!(
        "{} {} {} {}: {:.0} tokens/s, {:.2} ms/step (host {:.3} ms = {:.2}%, in submit {:.2} ms, data wait {:.3} ms), GPU {:.2} ms/step, busy {:.1}%",
        record.architecture,
        record.matmul,
        record.shape,
        record.dtype,
        record.tokens_per_s,
        record.ms_per_step,
        record.host_ms_per_step,
        100.0 * record.host_fraction,
        record.submit_ms_per_step,
        record.data_wait_ms_per_step,
        record.gpu_ms_per_step,
        100.0 * record.gpu_busy_fraction
    );
    let stages: Vec<String> = record
        .stage_ms
        .iter()
        .map(|(stage, ms)| format!("{stage} {ms:.2}"))
        .collect();
    println!("  GPU ms per stage: {}", stages.join(", "));
    let mut kernels: Vec<(&String, &f64)> = record.kernel_ms.iter().collect();
    kernels.sort_by(|a, b| b.1.total_cmp(a.1));
    let top: Vec<String> = kernels
        .iter()
        .take(8)
        .map(|(kernel, ms)| format!("{kernel} {ms:.2}"))
        .collect();
    println!("  slowest kernels (ms per step): {}", top.join(", "));
    println!(
        "  steady state: {} buffers, {} bind groups created; peak GPU memory {:.1} MiB (minimum {:.1} MiB)",
        record.buffers_created_in_steady_state,
        record.bind_groups_created_in_steady_state,
        record.peak_gpu_bytes as f64 / 1048576.0,
        record.min_gpu_bytes as f64 / 1048576.0
    );
}

fn train(args: TrainArgs) -> anyhow::Result<()> {
    let gpu = args.gpu.open()?;
    let shapes = if !args.shapes.is_empty() {
        args.shapes.clone()
    } else if on_cpu(&gpu) {
        vec!["512,64,256,8".parse().map_err(anyhow::Error::msg)?]
    } else {
        vec!["4096,576,4608,32".parse().map_err(anyhow::Error::msg)?]
    };
    if !args.json {
        println!("adapter: {}", gpu.describe());
    }
    for shape in shapes {
        for &architecture in &args.architecture {
            let scratch = std::env::temp_dir().join(format!(
                "sae-bench-train-{}-{}",
                std::process::id(),
                shape.label()
            ));
            let bench = TrainBench {
                shape,
                architecture,
                warmup: args.warmup,
                steps: args.steps,
                timed_steps: args.timed_steps,
                dtype: args.dtype,
                log_every: 10,
                matmul: gpu.matmul(args.matmul.matmul)?,
            };
            match bench_train(&gpu, bench, &scratch) {
                Ok(record) if args.json => print_json(&record),
                Ok(record) => print_train(&record),
                Err(error) => eprintln!(
                    "skipping {} at shape {}: {error:#}",
                    architecture.name(),
                    shape.label()
                ),
            }
        }
    }
    Ok(())
}

fn tune_command(args: TuneArgs) -> anyhow::Result<()> {
    let gpu = args.gpu.open()?;
    let reps = args.reps.unwrap_or(if on_cpu(&gpu) { 2 } else { 10 });
    let tuned = tune(&gpu, args.shape, reps)?;
    if args.json {
        print_json(&tuned);
        return Ok(());
    }
    println!("adapter: {}", gpu.describe());
    for (tiles, ms) in &tuned.timings {
        let mark = if *tiles == tuned.best {
            "  <- fastest"
        } else {
            ""
        };
        println!("{tiles:<16} {ms:>10.3} ms{mark}");
    }
    match &tuned.cache {
        Some(path) => println!("stored in {path}"),
        None => println!("no cache directory: the choice was not stored"),
    }
    Ok(())
}
