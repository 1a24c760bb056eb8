//! Training on 16-bit shards (uploaded as stored and widened on the GPU) is training on their
//! values: the same rows stored as f16, bf16 or f32 give the same weights bit for bit,
//! b_dec's geometric-median initialisation included (it reads a sample on the host).

mod common;

use std::path::{Path, PathBuf};

use common::training::{run_options, tiny_config};
use common::{gpu, random_vec, rng, temp_dir};
use half::{bf16, f16};
use sae_wgpu::io::{write_safetensors, TensorOut};
use sae_wgpu::run::train::{train, BDecInit};
use sae_wgpu::sae::formats::load_sae;

fn bits(dir: &Path) -> Vec<u32> {
    let p = load_sae(dir).unwrap().params;
    [&p.w_enc, &p.b_enc, &p.w_dec, &p.b_dec]
        .iter()
        .flat_map(|v| v.iter().map(|x| x.to_bits()))
        .collect()
}

#[test]
fn f16_bf16_and_f32_shards_of_the_same_values_train_alike() {
    let Some(gpu) = gpu() else { return };
    let dir = temp_dir("half-training");
    let (rows, d_in) = (700, 9);
    let raw = random_vec(&mut rng(4), rows * d_in, 2.0);
    let write = |name: &str, tensor: TensorOut| -> PathBuf {
        let path = dir.join(name);
        write_safetensors(&path, &[tensor], None).unwrap();
        path
    };
    // Values f16 and bf16 both hold exactly: f16-rounded, then bf16-rounded.
    let values: Vec<f32> = raw
        .iter()
        .map(|&v| bf16::from_f32(f16::from_f32(v).to_f32()).to_f32())
        .collect();
    let shards = [
        write(
            "f32.safetensors",
            TensorOut::f32("activations", &[rows, d_in], &values),
        ),
        write(
            "f16.safetensors",
            TensorOut::f16("activations", &[rows, d_in], &values),
        ),
        write(
            "bf16.safetensors",
            TensorOut::bf16("activations", &[rows, d_in], &values),
        ),
    ];
    for init in [BDecInit::GeometricMedian, BDecInit::Mean] {
        let mut runs = Vec::new();
        for shard in &shards {
            let mut config = tiny_config(vec![shard.clone()], 20, 3, 8);
            config.data.batch_size = 64;
            config.init.b_dec_init = init;
            let run = dir.join(format!("{init:?}-{}", shard.file_stem().unwrap().display()));
            let report = train(gpu, Some(config), &run_options(&run, false, None)).unwrap();
            assert!(report.heldout.is_some_and(|h| h.fvu.is_finite()));
            runs.push(run);
        }
        let want = bits(&runs[0]);
        for run in &runs[1..] {
            assert!(
                bits(run) == want,
                "{}: differs from the f32 shard's run",
                run.display()
            );
        }
    }
}
