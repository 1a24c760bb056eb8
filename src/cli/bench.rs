//! `sae bench kernels`: time every kernel of a training step.

use clap::{Args, Subcommand};

use super::GpuArgs;
use crate::bench::{bench_kernels, BenchRecord, BenchShape};

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time each kernel at realistic shapes (batch 4096; d_in 576, 768, 2048; d_sae 8× and 32×
    /// d_in; k 32). On a CPU adapter only the smallest shape runs unless --all-shapes.
    Kernels(KernelsArgs),
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

fn print_row(record: &BenchRecord) {
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.1}"));
    println!(
        "{:<22} {:<26} {:>10.3} {:>10.3} {:>10} {:>9}",
        record.kernel,
        record.shape,
        record.ms_median,
        record.ms_min,
        fmt(record.gflops),
        fmt(record.gbps)
    );
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    let BenchCommand::Kernels(args) = command;
    let gpu = args.gpu.open()?;
    let on_cpu = gpu.info.device_type == wgpu::DeviceType::Cpu;
    let shapes = if !args.shapes.is_empty() {
        args.shapes.clone()
    } else if on_cpu && !args.all_shapes {
        BenchShape::defaults().into_iter().take(1).collect()
    } else {
        BenchShape::defaults()
    };
    if !args.json {
        println!("adapter: {}", gpu.describe());
        if on_cpu && args.shapes.is_empty() && !args.all_shapes {
            println!("CPU adapter: smallest default shape only (--all-shapes for all)");
        }
        println!(
            "{:<22} {:<26} {:>10} {:>10} {:>10} {:>9}",
            "kernel", "shape", "ms median", "ms min", "GFLOP/s", "GB/s"
        );
    }
    let reps = args.reps.unwrap_or(if on_cpu { 3 } else { 10 });
    for shape in shapes {
        let result = bench_kernels(&gpu, shape, reps, args.kernel.as_deref(), |record| {
            if args.json {
                match serde_json::to_string(record) {
                    Ok(line) => println!("{line}"),
                    Err(error) => eprintln!("error: {error}"),
                }
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
