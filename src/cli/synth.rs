//! `sae synth`: synthetic activation shards from a known dictionary.

use std::path::PathBuf;

use clap::Args;

use crate::data::synth::{write_synthetic, PlantedCircle, PlantedTranscoder, SynthConfig};
use crate::run::synth_components::{write_components, ComponentsConfig};

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
    /// Smallest magnitude of an active feature (magnitudes are uniform in [min, max)).
    #[arg(long, default_value_t = 0.5)]
    magnitude_min: f32,
    /// Largest magnitude of an active feature.
    #[arg(long, default_value_t = 1.5)]
    magnitude_max: f32,
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Plant a circle: a circular variable written at evenly spaced angles in a random plane,
    /// among the ordinary features (features n_features .. n_features + circle_points).
    #[arg(long)]
    circle: bool,
    /// Points on the planted circle (like 7 days of the week).
    #[arg(long, default_value_t = 7, requires = "circle")]
    circle_points: usize,
    /// Chance that a row carries the circular variable.
    #[arg(long, default_value_t = 0.3, requires = "circle")]
    circle_probability: f64,
    /// Standard deviation of a row's angle around its point, as a fraction of the spacing.
    #[arg(long, default_value_t = 0.05, requires = "circle")]
    circle_jitter: f64,
    /// Weight in [0, 1) of each circle point's own direction outside the plane (real circles,
    /// like the days of the week, are not purely 2-D; without it a TopK SAE has no reason to
    /// learn the points rather than any ring of latents covering the plane).
    #[arg(long, default_value_t = 0.0, requires = "circle")]
    circle_identity: f64,
    /// Plant a transcoder: write beside each row x = Σ sᵢaᵢuᵢ (each feature with a random sign)
    /// a target y = Σ aᵢvᵢ + S·x (+ noise) as the tensor `target`, from the same codes, with
    /// random unit output directions V and a random skip S (truth/: output_features, skip); y's
    /// linear part is exactly S·x. Train with --target-tensor target.
    #[arg(long, conflicts_with = "circle")]
    transcoder: bool,
    /// The targets' width (default d_in).
    #[arg(long, requires = "transcoder")]
    d_out: Option<usize>,
    /// ‖S·x‖ ≈ skip_scale·‖x‖ (0: no skip path).
    #[arg(long, default_value_t = 0.5, requires = "transcoder")]
    skip_scale: f64,
    /// Write a component cache with a planted mechanism instead (out/cache, out/sae,
    /// out/transcoder, out/truth.json): a toy 3-block model whose residual is the sum of its
    /// components, an SAE over it (--n-features latents, TopK 4), and a transcoder of block
    /// 1's MLP; one group of latents is written by that MLP through planted transcoder
    /// features, one by head L2H1, the others by components drawn at random. For testing
    /// `sae attribute`. Rows: --rows-per-shard.
    #[arg(long, conflicts_with_all = ["circle", "transcoder"])]
    components: bool,
    /// With --components: the transcoder's features.
    #[arg(long, default_value_t = 32, requires = "components")]
    tc_features: usize,
    /// Standard deviation of the target's own noise.
    #[arg(long, default_value_t = 0.0, requires = "transcoder")]
    target_noise_std: f64,
}

pub fn run(args: SynthArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.d_in > 0 && args.n_features > 0,
        "--d-in and --n-features must be positive"
    );
    if args.components {
        let config = ComponentsConfig {
            d: args.d_in,
            d_sae: args.n_features,
            rows: args.rows_per_shard,
            mean_active: args.mean_active,
            d_tc: args.tc_features,
            noise_std: args.noise_std,
            seed: args.seed,
        };
        write_components(&config, &args.out)?;
        println!(
            "wrote a component cache, an SAE, a transcoder and truth.json to {}",
            args.out.display()
        );
        return Ok(());
    }
    anyhow::ensure!(
        args.rows_per_shard > 0 && args.shards > 0,
        "--rows-per-shard and --shards must be positive"
    );
    anyhow::ensure!(args.mean_active > 0.0, "--mean-active must be positive");
    anyhow::ensure!(
        !args.circle || args.circle_points >= 3,
        "--circle-points must be at least 3"
    );
    anyhow::ensure!(
        (0.0..=1.0).contains(&args.circle_probability) && args.circle_jitter >= 0.0,
        "--circle-probability must lie in [0, 1] and --circle-jitter be non-negative"
    );
    anyhow::ensure!(
        (0.0..1.0).contains(&args.circle_identity),
        "--circle-identity must lie in [0, 1)"
    );
    anyhow::ensure!(
        0.0 < args.magnitude_min && args.magnitude_min < args.magnitude_max,
        "--magnitude-min must be positive and below --magnitude-max"
    );
    let config = SynthConfig {
        d_in: args.d_in,
        n_features: args.n_features,
        rows_per_shard: args.rows_per_shard,
        shards: args.shards,
        mean_active: args.mean_active,
        power_law_exponent: args.power_law_exponent,
        noise_std: args.noise_std,
        magnitudes: (args.magnitude_min, args.magnitude_max),
        seed: args.seed,
        circle: args.circle.then_some(PlantedCircle {
            points: args.circle_points,
            probability: args.circle_probability,
            jitter: args.circle_jitter,
            identity: args.circle_identity,
        }),
        transcoder: args.transcoder.then_some(PlantedTranscoder {
            d_out: args.d_out.unwrap_or(args.d_in),
            skip_scale: args.skip_scale,
            target_noise_std: args.target_noise_std,
        }),
    };
    anyhow::ensure!(
        config.transcoder.is_none_or(|t| t.d_out > 0),
        "--d-out must be positive"
    );
    let paths = write_synthetic(&config, &args.out)?;
    println!(
        "wrote {} shards and truth/true_dictionary.safetensors to {}",
        paths.len(),
        args.out.display()
    );
    Ok(())
}
