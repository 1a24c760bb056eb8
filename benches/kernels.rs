//! `cargo bench`: the same kernel benchmarks as `sae bench kernels --json`, one JSON line per
//! kernel. Shapes come from SAE_BENCH_SHAPES ("B,D_IN,D_SAE,K;…"); by default the smallest
//! default shape on a CPU adapter, the full default set on a GPU.

use sae_wgpu::bench::{bench_kernels, BenchShape};
use sae_wgpu::gpu::{AdapterRequest, Gpu};

fn main() {
    let gpu = match Gpu::new(&AdapterRequest {
        adapter: std::env::var("SAE_ADAPTER").ok(),
        ..Default::default()
    }) {
        Ok(gpu) => gpu,
        Err(error) => {
            eprintln!("SKIP: {error}");
            return;
        }
    };
    let on_cpu = gpu.info.device_type == wgpu::DeviceType::Cpu;
    let shapes: Vec<BenchShape> = match std::env::var("SAE_BENCH_SHAPES") {
        Ok(list) => match list.split(';').map(str::parse).collect() {
            Ok(shapes) => shapes,
            Err(error) => {
                eprintln!("SAE_BENCH_SHAPES: {error}");
                std::process::exit(2);
            }
        },
        Err(_) if on_cpu => BenchShape::defaults().into_iter().take(1).collect(),
        Err(_) => BenchShape::defaults(),
    };
    let reps = if on_cpu { 3 } else { 10 };
    for shape in shapes {
        let result = bench_kernels(&gpu, shape, reps, None, |record| {
            println!("{}", serde_json::to_string(record).unwrap_or_default());
        });
        if let Err(error) = result {
            eprintln!("skipping shape {}: {error}", shape.label());
        }
    }
}
