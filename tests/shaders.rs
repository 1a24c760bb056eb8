//! Every registered shader compiles on this adapter, and a broken one is an error value that
//! names the kernel (never a panic).

mod common;

use common::gpu;
use sae_wgpu::gpu::pipeline::compile_module;
use sae_wgpu::gpu::GpuError;

#[test]
fn bad_wgsl_is_a_compile_error_naming_the_kernel() {
    let Some(gpu) = gpu() else { return };
    let err = compile_module(
        &gpu.device,
        "broken_kernel",
        "@compute @workgroup_size(1) fn main() { let x: u32 = 1.5; }",
    )
    .unwrap_err();
    assert!(matches!(err, GpuError::Compile { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("broken_kernel"), "{message}");
    assert!(!message.contains('\n'), "errors are one line: {message}");
}
