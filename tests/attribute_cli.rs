//! `sae attribute` end to end: on a planted mechanism (`sae synth --components`) it finds the
//! planted writer, head and upstream features and nothing in a control group; of 100 random
//! groups at most 2 show a significant writer (the calibration); every kind of bad input is
//! one error line and leaves no attribution.json.

mod common;

use std::path::{Path, PathBuf};

use common::{random_sae, random_vec, rng, sae_fails, sae_ok, temp_dir};
use rand::seq::SliceRandom;
use sae_wgpu::io::{write_safetensors, TensorOut};
use sae_wgpu::sae::formats::save_sparsify;
use sae_wgpu::sae::params::Activation;
use serde_json::Value;

const PLANTED: [usize; 5] = [0, 1, 2, 3, 4];
const HEAD_GROUP: [usize; 5] = [5, 6, 7, 8, 9];

fn list(members: &[usize]) -> String {
    members
        .iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

fn significant(writers: &Value) -> Vec<String> {
    writers
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["significant"].as_bool().unwrap())
        .map(|w| {
            w["name"]
                .as_str()
                .or(w["feature"].as_u64().map(|_| "upstream"))
                .unwrap()
                .to_string()
        })
        .collect()
}

/// The writer with the largest share (bias aside).
fn first(writers: &Value) -> String {
    writers
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["name"] != "bias")
        .max_by(|a, b| {
            a["share"]
                .as_f64()
                .unwrap()
                .total_cmp(&b["share"].as_f64().unwrap())
        })
        .unwrap()["name"]
        .as_str()
        .unwrap()
        .to_string()
}

/// `sae synth --components` into `out`: (d_in, latents, rows), 3 latents firing per row.
fn synth_components(out: &Path, (d, latents, rows): (usize, usize, usize), extra: &[&str]) {
    let mut args: Vec<String> = ["synth", "--components", "--mean-active", "3", "--out"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    args.push(out.display().to_string());
    for (flag, v) in [
        ("--d-in", d),
        ("--n-features", latents),
        ("--rows-per-shard", rows),
    ] {
        args.extend([flag.to_string(), v.to_string()]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    sae_ok(&args);
}

fn anything_significant(g: &Value) -> bool {
    !significant(&g["components"]).is_empty()
        || !significant(&g["heads"]).is_empty()
        || g["mechanism_similarity"]["significant"].as_bool().unwrap()
}

#[test]
fn planted_mechanism_is_found_and_random_groups_are_not() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("attribute-planted");
    let synth = dir.join("synth");
    synth_components(
        &synth,
        (64, 384, 8000),
        &["--noise-std", "0.02", "--seed", "3"],
    );
    // A control group and 100 calibration groups, none of the planted latents.
    let mut pool: Vec<usize> = (10..384).collect();
    let mut r = rng(2810);
    let mut groups: Vec<Vec<usize>> = (0..101)
        .map(|_| {
            pool.shuffle(&mut r);
            pool[..5].to_vec()
        })
        .collect();
    groups.insert(0, HEAD_GROUP.to_vec());
    groups.insert(0, PLANTED.to_vec());
    let out = dir.join("out");
    let mut args: Vec<String> = [
        "attribute",
        synth.join("sae").to_str().unwrap(),
        synth.join("cache").to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--model",
        synth.join("cache/writers.safetensors").to_str().unwrap(),
        "--transcoder",
        &format!(
            "blocks.1.hook_mlp_out={}",
            synth.join("transcoder").display()
        ),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for g in &groups {
        args.extend(["--members".to_string(), list(g)]);
    }
    sae_ok(&args);
    let json: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("attribution.json")).unwrap())
            .unwrap();
    assert!(
        json["completeness"]["max_rel_error"].as_f64().unwrap() <= 1e-5,
        "{}",
        json["completeness"]
    );
    let g = &json["groups"];

    let planted = &g[0];
    assert_eq!(first(&planted["components"]), "blocks.1.hook_mlp_out");
    assert_eq!(
        significant(&planted["components"]),
        vec!["blocks.1.hook_mlp_out"],
        "{}",
        planted["components"]
    );
    let upstream: Vec<u64> = planted["upstream"].as_array().unwrap()[..5]
        .iter()
        .map(|u| u["feature"].as_u64().unwrap())
        .collect();
    let mut sorted = upstream.clone();
    sorted.sort_unstable();
    assert_eq!(
        sorted,
        vec![0, 1, 2, 3, 4],
        "the planted upstream features lead: {upstream:?}"
    );
    assert!(
        planted["mechanism_similarity"]["significant"]
            .as_bool()
            .unwrap(),
        "{}",
        planted["mechanism_similarity"]
    );

    let head = &g[1];
    assert_eq!(first(&head["heads"]), "L2H1");
    assert!(
        significant(&head["heads"]).contains(&"L2H1".to_string()),
        "{}",
        head["heads"]
    );
    assert_eq!(
        significant(&head["components"]),
        vec!["blocks.2.hook_attn_out"]
    );
    assert!(head["mechanism_similarity"]["significant"]
        .as_bool()
        .unwrap());

    let control = &g[2];
    assert!(!anything_significant(control), "control group: {control}");
    assert!(
        significant(&control["upstream"]).is_empty(),
        "control upstream: {}",
        control["upstream"]
    );
    let flagged = g.as_array().unwrap()[3..]
        .iter()
        .filter(|g| anything_significant(g))
        .count();
    assert!(
        flagged <= 2,
        "{flagged} of 100 random groups show a significant writer"
    );
    for name in [
        "index.html",
        "attribution.safetensors",
        "group-members-1.html",
    ] {
        assert!(out.join(name).is_file(), "{name} written");
    }
}

/// A tiny cache that sums to its residual: one block of 2 heads of 4, d 8, 20 rows.
struct Tiny {
    names: Vec<String>,
    tensors: Vec<(String, Vec<usize>, Vec<f32>)>,
}

fn tiny_cache() -> Tiny {
    let (rows, d) = (20, 8);
    let mut r = rng(2820);
    let embed = random_vec(&mut r, rows * d, 1.0);
    let attn = random_vec(&mut r, rows * d, 1.0);
    let mlp = random_vec(&mut r, rows * d, 1.0);
    let resid: Vec<f32> = (0..rows * d).map(|e| embed[e] + attn[e] + mlp[e]).collect();
    let tensors = vec![
        ("hook_embed".to_string(), vec![rows, d], embed),
        ("blocks.0.hook_attn_out".to_string(), vec![rows, d], attn),
        ("blocks.0.hook_mlp_out".to_string(), vec![rows, d], mlp),
        (
            "blocks.0.ln2.hook_normalized".to_string(),
            vec![rows, d],
            random_vec(&mut r, rows * d, 1.0),
        ),
        ("blocks.0.hook_resid_post".to_string(), vec![rows, d], resid),
    ];
    Tiny {
        names: tensors.iter().map(|t| t.0.clone()).collect(),
        tensors,
    }
}

impl Tiny {
    fn write(&self, path: &Path) -> PathBuf {
        let t: Vec<TensorOut> = self
            .tensors
            .iter()
            .map(|(n, s, v)| TensorOut::f32(n, s, v))
            .collect();
        write_safetensors(path, &t, None).unwrap();
        path.to_path_buf()
    }

    fn tensor(&mut self, name: &str) -> &mut (String, Vec<usize>, Vec<f32>) {
        let at = self.names.iter().position(|n| n == name).unwrap();
        &mut self.tensors[at]
    }
}

#[test]
fn bad_inputs_are_one_line_and_write_nothing() {
    let dir = temp_dir("attribute-errors");
    let good = tiny_cache().write(&dir.join("components_0000.safetensors"));
    let sae8 = dir.join("sae8");
    save_sparsify(&sae8, &random_sae(2821, 8, 12, Activation::TopK { k: 3 })).unwrap();
    let sae9 = dir.join("sae9");
    save_sparsify(&sae9, &random_sae(2822, 9, 12, Activation::TopK { k: 3 })).unwrap();
    let tc9 = dir.join("tc9");
    let mut r = rng(2823);
    let tc = random_sae(2824, 9, 6, Activation::TopK { k: 2 }).into_transcoder(
        9,
        random_vec(&mut r, 6 * 9, 0.5),
        false,
    );
    save_sparsify(&tc9, &tc).unwrap();
    let out = dir.join("out");
    let run = |sae: &Path, cache: &Path, extra: &[&str], expect: &[&str]| {
        let mut args = vec![
            "attribute",
            sae.to_str().unwrap(),
            cache.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ];
        args.extend_from_slice(extra);
        sae_fails(&args, expect);
        assert!(
            !out.join("attribution.json").exists(),
            "no attribution.json after {extra:?}"
        );
    };
    let members = ["--members", "0,1,2"];
    run(
        &sae9,
        &good,
        &members,
        &[
            "blocks.0.hook_resid_post",
            "components_0000.safetensors",
            "9",
        ],
    );
    run(
        &sae8,
        &good,
        &["--members", "0,12"],
        &["latent 12 is out of range"],
    );
    let t = format!("blocks.0.hook_mlp_out={}", tc9.display());
    run(
        &sae8,
        &good,
        &["--members", "0,1", "--transcoder", &t],
        &["tc9", "writes 9 values"],
    );
    let t = format!("blocks.3.hook_mlp_out={}", tc9.display());
    run(
        &sae8,
        &good,
        &["--members", "0,1", "--transcoder", &t],
        &["blocks.3.hook_mlp_out", "not one of the cache's"],
    );
    let model = dir.join("writers.safetensors");
    std::fs::write(dir.join("config.json"), r#"{"hidden_size":8,"vocab_size":4,"num_attention_heads":2,"head_dim":4,"intermediate_size":8}"#).unwrap();
    let w = vec![
        TensorOut::f32("model.embed_tokens.weight", &[4, 8], &[0.1; 32]),
        TensorOut::f32("model.norm.weight", &[8], &[1.0; 8]),
        TensorOut::f32(
            "model.layers.0.self_attn.o_proj.weight",
            &[8, 8],
            &[0.1; 64],
        ),
        TensorOut::f32("model.layers.0.mlp.down_proj.weight", &[8, 8], &[0.1; 64]),
    ];
    write_safetensors(&model, &w, None).unwrap();
    run(
        &sae8,
        &good,
        &["--members", "0,1", "--model", model.to_str().unwrap()],
        &["blocks.0.attn.hook_z", "--heads"],
    );

    let mut short = tiny_cache();
    let t = short.tensor("blocks.0.hook_mlp_out");
    t.1[0] = 19;
    t.2.truncate(19 * 8);
    let short = short.write(&dir.join("short.safetensors"));
    run(
        &sae8,
        &short,
        &members,
        &["short.safetensors", "blocks.0.hook_mlp_out", "19"],
    );

    let mut broken = tiny_cache();
    broken.tensor("blocks.0.hook_attn_out").2[5] += 1.0;
    let broken = broken.write(&dir.join("broken.safetensors"));
    run(
        &sae8,
        &broken,
        &members,
        &[
            "broken.safetensors",
            "do not sum to 'blocks.0.hook_resid_post'",
        ],
    );

    let mut missing = tiny_cache();
    missing.tensors.retain(|t| t.0 != "hook_embed");
    let missing = missing.write(&dir.join("missing.safetensors"));
    run(
        &sae8,
        &missing,
        &members,
        &["missing.safetensors", "no tensor 'hook_embed'"],
    );
    run(&sae8, &good, &[], &["no groups"]);
    run(
        &sae8,
        &good,
        &["--members", "0,3,0"],
        &["latent 0 appears twice"],
    );
    let t = format!("blocks.0.hook_mlp_out={}", sae8.display());
    run(
        &sae8,
        &good,
        &["--members", "0,1", "--transcoder", &t],
        &["sae8", "not a transcoder"],
    );
    let tc8 = dir.join("tc8");
    let tc = random_sae(2825, 8, 6, Activation::TopK { k: 2 }).into_transcoder(
        8,
        random_vec(&mut r, 6 * 8, 0.5),
        false,
    );
    save_sparsify(&tc8, &tc).unwrap();
    run(
        &tc8,
        &good,
        &members,
        &["tc8", "a transcoder reads another activation"],
    );
    let t = format!("blocks.0.hook_mlp_out={}", tc9.display());
    run(
        &sae8,
        &good,
        &[
            "--members",
            "0,1",
            "--transcoder",
            &t,
            "--null-draws",
            "300",
        ],
        &["--null-draws 300", "use at least 400"],
    );
    // And the good cache works.
    sae_ok(&[
        "attribute",
        sae8.to_str().unwrap(),
        good.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--quiet",
        "--members",
        "0,1,2",
        "--null-draws",
        "200",
    ]);
    assert!(out.join("attribution.json").is_file());
}

/// The f64 values of every number in a JSON value, in document order.
fn numbers(v: &Value, out: &mut Vec<f64>) {
    match v {
        Value::Number(n) => out.push(n.as_f64().unwrap()),
        Value::Array(a) => a.iter().for_each(|x| numbers(x, out)),
        Value::Object(o) => o.values().for_each(|x| numbers(x, out)),
        _ => {}
    }
}

/// `sae attribute merge PARTS… --quiet --out OUT` and the group flags.
fn merge_args(parts: &[&Path], out: &Path, group_flags: &[&str]) -> Vec<String> {
    let mut args = vec!["attribute".to_string(), "merge".to_string()];
    args.extend(parts.iter().map(|p| p.display().to_string()));
    args.extend([
        "--quiet".to_string(),
        "--out".to_string(),
        out.display().to_string(),
    ]);
    args.extend(group_flags.iter().map(|s| s.to_string()));
    args
}

/// The "Top heads" table of a group page.
fn heads_table(page: &Path) -> String {
    let html = std::fs::read_to_string(page).unwrap();
    let start = html.find("Top heads").expect("a heads table");
    let end = start + html[start..].find("</table>").unwrap();
    html[start..end].to_string()
}

#[test]
fn parts_merge_into_one_pass() {
    if common::gpu().is_none() {
        return;
    }
    let dir = temp_dir("attribute-parts");
    let synth = dir.join("synth");
    synth_components(&synth, (32, 64, 900), &["--seed", "5"]);
    let cache = synth.join("cache");
    // A second file: the same toy model (the seed makes it), 700 rows, which repeat the first
    // 700 of the 900: a cache of two files all the same.
    let other = dir.join("other");
    synth_components(&other, (32, 64, 700), &["--seed", "5"]);
    std::fs::copy(
        other.join("cache/components_0000.safetensors"),
        cache.join("components_0001.safetensors"),
    )
    .unwrap();
    let tc = format!(
        "blocks.1.hook_mlp_out={}",
        synth.join("transcoder").display()
    );
    let model = synth.join("cache/writers.safetensors");
    let sae = synth.join("sae");
    let common_args = |out: &Path| -> Vec<String> {
        [
            "attribute",
            sae.to_str().unwrap(),
            cache.to_str().unwrap(),
            "--quiet",
            "--model",
            model.to_str().unwrap(),
            "--transcoder",
            &tc,
            "--out",
            out.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let groups = [
        "--members",
        "0,1,2,3,4",
        "--members",
        "5,6,7,8,9",
        "--random-groups",
        "3",
    ];
    let whole = dir.join("whole");
    let mut args = common_args(&whole);
    args.extend(groups.iter().map(|s| s.to_string()));
    sae_ok(&args);
    // The parts know the requested groups (not the random ones): their pages get each
    // head's tokens into their members.
    for i in 0..2 {
        let mut args = common_args(&dir.join(format!("part{i}")));
        args.extend(["--part".to_string(), format!("{i}/2")]);
        args.extend(groups[..4].iter().map(|s| s.to_string()));
        sae_ok(&args);
    }
    let merged = dir.join("merged");
    let (p0, p1) = (dir.join("part0"), dir.join("part1"));
    sae_ok(&merge_args(&[&p0, &p1], &merged, &groups));
    let read = |d: &Path| -> Value {
        serde_json::from_str(&std::fs::read_to_string(d.join("attribution.json")).unwrap()).unwrap()
    };
    let (a, b) = (read(&whole), read(&merged));
    for key in ["completeness", "groups", "components", "heads", "rows"] {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        numbers(&a[key], &mut x);
        numbers(&b[key], &mut y);
        assert_eq!(x.len(), y.len(), "{key}");
        for (u, v) in x.iter().zip(&y) {
            assert!(
                (u - v).abs() <= 1e-9 * u.abs().max(1.0),
                "{key}: {u} against {v}"
            );
        }
    }
    let flags = |v: &Value| v.to_string().matches("\"significant\":true").count();
    assert_eq!(flags(&a["groups"]), flags(&b["groups"]));
    assert!(flags(&a["groups"]) >= 2, "the planted groups are found");
    for page in ["group-members-1.html", "group-members-2.html"] {
        let (x, y) = (
            heads_table(&whole.join(page)),
            heads_table(&merged.join(page)),
        );
        assert!(x.contains("into these members"), "{page}: {x}");
        assert_eq!(x, y, "{page}: the merged heads table is one pass's");
    }
    // Merged for a group the parts did not know: each head's tokens over every latent, said.
    let other = dir.join("other-group");
    sae_ok(&merge_args(&[&p0, &p1], &other, &["--members", "0,1,2"]));
    let table = heads_table(&other.join("group-members-1.html"));
    assert!(table.contains("into every latent"), "{table}");
    // A part that summed no group (as one run without the group flags): the merge keeps the
    // groups every part summed, here none.
    let bare = dir.join("part1-bare");
    std::fs::create_dir_all(&bare).unwrap();
    for name in ["attribution-part.json", "attribution-part.safetensors"] {
        std::fs::copy(p1.join(name), bare.join(name)).unwrap();
    }
    let meta_path = bare.join("attribution-part.json");
    let mut meta: Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    meta["token_groups"] = serde_json::json!([]);
    std::fs::write(&meta_path, meta.to_string()).unwrap();
    let mixed = dir.join("mixed");
    sae_ok(&merge_args(&[&p0, &bare], &mixed, &groups));
    let table = heads_table(&mixed.join("group-members-1.html"));
    assert!(table.contains("into every latent"), "{table}");
    // A part missing is one line naming it.
    let alone = dir.join("alone");
    sae_fails(
        &[
            "attribute",
            "merge",
            p0.to_str().unwrap(),
            "--out",
            alone.to_str().unwrap(),
            "--members",
            "0,1",
        ],
        &["1/2 are missing"],
    );
    assert!(!alone.join("attribution.json").exists());
}
