//! Co-occurrence over all pairs of features (`sae categories`' co-occurrence kNN graph) against
//! an f64 CPU reference: the counting and scoring kernels at an unaligned block of an unaligned
//! dictionary with NaN-poisoned scores, and the whole pass (rows and chunks, every statistic,
//! the count matrix split into blocks and passes) on shards streamed through an SAE.

mod common;

use std::sync::Arc;

use common::reference::{encode, RefSae};
use common::{gpu, random_vec, rng, temp_dir, to_f64};
use rand::Rng;
use sae_wgpu::analysis::categories::cooccurrence::{
    pair_counts, partners, CooccurrenceMeasure, CooccurrenceUnit, CountSource, PartnerConfig,
};
use sae_wgpu::data::column::RowColumn;
use sae_wgpu::data::open_shards;
use sae_wgpu::gpu::kernels::cooccurrence_pairs::{
    launch_count_unit_pairs, launch_pair_scores, PairBlock, PairMeasure, UnitLists,
};
use sae_wgpu::gpu::{AdapterRequest, Gpu, Recorder};
use sae_wgpu::io::{write_safetensors, TensorOut};
use sae_wgpu::sae::forward::DEFAULT_CAP;
use sae_wgpu::sae::params::{Activation, SaeParams};
use sae_wgpu::sae::GpuSae;

/// The statistics, written out from their definitions in f64.
fn reference_score(measure: CooccurrenceMeasure, joint: f64, a: f64, b: f64, n: f64) -> f64 {
    match measure {
        CooccurrenceMeasure::Phi => {
            let spread = a * (n - a) * b * (n - b);
            if spread > 0.0 {
                (n * joint - a * b) / spread.sqrt()
            } else {
                0.0
            }
        }
        CooccurrenceMeasure::Jaccard => joint / (a + b - joint),
        CooccurrenceMeasure::Npmi => {
            if joint < n {
                (joint * n / (a * b)).ln() / (n / joint).ln()
            } else {
                0.0
            }
        }
    }
}

/// Joint counts [d_sae, d_sae] (the diagonal: each feature's own count) of feature lists.
fn reference_counts(units: &[Vec<usize>], d_sae: usize) -> Vec<u64> {
    let mut counts = vec![0u64; d_sae * d_sae];
    for unit in units {
        for &i in unit {
            for &j in unit {
                counts[i * d_sae + j] += 1;
            }
        }
    }
    counts
}

fn reference_scores(
    counts: &[u64],
    d_sae: usize,
    n: f64,
    measure: CooccurrenceMeasure,
    min_joint: u64,
) -> Vec<f64> {
    let mut scores = vec![0.0; d_sae * d_sae];
    for i in 0..d_sae {
        for j in 0..d_sae {
            let joint = counts[i * d_sae + j];
            if i != j && joint >= min_joint.max(1) {
                let (a, b) = (counts[i * d_sae + i], counts[j * d_sae + j]);
                scores[i * d_sae + j] =
                    reference_score(measure, joint as f64, a as f64, b as f64, n);
            }
        }
    }
    scores
}

#[test]
fn pair_kernels_match_cpu_reference() {
    let Some(gpu) = gpu() else { return };
    let d_sae = 77;
    // Random units of 0..9 distinct features, most from a small popular set so that pairs
    // repeat.
    let mut r = rng(3);
    let units: Vec<Vec<usize>> = (0..33)
        .map(|_| {
            let mut unit: Vec<usize> = Vec::new();
            for _ in 0..r.random_range(0..10) {
                let f = if r.random_bool(0.6) {
                    r.random_range(0..12)
                } else {
                    r.random_range(0..d_sae)
                };
                if !unit.contains(&f) {
                    unit.push(f);
                }
            }
            unit
        })
        .collect();
    let mut entry_unit = Vec::new();
    let mut unit_start = vec![0u32];
    let mut features = Vec::new();
    for (u, unit) in units.iter().enumerate() {
        for &f in unit {
            entry_unit.push(u as u32);
            features.push(f as u32);
        }
        unit_start.push(features.len() as u32);
    }
    let want = reference_counts(&units, d_sae);
    let feature_units: Vec<u32> = (0..d_sae).map(|f| want[f * d_sae + f] as u32).collect();
    let n = units.len() as u64;
    // An unaligned block in the middle of the dictionary.
    let block = PairBlock {
        lo: 5,
        rows: 7,
        d_sae,
    };
    let lists_entry = gpu.upload("entry_unit", &entry_unit).unwrap();
    let lists_start = gpu.upload("unit_start", &unit_start).unwrap();
    let lists_features = gpu.upload("unit_features", &features).unwrap();
    let lists = UnitLists {
        entry_unit: &lists_entry,
        unit_start: &lists_start,
        unit_features: &lists_features,
        units: units.len(),
        entries: features.len(),
    };
    let counts = gpu.storage::<u32>("counts", block.len()).unwrap();
    let fu = gpu.upload("feature_units", &feature_units).unwrap();
    let scores = gpu.upload("scores", &vec![f32::NAN; block.len()]).unwrap();
    for (measure, kernel_measure, min_joint) in [
        (CooccurrenceMeasure::Phi, PairMeasure::Phi, 1),
        (CooccurrenceMeasure::Jaccard, PairMeasure::Jaccard, 2),
        (CooccurrenceMeasure::Npmi, PairMeasure::Npmi, 1),
    ] {
        gpu.write(&scores, &vec![f32::NAN; block.len()]).unwrap();
        let mut rec = Recorder::new(gpu, "test: pair kernels");
        rec.clear(&counts);
        launch_count_unit_pairs(&mut rec, &lists, block, &counts).unwrap();
        launch_pair_scores(
            &mut rec,
            block,
            &counts,
            &fu,
            n,
            kernel_measure,
            min_joint,
            &scores,
        )
        .unwrap();
        rec.submit().unwrap();
        let got: Vec<u32> = gpu.read(&counts).unwrap();
        for i in 0..block.rows {
            for j in 0..d_sae {
                let f = block.lo + i;
                let expect = if f == j { 0 } else { want[f * d_sae + j] };
                assert_eq!(u64::from(got[i * d_sae + j]), expect, "count ({f}, {j})");
            }
        }
        let all = reference_scores(&want, d_sae, n as f64, measure, u64::from(min_joint));
        let reference = &all[block.lo * d_sae..(block.lo + block.rows) * d_sae];
        let out: Vec<f32> = gpu.read(&scores).unwrap();
        assert!(
            reference.iter().filter(|&&v| v != 0.0).count() > 10,
            "{measure:?}: the reference must not be trivially zero"
        );
        common::assert_close(&format!("{measure:?} scores"), &out, reference, 1e-5);
    }
}

/// The document of global row `r`: documents of 1 to 41 rows, one spanning the shard boundary
/// at row 300 (it counts as two units, one per shard).
fn document_of(r: usize) -> i64 {
    let mut start = 0;
    let mut doc = 0;
    loop {
        let len = 1 + (doc * 17 + 5) % 41;
        if r < start + len {
            return doc as i64;
        }
        start += len;
        doc += 1;
    }
}

/// Rows 0..577 of a 13-dimensional random dataset in two shards with a per-row `doc` column,
/// and a random TopK SAE.
fn data(dir: &std::path::Path) -> (SaeParams, Vec<f32>, Vec<std::path::PathBuf>) {
    let (d_in, d_sae, k) = (13, 77, 5);
    let params = common::random_sae(7, d_in, d_sae, Activation::TopK { k });
    let x = random_vec(&mut rng(8), 577 * d_in, 1.0);
    let mut paths = Vec::new();
    for (s, rows) in [(0usize, 0..300usize), (1, 300..577)] {
        let path = dir.join(format!("shard{s}.safetensors"));
        let doc: Vec<i64> = rows.clone().map(document_of).collect();
        write_safetensors(
            &path,
            &[
                TensorOut::f32(
                    "activations",
                    &[rows.len(), d_in],
                    &x[rows.start * d_in..rows.end * d_in],
                ),
                TensorOut::i64("doc", &[rows.len()], &doc),
            ],
            None,
        )
        .unwrap();
        paths.push(path);
    }
    (params, x, paths)
}

/// The features of each row firing above `fires_above`, from an f64 encode.
fn firing(params: &SaeParams, x: &[f32], k: usize, fires_above: f64) -> Vec<Vec<usize>> {
    let d_sae = params.d_sae;
    let h = encode(
        &to_f64(x),
        x.len() / params.d_in,
        &RefSae::from_params(params),
    );
    h.chunks_exact(d_sae)
        .map(|row| {
            let mut h: Vec<(f64, usize)> = row.iter().map(|&v| v.max(0.0)).zip(0..).collect();
            h.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            h.iter()
                .take(k)
                .filter(|(v, _)| *v > fires_above)
                .map(|&(_, n)| n)
                .collect()
        })
        .collect()
}

#[test]
fn partners_over_all_pairs_match_cpu_reference() {
    let Some(whole_gpu) = gpu() else { return };
    let dir = temp_dir("cooccurrence-pairs");
    let (params, x, paths) = data(&dir);
    let d_sae = params.d_sae;
    // Count blocks of 10 rows of 77 (a binding of 3080 bytes): 8 blocks.
    let split_gpu = Gpu::new(&AdapterRequest {
        max_binding_override: Some(4 * 77 * 10 + 16),
        ..AdapterRequest::default()
    })
    .unwrap();
    let extra = vec![(0usize, 1usize), (3, 76), (40, 2), (10, 11)];
    // (unit, chunk rows, threshold, measure, M, min joint, batch, gpu, memory): row units and
    // chunks straddling batches and shards; the last case counts 3 blocks per pass, 3 passes.
    let cases = [
        (
            CooccurrenceUnit::Row,
            1,
            0.0f32,
            CooccurrenceMeasure::Phi,
            7,
            1,
            64,
            whole_gpu,
            1 << 30,
        ),
        (
            CooccurrenceUnit::Chunk,
            7,
            0.0,
            CooccurrenceMeasure::Jaccard,
            5,
            2,
            33,
            whole_gpu,
            1 << 30,
        ),
        (
            CooccurrenceUnit::Row,
            1,
            0.5,
            CooccurrenceMeasure::Npmi,
            3,
            1,
            16,
            whole_gpu,
            1 << 30,
        ),
        (
            CooccurrenceUnit::Chunk,
            40,
            0.0,
            CooccurrenceMeasure::Phi,
            9,
            1,
            32,
            &split_gpu,
            3 * 3080,
        ),
        (
            CooccurrenceUnit::Document,
            1,
            0.0,
            CooccurrenceMeasure::Jaccard,
            6,
            1,
            33,
            whole_gpu,
            1 << 30,
        ),
    ];
    for (unit, chunk_rows, fires_above, measure, m, min_joint, batch, gpu, memory) in cases {
        let case = format!("{unit:?} {chunk_rows}, above {fires_above}, {measure:?}, M {m}");
        let sae = GpuSae::upload_with_cap(gpu, &params, DEFAULT_CAP, batch).unwrap();
        let shards = Arc::new(open_shards(&paths, "activations", Some(13)).unwrap());
        let config = PartnerConfig {
            unit,
            chunk_rows,
            fires_above,
            measure,
            partners: m,
            min_joint,
            memory_bytes: memory,
        };
        let column =
            (unit == CooccurrenceUnit::Document).then(|| RowColumn::open(&shards, "doc").unwrap());
        let got = partners(
            gpu,
            CountSource::Shards {
                sae: &sae,
                shards: Arc::clone(&shards),
                documents: column.as_ref(),
                batch_rows: batch,
            },
            config,
            &extra,
            |_| {},
        )
        .unwrap();
        // Counted in two parts (one shard each) and summed: the same partners, bit for bit,
        // where units do not straddle the shards (rows, documents).
        if unit != CooccurrenceUnit::Chunk {
            let mut sum: Option<sae_wgpu::analysis::categories::cooccurrence::SparseCounts> = None;
            for path in &paths {
                let part = Arc::new(
                    open_shards(std::slice::from_ref(path), "activations", Some(13)).unwrap(),
                );
                let column = (unit == CooccurrenceUnit::Document)
                    .then(|| RowColumn::open(&part, "doc").unwrap());
                let counts =
                    pair_counts(gpu, &sae, part, config, column.as_ref(), batch, |_| {}).unwrap();
                match &mut sum {
                    None => sum = Some(counts),
                    Some(total) => total.add(&counts).unwrap(),
                }
            }
            let sum = sum.unwrap();
            let merged = partners(gpu, CountSource::Merged(&sum), config, &extra, |_| {}).unwrap();
            assert_eq!(merged.units, got.units, "{case}: merged units");
            assert_eq!(
                merged.feature_units, got.feature_units,
                "{case}: merged counts"
            );
            assert_eq!(merged.pair_joint, got.pair_joint, "{case}: merged pairs");
            assert_eq!(merged.index, got.index, "{case}: merged partners");
            assert_eq!(merged.score, got.score, "{case}: merged scores");
        }
        let rows = firing(&params, &x, 5, f64::from(fires_above));
        // Each row's unit key: its row, chunk, or (shard, document).
        let key = |r: usize| -> (usize, i64) {
            match unit {
                CooccurrenceUnit::Row => (r, 0),
                CooccurrenceUnit::Chunk => (r / chunk_rows, 0),
                CooccurrenceUnit::Document => (usize::from(r >= 300), document_of(r)),
            }
        };
        let mut units: Vec<Vec<usize>> = Vec::new();
        for (r, fired) in rows.iter().enumerate() {
            if r == 0 || key(r) != key(r - 1) {
                units.push(Vec::new());
            }
            if let Some(u) = units.last_mut() {
                u.extend(fired);
            }
        }
        for u in &mut units {
            u.sort_unstable();
            u.dedup();
        }
        let counts = reference_counts(&units, d_sae);
        let n = units.len() as u64;
        assert_eq!(got.units, n, "{case}: units");
        let own: Vec<u32> = (0..d_sae).map(|f| counts[f * d_sae + f] as u32).collect();
        assert_eq!(got.feature_units, own, "{case}: per-feature counts");
        for (e, &(i, j)) in extra.iter().enumerate() {
            assert_eq!(
                u64::from(got.pair_joint[e]),
                counts[i * d_sae + j],
                "{case}: pair ({i}, {j})"
            );
        }
        if memory < 1 << 20 {
            assert_eq!(got.passes, 3, "{case}: 8 blocks, 3 per pass");
        }
        let scores = reference_scores(&counts, d_sae, n as f64, measure, u64::from(min_joint));
        // Every feature's partners: the reference's M best positive scores, and each partner's
        // own reference score (ties may order partners differently, never change the scores).
        let mut out = Vec::new();
        let mut want = Vec::new();
        let mut found = 0;
        for i in 0..d_sae {
            let mut best: Vec<f64> = scores[i * d_sae..(i + 1) * d_sae]
                .iter()
                .copied()
                .filter(|&v| v > 0.0)
                .collect();
            best.sort_by(|a, b| b.total_cmp(a));
            best.truncate(got.partners);
            let mine: Vec<(usize, f32)> = got.of(i).collect();
            assert_eq!(
                mine.len(),
                best.len(),
                "{case}: feature {i}'s partner count"
            );
            for (&(j, s), &b) in mine.iter().zip(&best) {
                out.push(s);
                want.push(b);
                out.push(s);
                want.push(scores[i * d_sae + j]);
                found += 1;
            }
        }
        assert!(found > d_sae, "{case}: too few partners to test");
        common::assert_close(&format!("{case}: partner scores"), &out, &want, 1e-5);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
