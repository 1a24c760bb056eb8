//! Synthetic activations from a known dictionary, for checking that training recovers real
//! features: `n_features > d_in` unit directions in superposition, power-law firing
//! frequencies with a chosen mean number active per row, positive magnitudes, optional noise.
//! Optionally a planted circle: a circular variable (like the day of the week) written into a
//! 2-D plane at p evenly spaced angles, the structure `sae categories` must recover. Each value
//! may also carry a small direction of its own outside the plane (as "Monday" carries more
//! than its place in the week); without one, the p points are not identifiable by a TopK SAE,
//! which covers the plane with any ring of 4–6 latents just as well.
//! Or a planted transcoder: the same sparse codes a write an input x = Σ sᵢaᵢuᵢ (+ noise), each
//! active feature with a random sign sᵢ, and a target y = Σ aᵢvᵢ + S·x (+ noise) with known input
//! directions U, output directions V and skip S, the structure a skip-transcoder must recover.
//! The target sees each feature's magnitude whatever its sign (as an MLP computing |uᵢ·x|), so
//! the sparse part is uncorrelated with x: y's best linear prediction from x is exactly S·x (plus
//! a constant), which makes S identifiable as the skip path, and each feature takes two latents
//! (encoder directions ±uᵢ, both decoding to vᵢ). Were the signs fixed, any linear map on the
//! features' span could move between W_skip and the decoder.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

use crate::io::{write_json_atomic, write_safetensors, TensorOut};

#[derive(Clone, Debug, Serialize)]
pub struct SynthConfig {
    pub d_in: usize,
    pub n_features: usize,
    pub rows_per_shard: usize,
    pub shards: usize,
    /// Expected number of active features per row.
    pub mean_active: f64,
    /// Firing probability of feature i ∝ (i + 1)^(−exponent).
    pub power_law_exponent: f64,
    /// Standard deviation of isotropic Gaussian noise added to every row.
    pub noise_std: f64,
    /// An active feature's magnitude is uniform in [min, max).
    pub magnitudes: (f32, f32),
    pub seed: u64,
    /// A planted circle among the ordinary features, if any.
    pub circle: Option<PlantedCircle>,
    /// A planted transcoder: targets beside the inputs, if any.
    pub transcoder: Option<PlantedTranscoder>,
}

/// Targets y = Σ aᵢvᵢ + S·x + noise of width `d_out`, written beside the inputs (which then
/// carry each feature with a random sign) as the tensor `target`: V's rows are random unit
/// directions, S a random matrix whose entries have spread `skip_scale`/√d_in (so ‖S·x‖ ≈
/// skip_scale·‖x‖).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PlantedTranscoder {
    pub d_out: usize,
    pub skip_scale: f64,
    /// Standard deviation of the target's own noise.
    pub target_noise_std: f64,
}

/// The tensor a planted transcoder's targets are written as.
pub const TARGET_TENSOR: &str = "target";

/// A circular variable with `points` values, represented at angles 2πj/points in a random
/// plane: the points are features `n_features + j` of the true dictionary,
/// √(1 − identity²)·(cos θⱼ·u + sin θⱼ·v) + identity·wⱼ with wⱼ a random unit direction
/// orthogonal to the plane.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct PlantedCircle {
    pub points: usize,
    /// Chance that a row carries the variable.
    pub probability: f64,
    /// Standard deviation of the angle around its point, as a fraction of the spacing 2π/points.
    pub jitter: f64,
    /// Weight in [0, 1) of each point's own direction outside the plane.
    pub identity: f64,
}

impl Default for PlantedCircle {
    fn default() -> Self {
        PlantedCircle {
            points: 7,
            probability: 0.3,
            jitter: 0.05,
            identity: 0.0,
        }
    }
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            d_in: 64,
            n_features: 256,
            rows_per_shard: 32768,
            shards: 2,
            mean_active: 5.0,
            power_law_exponent: 0.5,
            noise_std: 0.0,
            magnitudes: (0.5, 1.5),
            seed: 0,
            circle: None,
            transcoder: None,
        }
    }
}

/// Where [`write_synthetic`] puts the generating dictionary, relative to its output folder.
pub const TRUE_DICTIONARY: &str = "truth/true_dictionary.safetensors";

/// The generating dictionary, as saved in `truth/true_dictionary.safetensors`.
pub struct TrueDictionary {
    /// [n_features, d_in], unit rows.
    pub features: Vec<f32>,
    /// [n_features] firing probability.
    pub probabilities: Vec<f32>,
    /// The planted circle's orthonormal plane [2, d_in] (u then v), if any.
    pub circle_plane: Option<Vec<f32>>,
    /// Each circle point's own unit direction outside the plane [points, d_in] (empty when
    /// the circle has no identity component).
    pub circle_identities: Vec<f32>,
}

/// The number of features in the true dictionary: the ordinary ones, then the circle's points.
pub fn true_feature_count(config: &SynthConfig) -> usize {
    config.n_features + config.circle.map_or(0, |c| c.points)
}

pub fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    // Box–Muller: two uniforms to one standard normal.
    let u1: f64 = rng.random_range(f64::EPSILON..1.0);
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

pub fn make_dictionary(config: &SynthConfig, rng: &mut ChaCha8Rng) -> TrueDictionary {
    let (n, d) = (config.n_features, config.d_in);
    let mut features = vec![0.0f32; n * d];
    for row in features.chunks_exact_mut(d) {
        let v: Vec<f64> = (0..d).map(|_| gaussian(rng)).collect();
        let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
        for (o, x) in row.iter_mut().zip(v) {
            *o = (x / norm) as f32;
        }
    }
    let weights: Vec<f64> = (0..n)
        .map(|i| ((i + 1) as f64).powf(-config.power_law_exponent))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut probabilities: Vec<f32> = weights
        .iter()
        .map(|w| (w / total * config.mean_active).min(1.0) as f32)
        .collect();
    // Drawn after the ordinary features, so data without a circle is unchanged by it.
    let mut circle_identities = Vec::new();
    let circle_plane = config.circle.map(|circle| {
        let u = random_unit(d, rng);
        let mut v = random_unit(d, rng);
        orthogonalise(&mut v, &[&u]);
        // Drawn only when asked for, so circles without identities are unchanged by them.
        if circle.identity > 0.0 {
            for _ in 0..circle.points {
                let mut w = random_unit(d, rng);
                orthogonalise(&mut w, &[&u, &v]);
                circle_identities.extend(w.iter().map(|&x| x as f32));
            }
        }
        let in_plane = (1.0 - circle.identity * circle.identity).sqrt();
        for j in 0..circle.points {
            let angle = circle_angle(j as f64, circle.points);
            let point = u
                .iter()
                .zip(&v)
                .map(|(a, b)| in_plane * (angle.cos() * a + angle.sin() * b));
            match circle_identities.get(j * d..(j + 1) * d) {
                Some(w) => features.extend(
                    point
                        .zip(w)
                        .map(|(p, &x)| (p + circle.identity * f64::from(x)) as f32),
                ),
                None => features.extend(point.map(|p| p as f32)),
            }
            probabilities.push((circle.probability / circle.points as f64) as f32);
        }
        u.iter().chain(&v).map(|&x| x as f32).collect()
    });
    TrueDictionary {
        features,
        probabilities,
        circle_plane,
        circle_identities,
    }
}

/// A planted transcoder's maps: V [n_features, d_out] unit rows and S [d_out, d_in].
struct PlantedMaps {
    config: PlantedTranscoder,
    v: Vec<f32>,
    s: Vec<f32>,
}

impl PlantedMaps {
    /// Drawn after the dictionary, so inputs are the same with or without targets.
    fn new(config: PlantedTranscoder, n: usize, d_in: usize, rng: &mut ChaCha8Rng) -> Self {
        let d_out = config.d_out;
        let v = (0..n)
            .flat_map(|_| random_unit(d_out, rng))
            .map(|x| x as f32)
            .collect();
        let spread = config.skip_scale / (d_in as f64).sqrt();
        let s = (0..d_out * d_in)
            .map(|_| (gaussian(rng) * spread) as f32)
            .collect();
        PlantedMaps { config, v, s }
    }

    /// y += S·x, then the target's noise.
    fn finish_row(&self, x: &[f32], y: &mut [f32], rng: &mut ChaCha8Rng) {
        let d_in = x.len();
        for (c, out) in y.iter_mut().enumerate() {
            let row = &self.s[c * d_in..(c + 1) * d_in];
            *out += row.iter().zip(x).map(|(a, b)| a * b).sum::<f32>();
            if self.config.target_noise_std > 0.0 {
                *out += (gaussian(rng) * self.config.target_noise_std) as f32;
            }
        }
    }
}

/// Removes from `v` its components along the orthonormal `basis`, then rescales it to unit norm.
fn orthogonalise(v: &mut [f64], basis: &[&[f64]]) {
    for b in basis {
        let dot: f64 = v.iter().zip(b.iter()).map(|(x, y)| x * y).sum();
        v.iter_mut().zip(b.iter()).for_each(|(x, y)| *x -= dot * y);
    }
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.iter_mut().for_each(|x| *x /= norm);
}

fn random_unit(d: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let v: Vec<f64> = (0..d).map(|_| gaussian(rng)).collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    v.into_iter().map(|x| x / norm).collect()
}

/// The angle of (fractional) point `position` of a circle of `points` points.
fn circle_angle(position: f64, points: usize) -> f64 {
    2.0 * std::f64::consts::PI * position / points as f64
}

/// Writes `shards` shards (`activations` f32, `tokens` = index of the row's strongest feature)
/// into `out`, and the generating dictionary into `out/truth/true_dictionary.safetensors` (a
/// subfolder, so `sae train OUT` reads only the shards). Returns the shard paths.
pub fn write_synthetic(config: &SynthConfig, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(out)?;
    let mut rng = ChaCha8Rng::seed_from_u64(config.seed);
    let dict = make_dictionary(config, &mut rng);
    let (n, d) = (config.n_features, config.d_in);
    let maps = config
        .transcoder
        .map(|t| PlantedMaps::new(t, n, d, &mut rng));
    let d_out = config.transcoder.map_or(0, |t| t.d_out);
    let mut paths = Vec::new();
    for s in 0..config.shards {
        let rows = config.rows_per_shard;
        let mut x = vec![0.0f32; rows * d];
        let mut y = vec![0.0f32; rows * d_out];
        let mut tokens = vec![0i32; rows];
        for r in 0..rows {
            let row = &mut x[r * d..(r + 1) * d];
            let target = &mut y[r * d_out..(r + 1) * d_out];
            let mut strongest = (-1i32, 0.0f32);
            for i in 0..n {
                if rng.random::<f32>() < dict.probabilities[i] {
                    let magnitude = rng.random_range(config.magnitudes.0..config.magnitudes.1);
                    // A planted transcoder's input carries the feature with a random sign.
                    let signed = match &maps {
                        Some(_) if rng.random::<bool>() => -magnitude,
                        _ => magnitude,
                    };
                    for (o, f) in row.iter_mut().zip(&dict.features[i * d..(i + 1) * d]) {
                        *o += signed * f;
                    }
                    if let Some(maps) = &maps {
                        let v = &maps.v[i * d_out..(i + 1) * d_out];
                        target
                            .iter_mut()
                            .zip(v)
                            .for_each(|(o, f)| *o += magnitude * f);
                    }
                    if magnitude > strongest.1 {
                        strongest = (i as i32, magnitude);
                    }
                }
            }
            if let (Some(circle), Some(plane)) = (config.circle, &dict.circle_plane) {
                if rng.random::<f64>() < circle.probability {
                    let point = rng.random_range(0..circle.points);
                    let position = point as f64 + circle.jitter * gaussian(&mut rng);
                    let angle = circle_angle(position, circle.points);
                    let magnitude = rng.random_range(config.magnitudes.0..config.magnitudes.1);
                    let in_plane = (1.0 - circle.identity * circle.identity).sqrt() as f32;
                    let (cos, sin) = (angle.cos() as f32, angle.sin() as f32);
                    let (u, v) = plane.split_at(d);
                    for ((o, a), b) in row.iter_mut().zip(u).zip(v) {
                        *o += magnitude * in_plane * (cos * a + sin * b);
                    }
                    if let Some(w) = dict.circle_identities.get(point * d..(point + 1) * d) {
                        let weight = magnitude * circle.identity as f32;
                        row.iter_mut().zip(w).for_each(|(o, x)| *o += weight * x);
                    }
                    if magnitude > strongest.1 {
                        strongest = ((n + point) as i32, magnitude);
                    }
                }
            }
            if config.noise_std > 0.0 {
                for o in row.iter_mut() {
                    *o += (gaussian(&mut rng) * config.noise_std) as f32;
                }
            }
            if let Some(maps) = &maps {
                maps.finish_row(row, target, &mut rng);
            }
            tokens[r] = strongest.0;
        }
        let path = out.join(format!("synth_{s:04}.safetensors"));
        let mut tensors = vec![
            TensorOut::f32("activations", &[rows, d], &x),
            TensorOut::i32("tokens", &[rows], &tokens),
        ];
        if maps.is_some() {
            tensors.push(TensorOut::f32(TARGET_TENSOR, &[rows, d_out], &y));
        }
        write_safetensors(&path, &tensors, None)?;
        paths.push(path);
    }
    std::fs::create_dir_all(out.join("truth"))?;
    let total = true_feature_count(config);
    let mut truth = vec![
        TensorOut::f32("features", &[total, d], &dict.features),
        TensorOut::f32("probabilities", &[total], &dict.probabilities),
    ];
    let circle_ids: Vec<i32> = (n..total).map(|i| i as i32).collect();
    if let Some(maps) = &maps {
        truth.push(TensorOut::f32("output_features", &[n, d_out], &maps.v));
        truth.push(TensorOut::f32("skip", &[d_out, d], &maps.s));
    }
    if let Some(plane) = &dict.circle_plane {
        truth.push(TensorOut::f32("circle_plane", &[2, d], plane));
        truth.push(TensorOut::i32(
            "circle_features",
            &[circle_ids.len()],
            &circle_ids,
        ));
    }
    write_safetensors(&out.join(TRUE_DICTIONARY), &truth, None)?;
    write_json_atomic(&out.join("synth.json"), config)?;
    Ok(paths)
}

/// Mean over true features of the best cosine similarity with any learned decoder row
/// (both given as unit-or-not rows of width `d`).
pub fn mmcs(true_features: &[f32], learned_rows: &[f32], d: usize) -> f64 {
    let unit = |v: &[f32]| -> Vec<f64> {
        let norm = v
            .iter()
            .map(|x| f64::from(*x).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-30);
        v.iter().map(|x| f64::from(*x) / norm).collect()
    };
    let learned: Vec<Vec<f64>> = learned_rows.chunks_exact(d).map(unit).collect();
    let truth: Vec<Vec<f64>> = true_features.chunks_exact(d).map(unit).collect();
    let total: f64 = truth
        .iter()
        .map(|t| {
            learned
                .iter()
                .map(|l| t.iter().zip(l).map(|(a, b)| a * b).sum::<f64>())
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .sum();
    total / truth.len() as f64
}
