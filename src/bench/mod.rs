//! Benchmarks and tuning: `sae bench kernels` (each kernel of the trainer's own step, timed),
//! `sae bench train` (end-to-end steps of the real trainer on streamed data) and
//! `sae bench tune` (the encoder GEMM's tile shape per adapter and shape, cached; the tuning
//! itself lives in `gpu::tune`, which `sae train` also uses).

pub mod kernels;
pub mod train;

pub use kernels::{bench_kernels, BenchRecord, BenchShape};

use crate::gpu::Gpu;

/// The adapter, backend and driver, as every benchmark record names them.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterRecord {
    pub adapter: String,
    pub backend: String,
    pub driver: String,
}

impl AdapterRecord {
    pub fn of(gpu: &Gpu) -> Self {
        AdapterRecord {
            adapter: gpu.info.name.clone(),
            backend: format!("{:?}", gpu.info.backend).to_lowercase(),
            driver: format!("{} {}", gpu.info.driver, gpu.info.driver_info)
                .trim()
                .to_string(),
        }
    }
}

/// The median of `values` (sorted in place); 0 for none.
pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => values[n / 2],
        _ => 0.5 * (values[n / 2 - 1] + values[n / 2]),
    }
}
