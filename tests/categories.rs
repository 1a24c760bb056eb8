//! `sae categories`: the GPU decoder-cosine kNN graph against an f64 CPU reference, and the
//! whole command on planted structure: the points of a planted circle form one category,
//! ranked first by the subspace score, in their cyclic order.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{gpu, random_vec, rng, temp_dir};
use sae_wgpu::analysis::categories::{knn_graph, unit_rows};
use sae_wgpu::data::synth::{write_synthetic, PlantedCircle, SynthConfig, TRUE_DICTIONARY};
use sae_wgpu::gpu::Matmul;
use sae_wgpu::io::{write_safetensors, TensorOut};
use sae_wgpu::sae::formats::{load_sae, read_tensor_f32, save_sparsify};
use sae_wgpu::sae::params::{Activation, SaeParams};

fn cpu_cosines(w_dec: &[f32], d_in: usize, i: usize) -> Vec<(usize, f64)> {
    let d_sae = w_dec.len() / d_in;
    let row = |j: usize| &w_dec[j * d_in..(j + 1) * d_in];
    let norm = |j: usize| {
        row(j)
            .iter()
            .map(|&v| f64::from(v).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let mut out: Vec<(usize, f64)> = (0..d_sae)
        .filter(|&j| j != i)
        .map(|j| {
            let dot: f64 = row(i)
                .iter()
                .zip(row(j))
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            (j, (dot / (norm(i) * norm(j))).max(0.0))
        })
        .collect();
    out.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    out
}

#[test]
fn knn_graph_matches_cpu_reference() {
    let Some(gpu) = gpu() else { return };
    // (d_in, d_sae, neighbours, batch): batches that do not divide d_sae, unaligned widths.
    for (d_in, d_sae, neighbours, batch) in [(13, 77, 6, 10), (8, 33, 1, 33), (4, 7, 6, 3)] {
        let w_dec = random_vec(&mut rng(d_sae as u64), d_sae * d_in, 1.0);
        let unit = unit_rows(&w_dec, d_in);
        let graph = knn_graph(gpu, &unit, d_in, d_sae, neighbours, batch, Matmul::F32).unwrap();
        assert_eq!(graph.neighbours, neighbours);
        assert_eq!(graph.index.len(), d_sae * neighbours);
        for i in 0..d_sae {
            let reference = cpu_cosines(&w_dec, d_in, i);
            for (slot, (j, c)) in graph.of(i).enumerate() {
                let (want_j, want_c) = reference[slot];
                assert!(
                    (f64::from(c) - want_c).abs() <= 1e-5,
                    "feature {i} slot {slot}: cosine {c} vs {want_c}"
                );
                // Ids must agree unless two reference cosines are within rounding.
                let tied = reference
                    .iter()
                    .any(|&(k, ck)| k != want_j && (ck - want_c).abs() <= 1e-5);
                assert!(
                    tied || j == want_j,
                    "feature {i} slot {slot}: {j} vs {want_j}"
                );
                assert_ne!(j, i, "a feature is not its own neighbour");
            }
        }
    }
}

/// Features that share topics, not directions: 4 topics of 5 features each (feature f belongs
/// to topic f % 8 when that is below 4) whose decoder rows are random, plus 20 background
/// features. Each document of 32 rows has one topic; its features fire often there and
/// nowhere else, the background fires everywhere. Decoder cosine cannot find the topics; chunk
/// co-occurrence (Li et al.'s "lobes") must.
#[test]
fn cooccurrence_finds_topics_that_decoder_geometry_cannot() {
    if gpu().is_none() {
        return;
    }
    let dir = temp_dir("categories-topics");
    let (d_in, d_sae, doc_rows, docs) = (64, 40, 32, 200);
    let mut r = rng(11);
    let w_dec = unit_rows(&random_vec(&mut r, d_sae * d_in, 1.0), d_in);
    let topic_of = |f: usize| (f % 8 < 4).then_some(f % 8);
    let mut x = vec![0.0f32; docs * doc_rows * d_in];
    for (row, out) in x.chunks_exact_mut(d_in).enumerate() {
        let topic = (row / doc_rows * 7 + 3) % 4;
        for f in 0..d_sae {
            let p = match topic_of(f) {
                Some(t) if t == topic => 0.25,
                Some(_) => 0.0,
                None => 0.03,
            };
            if rand::Rng::random::<f64>(&mut r) < p {
                out.iter_mut()
                    .zip(&w_dec[f * d_in..(f + 1) * d_in])
                    .for_each(|(o, w)| *o += w);
            }
        }
    }
    let shard = dir.join("topics.safetensors");
    write_safetensors(
        &shard,
        &[TensorOut::f32("activations", &[docs * doc_rows, d_in], &x)],
        None,
    )
    .unwrap();
    let params = dictionary_sae(w_dec, d_in, 6);
    let sae = dir.join("sae");
    save_sparsify(&sae, &params).unwrap();
    let topics: Vec<Vec<usize>> = (0..4)
        .map(|t| (0..d_sae).filter(|&f| topic_of(f) == Some(t)).collect())
        .collect();
    let category_sets = |out: &Path| -> Vec<Vec<usize>> {
        let report = read_json(&out.join("categories.json"));
        report["categories"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| ids(&c["members"]))
            .collect()
    };
    let (sae, shard) = (sae.to_str().unwrap(), shard.to_str().unwrap());
    // Every pair is a candidate (39 neighbours); a feature fires in a chunk above 0.7 (its
    // activations are 1 plus the interference of the others' directions, which alone stays
    // below that).
    let common = [
        "--neighbours",
        "39",
        "--fires-above",
        "0.7",
        "--resolution",
        "0.3",
        "--cooccurrence-unit",
        "chunk",
        "--chunk",
        "32",
    ];
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![sae, shard, "--out", out.to_str().unwrap(), "--quiet"];
        args.extend_from_slice(&common);
        args.extend_from_slice(extra);
        let output = run_categories(&args);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    let blended = dir.join("blended");
    run(&blended, &["--cooccurrence-weight", "0.8"]);
    let found = category_sets(&blended);
    for topic in &topics {
        assert!(
            found.contains(topic),
            "topic {topic:?} not a category: {found:?}"
        );
    }
    let report = read_json(&blended.join("categories.json"));
    assert_eq!(
        report["cooccurrence"]["units"], 200,
        "{}",
        report["cooccurrence"]
    );
    let bytes = std::fs::read(blended.join("categories.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let index = st.tensor("knn_index").unwrap();
    let phi = st.tensor("knn_phi").unwrap();
    assert_eq!(phi.shape(), &[40, 39]);
    assert_eq!(st.tensor("knn_jaccard").unwrap().shape(), &[40, 39]);
    let index: Vec<i32> = bytemuck::pod_collect_to_vec(index.data());
    let phi: Vec<f32> = bytemuck::pod_collect_to_vec(phi.data());
    // Topic mates are present in the same documents; other pairs are nearly independent.
    for (slot, (&j, &v)) in index.iter().zip(&phi).enumerate() {
        let (i, j) = (slot / 39, j as usize);
        match (topic_of(i), topic_of(j)) {
            (Some(a), Some(b)) if a == b => assert!(v > 0.8, "phi({i}, {j}) = {v}"),
            _ => assert!(v < 0.5, "phi({i}, {j}) = {v}"),
        }
    }
    // Decoder cosine alone finds none of them.
    let plain = dir.join("plain");
    run(&plain, &["--cooccurrence-weight", "0"]);
    let found = category_sets(&plain);
    for topic in &topics {
        assert!(
            !found.contains(topic),
            "{topic:?} found without co-occurrence"
        );
    }
    // Co-occurrence is counted on data.
    let output = run_categories(&[
        sae,
        "--out",
        plain.to_str().unwrap(),
        "--cooccurrence-unit",
        "row",
    ]);
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("--cooccurrence-unit needs shards"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Runs `sae ARGS… FLAGS` (FLAGS split at whitespace) and fails the test with its stderr if
/// it fails.
fn sae(args: &[&str], flags: &str) {
    let output = Command::new(env!("CARGO_BIN_EXE_sae"))
        .args(args)
        .args(flags.split_whitespace())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sae {args:?} {flags}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The acceptance test of `sae categories`, end to end through the CLI: plant a 7-point circle
/// among 24 ordinary features (`sae synth`), train a TopK SAE on it (`sae train`); the latents
/// that learned the circle's points must all be in category #1 by the default score, in their
/// cyclic order.
///
/// Each point carries a direction of its own besides its place on the circle
/// (`--circle-identity 0.5`, as "Monday" is more than an angle): purely in-plane points are
/// not identifiable by a TopK SAE, which covers the plane with any ring of 4–6 latents. A
/// trained SAE also has latents that mix a point with an ordinary feature; they sit between
/// the ring and the rest, so Leiden at the default resolution 0.05 often cuts the ring into
/// arcs, and at 0.03 keeps it whole with a few such neighbours (measured over 8 training
/// seeds and settings: whole at 0.03 in 8 of 8, at 0.05 in 1 of 8). The test asks for both
/// levels; categories come from the first.
#[test]
fn trained_sae_finds_the_planted_circle_as_the_first_category() {
    if gpu().is_none() {
        return;
    }
    let dir = temp_dir("categories-trained");
    let (data, run, out) = (dir.join("data"), dir.join("run"), dir.join("out"));
    let (data_s, run_s, out_s) = (
        data.to_str().unwrap(),
        run.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    sae(
        &["synth", "--out", data_s],
        "--d-in 64 --n-features 24 --rows-per-shard 30000 --shards 1 --mean-active 2 \
         --circle --circle-probability 0.6 --circle-identity 0.5 --seed 1",
    );
    sae(
        &["train", data_s, "--out", run_s],
        "--k 3 --d-sae 31 --batch-size 128 --tokens 256000 --lr 1e-2 --dead-tokens 5000 \
         --format sparsify --quiet",
    );
    sae(
        &["categories", run_s, data_s, "--out", out_s],
        "--resolution 0.03,0.05 --quiet",
    );

    // Each planted point's latent: the best decoder-cosine match, which must be a good one.
    let truth_path = data.join(TRUE_DICTIONARY);
    let bytes = std::fs::read(&truth_path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let truth = read_tensor_f32(&st, "features", &[31, 64], &truth_path).unwrap();
    let learned = unit_rows(&load_sae(&run).unwrap().params.w_dec, 64);
    let mut point_of = std::collections::HashMap::new();
    for point in 0..7 {
        let feature = &truth[(24 + point) * 64..(25 + point) * 64];
        let (latent, cosine) = (0..31)
            .map(|l| {
                let row = &learned[l * 64..(l + 1) * 64];
                (l, row.iter().zip(feature).map(|(a, b)| a * b).sum::<f32>())
            })
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        assert!(
            cosine > 0.9,
            "point {point}: best latent {latent}, cosine {cosine}"
        );
        assert!(
            point_of.insert(latent, point).is_none(),
            "latent {latent} learned two points"
        );
    }
    let mut planted: Vec<usize> = point_of.keys().copied().collect();
    planted.sort();

    let report = read_json(&out.join("categories.json"));
    let first = &report["categories"][0];
    let members = ids(&first["members"]);
    let extra: Vec<usize> = members
        .iter()
        .copied()
        .filter(|m| !point_of.contains_key(m))
        .collect();
    assert!(
        planted.iter().all(|p| members.contains(p)) && extra.len() <= 4,
        "planted latents {planted:?}, first category: {first}"
    );
    // The members' cyclic order, read on the planted points: from the decoder rows, and from
    // the reconstructions on data; and the tokens (the strongest feature's id) around it.
    for order in [&first["cyclic_order"], &first["structure"]["cyclic_order"]] {
        let points: Vec<usize> = ids(order)
            .iter()
            .filter_map(|l| point_of.get(l).copied())
            .collect();
        assert_cyclic(&points, 7);
    }
    // Rows where no feature fired have token −1.
    let tokens: Vec<usize> = first["structure"]["token_order"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_i64().unwrap())
        .filter(|&t| t >= 24)
        .map(|t| t as usize - 24)
        .collect();
    assert_eq!(tokens.len(), 7, "token order {}", first["structure"]);
    assert_cyclic(&tokens, 7);
    eprintln!(
        "trained: category #1 = planted {planted:?} + {extra:?}, PR {:.2}, score {:.2}, \
         Engels (1 − M)·S {:.2}",
        first["participation_ratio"].as_f64().unwrap(),
        first["subspace_score"].as_f64().unwrap(),
        first["structure"]["engels_score"]
            .as_f64()
            .unwrap_or(f64::NAN),
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// The true dictionary of synthetic data with a planted circle, as a "perfect" SAE (encoder
/// = decoderᵀ, TopK), with its rows shuffled so the circle's points are neither contiguous nor
/// in order. Returns the SAE directory, the shards and each latent's true feature.
fn planted_sae(dir: &Path) -> (PathBuf, Vec<PathBuf>, Vec<usize>) {
    // In 64 dimensions a random feature's cosine with another rarely reaches the graph's
    // 3/√64 edge floor, while neighbouring points of a 7-point circle have cosine 0.62.
    let config = SynthConfig {
        d_in: 64,
        n_features: 40,
        rows_per_shard: 3000,
        shards: 1,
        mean_active: 2.0,
        circle: Some(PlantedCircle::default()),
        transcoder: None,
        seed: 3,
        ..SynthConfig::default()
    };
    let shards = write_synthetic(&config, &dir.join("data")).unwrap();
    let truth_path = dir.join("data").join(TRUE_DICTIONARY);
    let bytes = std::fs::read(&truth_path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let (d_in, d_sae) = (64, 47);
    let truth = read_tensor_f32(&st, "features", &[d_sae, d_in], &truth_path).unwrap();
    let permutation: Vec<usize> = (0..d_sae).map(|i| (i * 17 + 5) % d_sae).collect();
    let mut w_dec = vec![0.0f32; d_sae * d_in];
    for (slot, &feature) in permutation.iter().enumerate() {
        w_dec[slot * d_in..(slot + 1) * d_in]
            .copy_from_slice(&truth[feature * d_in..(feature + 1) * d_in]);
    }
    let params = dictionary_sae(w_dec, d_in, 4);
    let sae_dir = dir.join("sae");
    save_sparsify(&sae_dir, &params).unwrap();
    (sae_dir, shards, permutation)
}

/// A TopK SAE whose dictionary is `w_dec` ([d_sae, d_in]) and whose encoder is its transpose,
/// biases zero: the planted truth as an SAE.
fn dictionary_sae(w_dec: Vec<f32>, d_in: usize, k: usize) -> SaeParams {
    let d_sae = w_dec.len() / d_in;
    let mut params = SaeParams {
        input_norm: Default::default(),
        d_in,
        d_sae,
        activation: Activation::TopK { k },
        w_enc: Vec::new(),
        b_enc: vec![0.0; d_sae],
        w_dec,
        b_dec: vec![0.0; d_in],
        transcoder: None,
    };
    params.w_enc = params.w_dec_transposed();
    params
}

fn run_categories(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sae"))
        .arg("categories")
        .args(args)
        .output()
        .unwrap()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn ids(value: &serde_json::Value) -> Vec<usize> {
    value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect()
}

/// Consecutive entries of `order` (positions on a circle of `points`) are neighbours, all in
/// the same direction.
fn assert_cyclic(order: &[usize], points: usize) {
    let step = (order[1] + points - order[0]) % points;
    assert!(step == 1 || step == points - 1, "cyclic order {order:?}");
    for w in order.windows(2) {
        assert_eq!(
            (w[1] + points - w[0]) % points,
            step,
            "cyclic order {order:?}"
        );
    }
}

#[test]
fn planted_circle_is_the_first_category_with_its_structure_and_report() {
    if gpu().is_none() {
        return;
    }
    let dir = temp_dir("categories");
    let (sae_dir, shards, permutation) = planted_sae(&dir);
    let out = dir.join("out");
    let planted: Vec<usize> = (0..47).filter(|&s| permutation[s] >= 40).collect();
    let asked = planted[3].to_string();
    let output = run_categories(&[
        sae_dir.to_str().unwrap(),
        shards[0].to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--neighbours",
        "8",
        "--batch-size",
        "500",
        "--samples",
        "2000",
        "--feature",
        &asked,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = read_json(&out.join("categories.json"));
    let first = &report["categories"][0];
    assert_eq!(ids(&first["members"]), planted, "first category: {first}");
    let pr = first["participation_ratio"].as_f64().unwrap();
    assert!((pr - 2.0).abs() < 0.05, "participation ratio {pr}");
    let position = |v: &serde_json::Value| -> Vec<usize> {
        ids(v).iter().map(|&s| permutation[s] - 40).collect()
    };
    // From the decoder rows alone, and from the reconstructions on data.
    assert_cyclic(&position(&first["cyclic_order"]), 7);
    let structure = &first["structure"];
    assert_cyclic(&position(&structure["cyclic_order"]), 7);
    let variance: Vec<f64> = structure["pca_variance"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    assert!(
        variance[0] + variance[1] > 0.99,
        "PCA variance {variance:?}"
    );
    // The fitted circle is centred on the planted one (the reconstructions are centred by
    // PCA). Its residual stays large: rows where ordinary features leak into circle latents
    // draw spokes towards the centre.
    let circle = &structure["circle"];
    let radius = circle["radius"].as_f64().unwrap();
    let centre = circle["centre"][0]
        .as_f64()
        .unwrap()
        .hypot(circle["centre"][1].as_f64().unwrap());
    assert!(radius > 0.5 && centre < 0.25 * radius, "circle {circle}");
    // Synthetic tokens are the strongest feature's id: the circle's points come out in order.
    let tokens: Vec<usize> = ids(&structure["token_order"])
        .into_iter()
        .filter(|&t| t >= 40)
        .map(|t| t - 40)
        .collect();
    assert_eq!(tokens.len(), 7, "token order {}", structure["token_order"]);
    assert_cyclic(&tokens, 7);
    // The graph and the labels are in the tensors file.
    let bytes = std::fs::read(out.join("categories.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("knn_index").unwrap().shape(), &[47, 8]);
    assert_eq!(st.tensor("labels").unwrap().shape(), &[1, 47]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!("feature {asked}: category #1 of 7 features")),
        "{stdout}"
    );
    check_report_renders(&out);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The report opens in headless Chromium: the index lists the categories, a category page has
/// its plots, and a screenshot is not blank. Skips without a Chromium (CI installs one).
fn check_report_renders(out: &Path) {
    let browser = ["chromium-headless-shell", "chromium", "chromium-browser"]
        .into_iter()
        .find(|b| Command::new(b).arg("--version").output().is_ok());
    let Some(browser) = browser else {
        assert!(
            std::env::var_os("SAE_REQUIRE_BROWSER").is_none(),
            "SAE_REQUIRE_BROWSER is set but no headless Chromium was found"
        );
        eprintln!("skipping the report rendering check: no headless Chromium");
        return;
    };
    let chromium = |extra: &[&str], page: &str| {
        let url = format!("file://{}", out.join(page).display());
        Command::new(browser)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--allow-file-access-from-files",
            ])
            .args(extra)
            .arg(url)
            .output()
            .unwrap()
    };
    let dom = chromium(&["--dump-dom"], "index.html");
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(
        dom.contains("<h1>Feature categories</h1>"),
        "index DOM: {dom}"
    );
    assert!(
        dom.contains("href=\"category-001.html\""),
        "index DOM: {dom}"
    );
    let page = chromium(&["--dump-dom"], "category-001.html");
    let page = String::from_utf8_lossy(&page.stdout);
    assert!(
        page.contains("plots/category-001-pca.png"),
        "category DOM: {page}"
    );
    let shot = out.join("screenshot.png");
    let screenshot = format!("--screenshot={}", shot.display());
    chromium(
        &[&screenshot, "--window-size=1200,1400"],
        "category-001.html",
    );
    let size = std::fs::metadata(&shot).map(|m| m.len()).unwrap_or(0);
    // A blank white page compresses to a few kB; this one has two plots and tables.
    assert!(size > 30_000, "screenshot of {size} bytes");
}

/// A tiny SAE (d_in 4) and one shard of 50 rows whose tokens reach id `max_token`.
fn tiny_inputs(dir: &Path, max_token: i32) -> (PathBuf, PathBuf) {
    let mut r = rng(2);
    let params = SaeParams {
        input_norm: Default::default(),
        d_in: 4,
        d_sae: 6,
        activation: Activation::TopK { k: 2 },
        w_enc: random_vec(&mut r, 24, 1.0),
        b_enc: vec![0.0; 6],
        w_dec: random_vec(&mut r, 24, 1.0),
        b_dec: vec![0.0; 4],
        transcoder: None,
    };
    save_sparsify(&dir.join("sae"), &params).unwrap();
    let x = random_vec(&mut r, 200, 1.0);
    let tokens: Vec<i32> = (0..50).map(|i| i % (max_token + 1)).collect();
    let shard = dir.join("shard.safetensors");
    write_safetensors(
        &shard,
        &[
            TensorOut::f32("activations", &[50, 4], &x),
            TensorOut::i32("tokens", &[50], &tokens),
        ],
        None,
    )
    .unwrap();
    (dir.join("sae"), shard)
}

/// Model weights of width `d_model` (one block, two heads of 2, four neurons, vocab 5), with
/// the tensor `skip` left out.
fn tiny_model(dir: &Path, d_model: usize, skip: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("config.json"),
        format!(r#"{{"hidden_size": {d_model}, "intermediate_size": 4, "num_attention_heads": 2, "head_dim": 2, "vocab_size": 5}}"#),
    )
    .unwrap();
    let d = d_model;
    let tensors: Vec<TensorOut> = [
        ("model.embed_tokens.weight", vec![5, d]),
        ("model.norm.weight", vec![d]),
        ("model.layers.0.self_attn.o_proj.weight", vec![d, 4]),
        ("model.layers.0.mlp.down_proj.weight", vec![d, 4]),
    ]
    .into_iter()
    .filter(|(name, _)| *name != skip)
    .map(|(name, shape)| {
        let n = shape.iter().product();
        TensorOut::f16(name, &shape, &random_vec(&mut rng(n as u64), n, 1.0))
    })
    .collect();
    let path = dir.join("writers.safetensors");
    write_safetensors(&path, &tensors, None).unwrap();
    path
}

/// A word-level tokenizer.json with `vocab` tokens "w0", "w1", ….
fn tiny_tokenizer(dir: &Path, vocab: usize) -> PathBuf {
    let words: Vec<String> = (0..vocab).map(|i| format!("\"w{i}\": {i}")).collect();
    let json = format!(
        r#"{{"version": "1.0", "truncation": null, "padding": null, "added_tokens": [], "normalizer": null, "pre_tokenizer": {{"type": "Whitespace"}}, "post_processor": null, "decoder": null, "model": {{"type": "WordLevel", "vocab": {{{}}}, "unk_token": "w0"}}}}"#,
        words.join(", ")
    );
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, json).unwrap();
    path
}

#[test]
fn bad_inputs_are_one_line_and_leave_no_report() {
    if gpu().is_none() {
        return;
    }
    let dir = temp_dir("categories-inputs");
    let (sae, shard) = tiny_inputs(&dir, 9);
    let (sae, shard) = (sae.to_str().unwrap(), shard.to_str().unwrap());
    let wide = tiny_model(&dir.join("wide"), 8, "");
    let missing = tiny_model(
        &dir.join("missing"),
        4,
        "model.layers.0.mlp.down_proj.weight",
    );
    let good = tiny_model(&dir.join("good"), 4, "");
    let small_vocab = tiny_tokenizer(&dir, 5);
    std::fs::create_dir_all(dir.join("full")).unwrap();
    let full_vocab = tiny_tokenizer(&dir.join("full"), 10);
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let families = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        s(&path)
    };
    let with_tokenizer = |flags: &[String]| {
        let mut v = vec!["--tokenizer".to_string(), s(&full_vocab)];
        v.extend_from_slice(flags);
        v
    };
    // The tokenizer's coverage is found while streaming, after work has begun: it goes first,
    // so it also shows that the earlier run's report is gone, not left looking like this
    // run's. The others are refused before anything is touched.
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--tokenizer".into(), s(&small_vocab)],
            "token id 9 but the tokenizer's vocabulary has 5 ids",
        ),
        (
            vec!["--feature".into(), "6".into()],
            "--feature 6 is out of range",
        ),
        (
            vec!["--samples".into(), "0".into()],
            "--samples must be at least 1",
        ),
        (
            vec!["--cooccurrence-weight".into(), "1.5".into()],
            "--cooccurrence-weight must lie in [0, 1]",
        ),
        (
            vec!["--model".into(), s(&wide)],
            "decoder writes 4 values but the model's hidden size is 8",
        ),
        (
            with_tokenizer(&["--families".into(), s(&dir.join("absent.json"))]),
            "cannot read the families file",
        ),
        (
            with_tokenizer(&["--families".into(), families("bad.json", "{not json")]),
            "bad.json: not JSON",
        ),
        (
            with_tokenizer(&[
                "--families".into(),
                families("none.json", r#"{"colours": ["red", "green"]}"#),
            ]),
            "family 'colours' names no token of the tokenizer",
        ),
        (
            with_tokenizer(&[
                "--families".into(),
                families("regex.json", r#"{"w": {"regex": "w[0-"}}"#),
            ]),
            "family 'w': bad regex",
        ),
        (
            vec!["--families".into(), families("ok.json", r#"{"w": ["w1"]}"#)],
            "--families needs --tokenizer",
        ),
        (
            vec!["--partners".into(), "0".into()],
            "--partners must be at least 1",
        ),
        (
            vec![
                "--cooccurrence-unit".into(),
                "document".into(),
                "--document-column".into(),
                "window".into(),
            ],
            "no column named 'window' (found: ",
        ),
        (
            vec!["--cooccurrence-unit".into(), "document".into()],
            "--cooccurrence-unit document needs --document-column",
        ),
        (
            vec!["--chunk".into(), "64".into()],
            "--chunk sets the chunk of --cooccurrence-unit chunk",
        ),
        (
            vec!["--model".into(), s(&missing)],
            "missing tensor 'model.layers.0.mlp.down_proj.weight'",
        ),
    ];
    let out = dir.join("out");
    let first = run_categories(&[
        sae,
        shard,
        "--out",
        out.to_str().unwrap(),
        "--model",
        &s(&good),
    ]);
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    assert!(out.join("index.html").exists() && out.join("categories.json").exists());
    for (extra, message) in cases {
        let mut args = vec![sae.to_string(), shard.to_string(), "--out".into(), s(&out)];
        args.extend(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let output = run_categories(&args);
        assert!(!output.status.success(), "{args:?} succeeded");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let ours: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("error: ") && !l.contains("XDG_RUNTIME_DIR"))
            .collect();
        assert_eq!(ours.len(), 1, "{args:?}: {stderr}");
        assert!(ours[0].contains(message), "{args:?}: {}", ours[0]);
        assert!(
            !out.join("categories.json").exists() && !out.join("index.html").exists(),
            "{args:?} left a report"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn across_matches_parents_children_and_novel_features() {
    if gpu().is_none() {
        return;
    }
    let dir = temp_dir("categories-across");
    let d_in = 16;
    let basis =
        |i: usize| -> Vec<f32> { (0..d_in).map(|j| if j == i { 1.0 } else { 0.0 }).collect() };
    let sae = |rows: Vec<Vec<f32>>| dictionary_sae(rows.concat(), d_in, 1);
    // Narrow: e0, e1, e2. Wide: e0 split in two (e0 ± 0.3·e5), e1, and a novel e9.
    let narrow = sae(vec![basis(0), basis(1), basis(2)]);
    let mut split_a = basis(0);
    split_a[5] = 0.3;
    let mut split_b = basis(0);
    split_b[5] = -0.3;
    let wide = sae(vec![split_a, basis(1), split_b, basis(9)]);
    save_sparsify(&dir.join("narrow"), &narrow).unwrap();
    save_sparsify(&dir.join("wide"), &wide).unwrap();
    let out = dir.join("out");
    let output = run_categories(&[
        dir.join("wide").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--across",
        dir.join("narrow").to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let across = read_json(&out.join("across.json"));
    assert_eq!(
        across["split_parents"],
        serde_json::json!([{"parent": 0, "children": [0, 2]}])
    );
    assert_eq!(ids(&across["novel_in_wide"]), vec![3]);
    assert_eq!(ids(&across["unmatched_in_narrow"]), vec![2]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The issue's planted variable: 7 value features that take turns (exactly one fires where the
/// variable is present) and 3 features that fire for every value ("this is the variable"),
/// among 2000 ordinary features; all 10 decoder rows random, so decoder geometry never links
/// them, and each of the 10 also fires now and then on its own. With shards (co-occurrence on
/// by default) the 10 must be one category of at most 16 members, significant against chance,
/// and `--feature` on any of them must name it.
#[test]
fn a_planted_variable_is_one_significant_category() {
    if gpu().is_none() {
        return;
    }
    let dir = temp_dir("categories-variable");
    let (d_in, ordinary, rows) = (384, 2000, 4000);
    let d_sae = ordinary + 10;
    let mut r = rng(21);
    let w_dec = unit_rows(&random_vec(&mut r, d_sae * d_in, 1.0), d_in);
    // The planted features sit at scattered ids.
    let planted: Vec<usize> = (0..10).map(|i| 37 + i * 199).collect();
    let (values, variable) = planted.split_at(7);
    let is_planted = |f: usize| planted.contains(&f);
    let ordinary_ids: Vec<usize> = (0..d_sae).filter(|&f| !is_planted(f)).collect();
    let mut x = vec![0.0f32; rows * d_in];
    let fire = |out: &mut [f32], f: usize, r: &mut rand_chacha::ChaCha8Rng| {
        let a = 1.0 + 0.5 * rand::Rng::random::<f32>(r);
        out.iter_mut()
            .zip(&w_dec[f * d_in..(f + 1) * d_in])
            .for_each(|(o, w)| *o += a * w);
    };
    for (row, out) in x.chunks_exact_mut(d_in).enumerate() {
        for _ in 0..3 {
            let f = ordinary_ids[rand::Rng::random_range(&mut r, 0..ordinary_ids.len())];
            fire(out, f, &mut r);
        }
        if rand::Rng::random::<f64>(&mut r) < 0.3 {
            fire(out, values[row % 7], &mut r);
            for &f in variable {
                fire(out, f, &mut r);
            }
        }
        for &f in &planted {
            if rand::Rng::random::<f64>(&mut r) < 0.01 {
                fire(out, f, &mut r);
            }
        }
    }
    let shard = dir.join("variable.safetensors");
    write_safetensors(
        &shard,
        &[TensorOut::f32("activations", &[rows, d_in], &x)],
        None,
    )
    .unwrap();
    let params = dictionary_sae(w_dec, d_in, 8);
    let sae = dir.join("sae");
    save_sparsify(&sae, &params).unwrap();
    let out = dir.join("out");
    let (sae, shard, out_s) = (
        sae.to_str().unwrap(),
        shard.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    // Activations of true features are 1–1.5 plus interference; interference alone (a true
    // feature's activation times a cosine of at most ~0.25 with another row, plus the rest)
    // stays below 0.7 in 384 dimensions.
    let feature = values[3].to_string();
    let output = run_categories(&[
        sae,
        shard,
        "--out",
        out_s,
        "--fires-above",
        "0.7",
        "--feature",
        &feature,
        "--top",
        "3",
        "--samples",
        "500",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = read_json(&out.join("categories.json"));
    let categories = report["categories"].as_array().unwrap();
    let of = |f: usize| {
        categories
            .iter()
            .find(|c| ids(&c["members"]).contains(&f))
            .unwrap_or_else(|| panic!("feature {f} is in no category"))
    };
    let category = of(planted[0]);
    let members = ids(&category["members"]);
    for &f in &planted {
        assert_eq!(
            of(f)["rank"],
            category["rank"],
            "feature {f} is not with the others: {members:?}"
        );
    }
    assert!(members.len() <= 16, "too many members: {members:?}");
    assert_eq!(category["significant"], true, "not significant: {category}");
    let line = format!("feature {feature}: category #{} of", category["rank"]);
    assert!(
        stdout.contains(&line),
        "--feature names another category: {stdout}"
    );
    // …and its page lists every other planted feature among the members.
    let page = std::fs::read_to_string(out.join(format!("feature-{feature}.html"))).unwrap();
    assert!(
        page.contains(&format!("#{}</a>", category["rank"])),
        "{page}"
    );
    for f in planted.iter().filter(|f| f.to_string() != feature) {
        assert!(
            page.contains(&format!("<tr><td>{f}</td>")),
            "feature {f} not on the page"
        );
    }
    // Decoder geometry alone (no shards: the decoder graph, nothing counted) does not find it.
    let plain = dir.join("plain");
    let output = run_categories(&[sae, "--out", plain.to_str().unwrap(), "--top", "1"]);
    assert!(output.status.success());
    let report = read_json(&plain.join("categories.json"));
    let together = report["categories"].as_array().unwrap().iter().any(|c| {
        let m = ids(&c["members"]);
        planted.iter().filter(|f| m.contains(f)).count() >= 3
    });
    assert!(
        !together,
        "the decoder graph alone linked the planted features"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
