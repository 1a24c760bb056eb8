use std::process::ExitCode;

fn main() -> ExitCode {
    sae_wgpu::cli::main()
}
