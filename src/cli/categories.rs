//! `sae categories SAE --out DIR`: groups of features that belong together, ranked by how much
//! lower-dimensional they are than their size, with each group's cyclic order.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;
use serde_json::json;

use super::GpuArgs;
use crate::analysis::categories::{categories, engels_components, knn_graph, unit_rows};
use crate::io::{write_json_atomic, write_safetensors, TensorOut};
use crate::sae::formats::load_sae;

#[derive(Args, Debug)]
pub struct CategoriesArgs {
    /// SAE directory: sparsify, SAELens, or a `sae train` run directory.
    sae: PathBuf,
    /// Output directory for categories.json and categories.safetensors.
    #[arg(long)]
    out: PathBuf,
    /// Neighbours kept per feature in the decoder-cosine kNN graph.
    #[arg(long, default_value_t = 16)]
    neighbours: usize,
    /// Engels' graph clustering: link each feature to this many of its nearest neighbours…
    #[arg(long, default_value_t = 2)]
    link_top: usize,
    /// …when their decoder cosine exceeds this.
    #[arg(long, default_value_t = 0.5)]
    link_cosine: f32,
    /// Print this feature's category: members, their cosines with it, the structure figures.
    #[arg(long)]
    feature: Option<usize>,
    /// Features per GPU batch of the cosine product.
    #[arg(long, default_value_t = 1024)]
    batch_size: usize,
    #[arg(long)]
    quiet: bool,
    #[command(flatten)]
    gpu: GpuArgs,
}

pub fn run(args: CategoriesArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.batch_size > 0, "--batch-size must be at least 1");
    anyhow::ensure!(
        (1..=511).contains(&args.neighbours),
        "--neighbours must be between 1 and 511"
    );
    anyhow::ensure!(
        args.link_top >= 1 && args.link_top <= args.neighbours,
        "--link-top must be between 1 and --neighbours"
    );
    let loaded = load_sae(&args.sae)?;
    let params = &loaded.params;
    let (d_in, d_sae) = (params.d_in, params.d_sae);
    anyhow::ensure!(
        d_sae >= 2,
        "{}: the SAE has one feature",
        args.sae.display()
    );
    if let Some(feature) = args.feature {
        if feature >= d_sae {
            bail!(
                "--feature {feature} is out of range: {} has features 0..{}",
                args.sae.display(),
                d_sae - 1
            );
        }
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("{}: cannot create", args.out.display()))?;
    let gpu = args.gpu.open()?;
    let neighbours = args.neighbours.min(d_sae - 1);
    let unit = unit_rows(&params.w_dec, d_in);
    let graph = knn_graph(&gpu, &unit, d_in, d_sae, neighbours, args.batch_size)?;
    let labels = engels_components(&graph, args.link_top, args.link_cosine);
    let found = categories(&labels, &unit, d_in);

    // Every feature's category rank (0: in none), and the graph.
    let mut rank_of = vec![0i32; d_sae];
    for category in &found {
        for &m in &category.members {
            rank_of[m] = category.rank as i32;
        }
    }
    let index: Vec<i32> = graph.index.iter().map(|&i| i as i32).collect();
    write_safetensors(
        &args.out.join("categories.safetensors"),
        &[
            TensorOut::i32("category", &[d_sae], &rank_of),
            TensorOut::i32("knn_index", &[d_sae, graph.neighbours], &index),
            TensorOut::f32("knn_cosine", &[d_sae, graph.neighbours], &graph.cosine),
        ],
        None,
    )?;
    write_json_atomic(
        &args.out.join("categories.json"),
        &json!({
            "sae": args.sae.display().to_string(),
            "d_in": d_in,
            "d_sae": d_sae,
            "method": "engels_graph",
            "neighbours": graph.neighbours,
            "link_top": args.link_top,
            "link_cosine": args.link_cosine,
            "rank_by": "subspace",
            "categories": found,
        }),
    )?;
    if !args.quiet {
        let ranked = found.iter().filter(|c| c.size >= 3).count();
        println!(
            "{} categories ({ranked} of ≥ 3 features) among {d_sae} features → {}",
            found.len(),
            args.out.display()
        );
        for c in found.iter().take(5) {
            println!(
                "  #{:<3} {:>4} features  score {:6.2}  PR {:5.2}  mean cos {:.3}",
                c.rank,
                c.size,
                c.shape.subspace_score,
                c.shape.participation_ratio,
                c.shape.mean_pairwise_cosine
            );
        }
    }
    if let Some(feature) = args.feature {
        let dot = |a: usize, b: usize| -> f64 {
            unit[a * d_in..(a + 1) * d_in]
                .iter()
                .zip(&unit[b * d_in..(b + 1) * d_in])
                .map(|(x, y)| f64::from(*x) * f64::from(*y))
                .sum()
        };
        match found.iter().find(|c| c.members.contains(&feature)) {
            None => println!("feature {feature} belongs to no category (no close neighbours)"),
            Some(c) => {
                println!(
                    "feature {feature}: category #{} of {} features, score {:.2} (PR {:.2}), circle residual {:.3}",
                    c.rank,
                    c.size,
                    c.shape.subspace_score,
                    c.shape.participation_ratio,
                    c.shape.circle.relative_residual
                );
                println!("  cyclic order: {:?}", c.shape.cyclic_order);
                for &m in &c.members {
                    println!("  {m:>8}  cos {:+.3}", dot(feature, m));
                }
            }
        }
    }
    Ok(())
}
