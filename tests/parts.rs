//! A job split with `--part I/N` and merged equals one pass over all the shards, as a cluster's
//! job array would run it (here N processes one after another): `sae eval` (FVU to 1e-9
//! relative, every other sum to 1e-12, counts exactly), `sae encode` (every code file byte for
//! byte, one combined encode.json), `sae hist` (counts, bins, maxima and top rows exactly, sums
//! to 1e-6 relative: each batch's sum is f32 on the GPU), `sae categories` (the co-occurrence
//! count in parts, summed by `--cooccurrence-from`: categories.json and .safetensors byte for
//! byte). Merges refuse parts that do not fit together, naming the files, and write
//! nothing.

mod common;

use std::path::{Path, PathBuf};

use common::{random_vec, rng, sae_fails, sae_ok, temp_dir};
use sae_wgpu::io::{write_safetensors, TensorOut};
use sae_wgpu::run::outputs::hist_files::load;
use sae_wgpu::sae::formats::save_sparsify;
use sae_wgpu::sae::params::Activation;
use serde_json::Value;

const D_IN: usize = 7;
const D_SAE: usize = 33;
/// Rows per shard: uneven, so the split balances rows rather than counting shards.
const SHARD_ROWS: [usize; 6] = [23, 41, 7, 33, 19, 50];
const PARTS: usize = 3;

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// Shards written in a shuffled name order, so the split has to sort them.
fn write_shards(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    for (n, &rows) in SHARD_ROWS.iter().enumerate() {
        let path = dir.join(format!("shard-{}.safetensors", (n * 7) % SHARD_ROWS.len()));
        let x = random_vec(&mut rng(100 + n as u64), rows * D_IN, 1.2);
        let tokens: Vec<i32> = (0..rows as i32).map(|r| 1000 * n as i32 + r).collect();
        write_safetensors(
            &path,
            &[
                TensorOut::f32("activations", &[rows, D_IN], &x),
                TensorOut::i32("tokens", &[rows], &tokens),
            ],
            None,
        )
        .unwrap();
        paths.push(path);
    }
    paths.sort();
    paths
}

fn with(base: &[String], extra: &[&str]) -> Vec<String> {
    base.iter()
        .cloned()
        .chain(extra.iter().map(|e| e.to_string()))
        .collect()
}

fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap()
}

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.abs().max(b.abs()).max(1e-300)
}

#[test]
fn split_jobs_merge_into_one_pass() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("parts");
    let sae = dir.join("sae");
    save_sparsify(
        &sae,
        &common::random_sae(9, D_IN, D_SAE, Activation::TopK { k: 4 }),
    )
    .unwrap();
    let other_sae = dir.join("other-sae");
    save_sparsify(
        &other_sae,
        &common::random_sae(10, D_IN, D_SAE, Activation::TopK { k: 4 }),
    )
    .unwrap();
    let shard_dir = dir.join("shards");
    std::fs::create_dir_all(&shard_dir).unwrap();
    let shards = write_shards(&shard_dir);
    let part = |i: usize| format!("{i}/{PARTS}");

    // eval: one pass, N parts, the merge.
    let eval_base: Vec<String> = ["eval", &s(&sae), &s(&shard_dir), "--batch-size", "16"]
        .map(String::from)
        .to_vec();
    let one = json(&sae_ok(&with(&eval_base, &["--json"])));
    let mut part_files = Vec::new();
    let mut covered = Vec::new();
    for i in 0..PARTS {
        let text = sae_ok(&with(&eval_base, &["--json", "--part", &part(i)]));
        let value = json(&text);
        covered.extend(
            value["part"]["shards"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap().to_string()),
        );
        let file = dir.join(format!("eval-{i}.json"));
        std::fs::write(&file, text).unwrap();
        part_files.push(file);
    }
    // Every shard in exactly one part, in sorted order.
    assert_eq!(covered, shards.iter().map(|p| s(p)).collect::<Vec<_>>());
    let merge_args = |files: &[PathBuf]| {
        let mut a = vec!["eval".to_string(), "merge".into()];
        a.extend(files.iter().map(|f| s(f)));
        a.push("--json".into());
        a
    };
    let merged_eval = json(&sae_ok(&merge_args(&part_files)));
    let merged = &merged_eval;
    assert_eq!(merged["rows"], one["rows"]);
    assert_eq!(merged["stats"]["fire_counts"], one["stats"]["fire_counts"]);
    for key in ["l0", "dead_frac", "dense_frac"] {
        assert_eq!(merged[key], one[key], "{key}");
    }
    let fvu = (
        one["fvu"].as_f64().unwrap(),
        merged["fvu"].as_f64().unwrap(),
    );
    assert!(rel(fvu.0, fvu.1) <= 1e-9, "FVU {} vs {}", fvu.0, fvu.1);
    for key in ["mse", "mean_cosine", "rel_recon_bias"] {
        let (a, b) = (one[key].as_f64().unwrap(), merged[key].as_f64().unwrap());
        assert!(rel(a, b) <= 1e-12, "{key}: {a} vs {b}");
    }

    // encode: parts write disjoint code files into one directory, then one encode.json.
    let encode_base = |out: &Path| -> Vec<String> {
        [
            "encode",
            &s(&sae),
            &s(&shard_dir),
            "--out",
            &s(out),
            "--values",
            "f32",
            "--batch-size",
            "16",
            "--quiet",
        ]
        .map(String::from)
        .to_vec()
    };
    sae_ok(&encode_base(&dir.join("codes-one")));
    for i in 0..PARTS {
        sae_ok(&with(
            &encode_base(&dir.join("codes-parts")),
            &["--part", &part(i)],
        ));
    }
    assert!(!dir.join("codes-parts/encode.json").exists());
    sae_ok(&[
        "encode",
        "merge",
        &s(&dir.join("codes-parts")),
        "--out",
        &s(&dir.join("codes-parts")),
    ]);
    for shard in &shards {
        let name = shard.file_name().unwrap();
        let (a, b) = (
            std::fs::read(dir.join("codes-one").join(name)).unwrap(),
            std::fs::read(dir.join("codes-parts").join(name)).unwrap(),
        );
        assert!(a == b, "{name:?}: the part's codes differ from one pass");
    }
    let read = |p: PathBuf| json(&std::fs::read_to_string(p).unwrap());
    let (enc_one, enc_merged) = (
        read(dir.join("codes-one/encode.json")),
        read(dir.join("codes-parts/encode.json")),
    );
    // The same entries, shard for shard; only the output directory differs.
    let entries = |v: &Value, out: &str| -> Vec<Value> {
        let mut list = v["shards"].as_array().unwrap().clone();
        for e in &mut list {
            let output = e["output"].as_str().unwrap().replace(out, "OUT");
            e["output"] = Value::from(output);
        }
        list
    };
    assert_eq!(
        entries(&enc_one, &s(&dir.join("codes-one"))),
        entries(&enc_merged, &s(&dir.join("codes-parts")))
    );
    assert_eq!(enc_merged["parts"], PARTS);

    // hist: parts with a common --range, merged.
    let hist_base = |out: &Path, sae: &Path, range: &str| -> Vec<String> {
        [
            "hist",
            &s(sae),
            &s(&shard_dir),
            "--out",
            &s(out),
            "--range",
            range,
            "--bins",
            "9",
            "--top",
            "4",
            "--batch-size",
            "16",
            "--quiet",
        ]
        .map(String::from)
        .to_vec()
    };
    sae_ok(&hist_base(&dir.join("hist-one"), &sae, "0.01,5"));
    let hist_part = |i: usize| dir.join(format!("hist-{i}"));
    for i in 0..PARTS {
        sae_ok(&with(
            &hist_base(&hist_part(i), &sae, "0.01,5"),
            &["--part", &part(i)],
        ));
    }
    // Given out of order: the merge puts parts in part order.
    let hist_merge = |dirs: &[PathBuf], out: &Path| -> Vec<String> {
        let mut a = vec!["hist".to_string(), "merge".into()];
        a.extend(dirs.iter().map(|d| s(d)));
        a.extend(["--out".to_string(), s(out)]);
        a
    };
    let parts_rev: Vec<PathBuf> = (0..PARTS).rev().map(hist_part).collect();
    sae_ok(&hist_merge(&parts_rev, &dir.join("hist-merged")));
    let (one, _) = load(&dir.join("hist-one")).unwrap();
    let (merged, _) = load(&dir.join("hist-merged")).unwrap();
    // Sums to 1e-6: one pass batches across the parts' boundaries, so its f32 batch sums
    // round differently.
    common::assert_hist_equal(&one, &merged, 1e-6);

    // categories: the co-occurrence count split in parts, summed by the finishing run.
    let categories = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "categories",
            &s(&sae),
            &s(&shard_dir),
            "--out",
            &s(out),
            "--quiet",
            "--top",
            "3",
            "--samples",
            "200",
            "--batch-size",
            "16",
        ]
        .map(String::from)
        .to_vec();
        a.extend(extra.iter().map(|e| e.to_string()));
        a
    };
    sae_ok(&categories(&dir.join("cat-one"), &[]));
    let cat_part = |i: usize| dir.join(format!("cat-part-{i}"));
    for i in 0..PARTS {
        sae_ok(&categories(&cat_part(i), &["--part", &part(i)]));
    }
    let parts_args: Vec<String> = (0..PARTS).map(|i| s(&cat_part(i))).collect();
    let mut from = vec!["--cooccurrence-from"];
    from.extend(parts_args.iter().map(String::as_str));
    sae_ok(&categories(&dir.join("cat-merged"), &from));
    for file in ["categories.json", "categories.safetensors"] {
        let (a, b) = (
            std::fs::read(dir.join("cat-one").join(file)).unwrap(),
            std::fs::read(dir.join("cat-merged").join(file)).unwrap(),
        );
        assert!(a == b, "{file}: the merged categories differ from one pass");
    }
    // A part counted with other flags, a missing part: refused, naming the file.
    sae_ok(&categories(
        &dir.join("cat-other"),
        &["--part", "2/3", "--fires-above", "0.5"],
    ));
    let refused_cat = dir.join("cat-refused");
    sae_fails(
        &categories(
            &refused_cat,
            &[
                "--cooccurrence-from",
                &parts_args[0],
                &parts_args[1],
                &s(&dir.join("cat-other")),
            ],
        ),
        &["cat-other", "was counted with"],
    );
    sae_fails(
        &categories(
            &refused_cat,
            &["--cooccurrence-from", &parts_args[0], &parts_args[1]],
        ),
        &["parts 2/3 are missing"],
    );
    assert!(!refused_cat.join("categories.json").exists());

    // The Slurm recipe (examples/slurm/submit.sh), with a stand-in sbatch that runs the array's
    // tasks one after another and then the merge: the same results as one pass.
    let fake_bin = common::fake_slurm_bin(&dir);
    let submit = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/slurm/submit.sh");
    for job in ["hist", "eval", "encode", "categories"] {
        let out = dir.join(format!("slurm-{job}"));
        let status = std::process::Command::new("bash")
            .arg(&submit)
            .env(
                "PATH",
                format!("{}:{}", s(&fake_bin), std::env::var("PATH").unwrap()),
            )
            .env("JOB", job)
            .env("SAE_DIR", &sae)
            .env("SHARDS", &shard_dir)
            .env("OUT", &out)
            .env("N", PARTS.to_string())
            .env("RANGE", "0.01,5")
            .env(
                "SAE_ARGS",
                match job {
                    "hist" => "--bins 9 --top 4",
                    "categories" => "--top 3 --samples 200 --batch-size 16",
                    _ => "--batch-size 16",
                },
            )
            .env("SAE_BIN", env!("CARGO_BIN_EXE_sae"))
            .env("FAKE_SLURM_LOG", dir.join(format!("slurm-{job}.log")))
            .status()
            .unwrap();
        assert!(
            status.success(),
            "submit.sh with JOB={job}: see slurm-{job}.log"
        );
    }
    let (slurm_hist, _) = load(&dir.join("slurm-hist/hist")).unwrap();
    assert_eq!(slurm_hist.fire_count, one.fire_count);
    assert_eq!(slurm_hist.bin_counts, one.bin_counts);
    assert_eq!(slurm_hist.top_rows, one.top_rows);
    let slurm_eval = read(dir.join("slurm-eval/eval.json"));
    assert_eq!(
        slurm_eval["stats"]["fire_counts"],
        merged_eval["stats"]["fire_counts"]
    );
    assert_eq!(slurm_eval["fvu"], merged_eval["fvu"]);
    for file in ["categories.json", "categories.safetensors"] {
        let (a, b) = (
            std::fs::read(dir.join("cat-one").join(file)).unwrap(),
            std::fs::read(dir.join("slurm-categories/categories").join(file)).unwrap(),
        );
        assert!(
            a == b,
            "{file}: the Slurm recipe's categories differ from one pass"
        );
    }
    let slurm_codes = dir.join("slurm-encode/codes");
    assert_eq!(
        entries(&read(slurm_codes.join("encode.json")), &s(&slurm_codes)),
        entries(&enc_one, &s(&dir.join("codes-one")))
    );

    // Bad input: parts that do not fit together are refused, naming the file; nothing written.
    let refused = dir.join("refused");
    let p = |i: usize| part_files[i].clone();
    sae_fails(&merge_args(&[p(0), p(1)]), &["parts 2/3 are missing"]);
    sae_fails(
        &merge_args(&[p(0), p(1), p(1), p(2)]),
        &[&s(&p(1)), "are both part 1/3"],
    );
    let two = dir.join("eval-0-of-2.json");
    std::fs::write(
        &two,
        sae_ok(&with(&eval_base, &["--json", "--part", "0/2"])),
    )
    .unwrap();
    sae_fails(
        &merge_args(&[p(0), two.clone()]),
        &[&s(&two), "split into 2"],
    );
    let other = dir.join("eval-other.json");
    let mut other_args = eval_base.clone();
    other_args[1] = s(&other_sae);
    std::fs::write(
        &other,
        sae_ok(&with(&other_args, &["--json", "--part", "2/3"])),
    )
    .unwrap();
    sae_fails(
        &merge_args(&[p(0), p(1), other.clone()]),
        &[&s(&other), "one SAE"],
    );
    let plain = dir.join("eval-plain.json");
    std::fs::write(&plain, sae_ok(&with(&eval_base, &["--json"]))).unwrap();
    sae_fails(&merge_args(&[p(0), plain.clone()]), &[&s(&plain), "part"]);

    sae_ok(&with(
        &hist_base(&dir.join("hist-wide"), &sae, "0.01,9"),
        &["--part", "2/3"],
    ));
    sae_fails(
        &hist_merge(
            &[hist_part(0), hist_part(1), dir.join("hist-wide")],
            &refused,
        ),
        &["hist-wide", "bin range"],
    );
    sae_ok(&with(
        &hist_base(&dir.join("hist-other"), &other_sae, "0.01,5"),
        &["--part", "2/3"],
    ));
    sae_fails(
        &hist_merge(
            &[hist_part(0), hist_part(1), dir.join("hist-other")],
            &refused,
        ),
        &["hist-other", "one SAE"],
    );
    sae_fails(
        &hist_merge(&[hist_part(0), hist_part(2)], &refused),
        &["parts 1/3 are missing"],
    );
    sae_fails(
        &hist_merge(&[hist_part(0), dir.join("hist-one")], &refused),
        &["hist-one", "not a part"],
    );
    sae_fails(
        &[
            "encode",
            "merge",
            &s(&dir.join("codes-parts/encode.part-0-of-3.json")),
            "--out",
            &s(&refused),
        ],
        &["parts 1/3, 2/3 are missing"],
    );
    assert!(!refused.exists(), "a refused merge wrote {}", s(&refused));

    // --part itself.
    for (bad, expect) in [
        ("3/3", "I must be below N"),
        ("0/0", "N must be at least 1"),
        ("0/7", "only 6 shards"),
        ("1", "expected I/N"),
    ] {
        sae_fails(&with(&eval_base, &["--part", bad]), &[expect]);
    }
    sae_fails(
        &[
            "hist",
            &s(&sae),
            &s(&shard_dir),
            "--out",
            &s(&refused),
            "--part",
            "0/2",
        ],
        &["--part needs --range"],
    );
    assert!(!refused.exists());
    let _ = std::fs::remove_dir_all(&dir);
}
