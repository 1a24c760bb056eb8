//! The `sae` command line: each command maps its flags to a job's request (src/run), makes one
//! library call and prints the report; shared argument groups live in `args.rs`. This is also
//! the one place errors become a message and an exit code.

mod adapters;
mod args;
mod attribute;
mod bench;
mod categories;
mod encode;
mod eval;
mod frontier;
mod hist;
mod synth;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use args::{GpuArgs, MatmulArgs};

#[derive(Parser, Debug)]
#[command(
    name = "sae",
    version,
    about = "Train and analyse sparse autoencoders on any GPU (WGSL through wgpu)"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List every GPU adapter wgpu sees, with its limits and optional features.
    Adapters(adapters::AdaptersArgs),
    /// Train a TopK SAE on activation shards (no shards: a synthetic quick start).
    Train(Box<train::TrainArgs>),
    /// Reconstruction metrics of an SAE (ours, sparsify or SAELens) over activation shards.
    Eval(eval::EvalArgs),
    /// Sparse codes (indices, values, tokens) of every row, one file per shard.
    Encode(encode::EncodeArgs),
    /// Per-feature activation statistics, histograms and top rows (mergeable across runs).
    Hist(Box<hist::HistArgs>),
    /// Groups of features that belong together (decoder-cosine kNN graph, Engels' clustering),
    /// ranked by how much lower-dimensional they are than their size.
    Categories(Box<categories::CategoriesArgs>),
    /// Held-out FVU against L0 for several SAEs (a sweep counts as its members): frontier.json
    /// and frontier.png.
    Frontier(frontier::FrontierArgs),
    /// What writes each group of latents: every component's, head's and upstream transcoder
    /// feature's exact share of their pre-activations over a component cache, against a null
    /// of matched random groups.
    Attribute(Box<attribute::AttributeArgs>),
    /// Write synthetic activation shards from a known dictionary.
    Synth(synth::SynthArgs),
    /// Benchmarks (JSON lines with --json).
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Vulkan drivers probe the window system when the instance is created; with no
/// XDG_RUNTIME_DIR, libwayland prints "error: XDG_RUNTIME_DIR is invalid or not set" twice, which
/// a newcomer reads as our failure. A compute-only tool has no window system to find, so point
/// the probe at a private empty directory (only when the variable is unset or not a directory).
fn quiet_window_system_probe() {
    let usable = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .is_some_and(|dir| dir.is_dir());
    if usable {
        return;
    }
    let uid = std::fs::metadata("/proc/self").map_or(0, |m| {
        #[cfg(unix)]
        {
            std::os::unix::fs::MetadataExt::uid(&m)
        }
        #[cfg(not(unix))]
        {
            let _ = m;
            0
        }
    });
    let dir = std::env::temp_dir().join(format!("sae-wgpu-runtime-{uid}"));
    if std::fs::create_dir_all(&dir).is_ok() {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        }
        // Still one thread here: nothing else reads the environment concurrently.
        std::env::set_var("XDG_RUNTIME_DIR", &dir);
    }
}

pub fn main() -> ExitCode {
    quiet_window_system_probe();
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Adapters(args) => adapters::run(&args),
        Command::Train(args) => train::run(*args),
        Command::Synth(args) => synth::run(args),
        Command::Categories(args) => categories::run(*args),
        Command::Eval(args) => eval::run(args),
        Command::Attribute(args) => attribute::run(*args),
        Command::Frontier(args) => frontier::run(args),
        Command::Encode(args) => encode::run(args),
        Command::Hist(args) => hist::run(*args),
        Command::Bench(command) => bench::run(command),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            // One line: the chain of causes joined, no backtrace.
            let message = error
                .chain()
                .map(|cause| cause.to_string())
                .collect::<Vec<_>>()
                .join(": ");
            eprintln!("error: {message}");
            ExitCode::FAILURE
        }
    }
}
