//! `sae synth`: synthetic activation shards from a known dictionary.

use std::path::PathBuf;

use clap::Args;

use crate::data::synth::{write_synthetic, SynthConfig};

#[derive(Args, Debug)]
pub struct SynthArgs {
    /// Output directory for the shards (the dictionary goes in truth/true_dictionary.safetensors).
    #[arg(long)]
    out: PathBuf,
    #[arg(long, default_value_t = 64)]
    d_in: usize,
    /// True features (more than d_in: superposition).
    #[arg(long, default_value_t = 256)]
    n_features: usize,
    #[arg(long, default_value_t = 32768)]
    rows_per_shard: usize,
    #[arg(long, default_value_t = 2)]
    shards: usize,
    /// Mean number of active features per row.
    #[arg(long, default_value_t = 5.0)]
    mean_active: f64,
    /// Firing probability of feature i ∝ (i + 1)^(−exponent).
    #[arg(long, default_value_t = 0.5)]
    power_law_exponent: f64,
    /// Standard deviation of Gaussian noise added to each row.
    #[arg(long, default_value_t = 0.0)]
    noise_std: f64,
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.d_in > 0 && args.n_features > 0,
        "--d-in and --n-features must be positive"
    );
    anyhow::ensure!(
        args.rows_per_shard > 0 && args.shards > 0,
        "--rows-per-shard and --shards must be positive"
    );
    anyhow::ensure!(args.mean_active > 0.0, "--mean-active must be positive");
    let config = SynthConfig {
        d_in: args.d_in,
        n_features: args.n_features,
        rows_per_shard: args.rows_per_shard,
        shards: args.shards,
        mean_active: args.mean_active,
        power_law_exponent: args.power_law_exponent,
        noise_std: args.noise_std,
        seed: args.seed,
    };
    let paths = write_synthetic(&config, &args.out)?;
    println!(
        "wrote {} shards and truth/true_dictionary.safetensors to {}",
        paths.len(),
        args.out.display()
    );
    Ok(())
}
