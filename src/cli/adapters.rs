//! `sae adapters`: what GPUs wgpu sees.

use clap::Args;

use crate::gpu::coop::f16_tile;
use crate::gpu::{list_adapters, AdapterSummary, BackendChoice, GpuError};

#[derive(Args, Debug)]
pub struct AdaptersArgs {
    /// Print one JSON object per adapter.
    #[arg(long)]
    json: bool,
    /// Only this graphics API.
    #[arg(long, value_enum)]
    backend: Option<BackendChoice>,
}

pub fn run(args: &AdaptersArgs) -> anyhow::Result<()> {
    let adapters = list_adapters(args.backend);
    if adapters.is_empty() {
        let looked_for = match args.backend {
            Some(backend) => format!("backend {backend:?}"),
            None => "Vulkan, Metal, DX12 and GL backends".into(),
        };
        return Err(GpuError::NoAdapter { looked_for }.into());
    }
    for adapter in &adapters {
        if args.json {
            println!("{}", serde_json::to_string(adapter)?);
            continue;
        }
        println!("[{}] {}", adapter.index, adapter.name);
        println!("    backend        {}", adapter.backend);
        println!("    device type    {}", adapter.device_type);
        println!(
            "    driver         {} ({})",
            adapter.driver, adapter.driver_info
        );
        println!(
            "    vendor/device  {:#06x}/{:#06x}",
            adapter.vendor_id, adapter.device_id
        );
        println!(
            "    limits         storage binding {} MiB, buffer {} MiB, workgroup memory {} KiB, {} invocations/workgroup, {} workgroups/dim, {} storage buffers/stage",
            adapter.max_storage_buffer_binding_size >> 20,
            adapter.max_buffer_size >> 20,
            adapter.max_compute_workgroup_storage_size >> 10,
            adapter.max_compute_invocations_per_workgroup,
            adapter.max_compute_workgroups_per_dimension,
            adapter.max_storage_buffers_per_shader_stage
        );
        if let Some(bytes) = adapter.device_memory_bytes {
            println!("    memory         {} MiB", bytes >> 20);
        }
        let features = if adapter.features.is_empty() {
            "none".to_string()
        } else {
            adapter.features.join(", ")
        };
        println!("    features       {features}");
        println!(
            "    subgroups      {}..{} invocations",
            adapter.subgroup_min_size, adapter.subgroup_max_size
        );
        println!("    matrix units   {}", matrix_units(adapter));
    }
    Ok(())
}

/// The cooperative-matrix configurations, and whether `--matmul auto` uses them.
fn matrix_units(adapter: &AdapterSummary) -> String {
    if adapter.cooperative_matrices.is_empty() {
        return "none (no cooperative matrices: --matmul auto runs f32)".into();
    }
    let configs: Vec<String> = adapter
        .cooperative_matrices
        .iter()
        .map(|c| format!("{}×{}×{} {}→{}", c.m, c.n, c.k, c.ab, c.cr))
        .collect();
    let use_ = match f16_tile(&adapter.cooperative_matrices) {
        Some(t) => format!("--matmul auto runs f16 on {t}×{t} tiles"),
        None => "none is f16 → f32: --matmul auto runs f32".into(),
    };
    format!("{} ({use_})", configs.join(", "))
}
