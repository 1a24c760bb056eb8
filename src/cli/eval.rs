//! `sae eval SAE SHARDS…`: reconstruction metrics of any SAE over activation shards.

use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::GpuArgs;
use crate::analysis::eval::Evaluator;
use crate::data::{expand_inputs, open_shards, BatchStream, StreamConfig};
use crate::sae::formats::load_sae_at;
use crate::sae::forward::{GpuSae, DEFAULT_CAP};

#[derive(Args, Debug)]
pub struct EvalArgs {
    /// SAE directory: sparsify, SAELens, or a `sae train` run directory.
    sae: PathBuf,
    /// Activation shards: files, directories or glob patterns.
    #[arg(required = true)]
    shards: Vec<PathBuf>,
    /// A sparsify run saved for several hookpoints: the one to use (its subdirectory).
    #[arg(long)]
    hookpoint: Option<String>,
    /// Name of the activation tensor in the shards.
    #[arg(long, default_value = "activations")]
    tensor: String,
    /// Rows per GPU batch.
    #[arg(long, default_value_t = 4096)]
    batch_size: usize,
    /// ReLU / JumpReLU SAEs: latents kept per row (the rest are counted as dropped).
    #[arg(long, default_value_t = DEFAULT_CAP)]
    cap: usize,
    /// Skip (and count) rows holding NaN or Inf instead of stopping.
    #[arg(long)]
    skip_nonfinite: bool,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

pub fn progress(total_rows: u64, hidden: bool) -> ProgressBar {
    let bar = if hidden {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(total_rows), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{bar:30} {human_pos}/{human_len} rows  {per_sec}  [{elapsed_precise} < {eta_precise}]",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    let loaded = load_sae_at(&args.sae, args.hookpoint.as_deref())?;
    let params = loaded.params;
    let shards = open_shards(
        &expand_inputs(&args.shards)?,
        &args.tensor,
        Some(params.d_in),
    )?;
    let total: u64 = shards.iter().map(|s| s.rows as u64).sum();
    let gpu = args.gpu.open()?;
    let sae = GpuSae::upload_with_cap(&gpu, &params, args.cap, args.batch_size)?;
    let evaluator = Evaluator::new(&gpu, &sae, args.batch_size)?;
    let mut stream_cfg = StreamConfig::sequential(args.batch_size);
    stream_cfg.skip_nonfinite = args.skip_nonfinite;
    let stream = BatchStream::start(Arc::new(shards), stream_cfg)?;
    let bar = progress(total, args.json);
    let acc = evaluator.run(stream, 1.0, |rows| bar.inc(rows))?;
    bar.finish_and_clear();
    let summary = acc.summary();
    if args.json {
        let mut value = serde_json::to_value(&summary)?;
        value["sae"] = serde_json::to_value(&loaded.provenance)?;
        println!("{}", serde_json::to_string(&value)?);
    } else {
        println!("SAE: {}", loaded.provenance.describe());
        for fold in &loaded.provenance.folded {
            println!("     {fold}");
        }
        println!("rows            {}", summary.rows);
        println!("FVU             {:.6}", summary.fvu);
        println!("MSE             {:.6}", summary.mse);
        println!("L0              {:.3}", summary.l0);
        println!("dead fraction   {:.6}", summary.dead_frac);
        println!("dense fraction  {:.6}", summary.dense_frac);
        println!("mean cosine     {:.6}", summary.mean_cosine);
        println!("rel. recon bias {:.6}", summary.rel_recon_bias);
        if let Some(dropped) = summary.dropped_activations {
            println!(
                "dropped         {dropped} activations past the cap of {}",
                sae.k
            );
        }
    }
    Ok(())
}
