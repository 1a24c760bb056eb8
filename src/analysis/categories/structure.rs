//! The structure of a category on data (Engels et al. 2024, section 4): stream the shards
//! through the SAE on the GPU; wherever a member fires, the category's reconstruction
//! x̂_C = Σ_{i∈C} f_i·W_dec,i (no bias); keep a uniform sample of those rows with their tokens;
//! PCA; for each consecutive pair of components the ε-mixture index M_ε and the separability
//! index S; a circle fit; and the cyclic order of members and tokens around it.
//!
//! x̂_C lies in the span of the members' decoder rows, so it is kept as coordinates in an
//! orthonormal basis Q of that span rather than in d_in: with G = W_C W_Cᵀ = U Λ Uᵀ,
//! Q = Λ^-1/2 Uᵀ W_C and Q·x̂_C = Λ^1/2 Uᵀ f_C, exact and m-dimensional.

use std::collections::HashMap;

use serde::Serialize;

use super::shape::{member_gram, symmetric_eigen};

/// Engels et al.'s ε for the mixture index.
pub const MIXTURE_EPSILON: f64 = 0.1;
/// Bins per axis of the histogram the separability index estimates mutual information from.
pub const SEPARABILITY_BINS: usize = 10;
/// Rotations the separability index is minimised over (angles in [0, π/2)).
pub const SEPARABILITY_ROTATIONS: usize = 100;
/// Principal components kept.
pub const COMPONENTS: usize = 5;
/// Tokens placed around the circle (the most frequent among the samples).
const CIRCLE_TOKENS: usize = 16;

/// One category's orthonormal basis and its sample of reconstructions.
#[derive(Clone, Debug)]
pub struct CategorySamples {
    pub members: Vec<usize>,
    /// Rank of the members' decoder span (basis rows kept).
    pub rank: usize,
    /// [rank, m]: member activations → coordinates of x̂_C in the basis (Λ^1/2 Uᵀ).
    to_basis: Vec<f64>,
    /// [rank, d_in]: orthonormal rows spanning the members' decoder rows.
    pub basis: Vec<f64>,
    /// [n, rank] coordinates of the kept reconstructions.
    pub coords: Vec<f32>,
    pub tokens: Vec<i32>,
    /// Rows where any member fired (the sample is uniform over them).
    pub rows_fired: u64,
    /// Sum of each member's activation where it fired, for its typical point.
    pub(super) act_sum: Vec<f64>,
    pub(super) act_count: Vec<u64>,
}

impl CategorySamples {
    /// The basis of `members`' rows of `w_dec` ([d_sae, d_in]).
    pub fn new(members: &[usize], w_dec: &[f32], d_in: usize) -> CategorySamples {
        let m = members.len();
        let row = |i: usize| &w_dec[members[i] * d_in..(members[i] + 1) * d_in];
        let gram = member_gram(w_dec, d_in, members);
        let (values, vectors) = symmetric_eigen(&gram, m);
        let top = values.first().copied().unwrap_or(0.0).max(0.0);
        let rank = values.iter().take_while(|&&v| v > 1e-9 * top).count();
        let mut to_basis = vec![0.0f64; rank * m];
        let mut basis = vec![0.0f64; rank * d_in];
        for c in 0..rank {
            let (sqrt, inv) = (values[c].sqrt(), 1.0 / values[c].sqrt());
            for i in 0..m {
                let u = vectors[i * m + c];
                to_basis[c * m + i] = sqrt * u;
                for (b, w) in basis[c * d_in..(c + 1) * d_in].iter_mut().zip(row(i)) {
                    *b += inv * u * f64::from(*w);
                }
            }
        }
        CategorySamples {
            members: members.to_vec(),
            rank,
            to_basis,
            basis,
            coords: Vec::new(),
            tokens: Vec::new(),
            rows_fired: 0,
            act_sum: vec![0.0; m],
            act_count: vec![0; m],
        }
    }

    /// The coordinates of sample `s`.
    fn point(&self, s: usize) -> &[f32] {
        &self.coords[s * self.rank..(s + 1) * self.rank]
    }

    /// Coordinates of Σ f_i W_i for member activations given as (member slot, f).
    pub(super) fn project(&self, fired: &[(usize, f32)]) -> Vec<f32> {
        let m = self.members.len();
        (0..self.rank)
            .map(|c| {
                fired
                    .iter()
                    .map(|&(slot, f)| self.to_basis[c * m + slot] * f64::from(f))
                    .sum::<f64>() as f32
            })
            .collect()
    }
}

/// Engels et al.'s indices for one pair of principal components.
#[derive(Clone, Debug, Serialize)]
pub struct PairIndices {
    /// The two components (0-based).
    pub components: [usize; 2],
    /// ε-mixture index: the largest fraction of points within ε·RMS of a line.
    pub mixture: f64,
    /// Separability index: mutual information (bits) of a 10×10 histogram, minimised over
    /// rotations.
    pub separability: f64,
}

/// A circle fitted to the samples in one plane of principal components.
#[derive(Clone, Debug, Serialize)]
pub struct SampleCircle {
    pub components: [usize; 2],
    pub centre: [f64; 2],
    pub radius: f64,
    /// RMS distance from the circle, relative to the radius.
    pub relative_residual: f64,
}

/// The structure of a category on data.
#[derive(Clone, Debug, Serialize)]
pub struct Structure {
    pub rows_fired: u64,
    pub samples: usize,
    /// Rank of the members' decoder span.
    pub subspace_rank: usize,
    /// Share of the reconstructions' variance along each principal component.
    pub pca_variance: Vec<f64>,
    pub pairs: Vec<PairIndices>,
    /// Mean over the consecutive pairs of (1 − M)·S.
    pub engels_score: f64,
    /// The pair with the highest (1 − M)·S times its share of the variance, where the circle
    /// is fitted.
    pub best_pair: [usize; 2],
    pub circle: SampleCircle,
    /// Members ordered by the angle of their typical point (mean activation × decoder row)
    /// around the circle's centre.
    pub cyclic_order: Vec<usize>,
    pub member_angles_deg: Vec<f64>,
    /// The most frequent tokens among the samples, ordered by their mean angle.
    pub token_order: Vec<i32>,
    pub token_angles_deg: Vec<f64>,
    /// Each sample's coordinates on the best pair and its token, for plots.
    #[serde(skip)]
    pub points: Vec<([f64; 2], i32)>,
    /// The principal axes in d_in ([components, d_in]), for the logit lens.
    #[serde(skip)]
    pub axes: Vec<Vec<f64>>,
}

/// PCA of the kept reconstructions and Engels' indices; `None` with fewer than 3 samples.
pub fn analyse(cat: &CategorySamples, d_in: usize) -> Option<Structure> {
    let (n, r) = (cat.tokens.len(), cat.rank);
    if n < 3 || r < 2 {
        return None;
    }
    let pca = Pca::of(cat);
    let components = pca.variance.len();
    let projected: Vec<Vec<f64>> = (0..n)
        .map(|s| {
            let p: Vec<f64> = cat.point(s).iter().map(|&v| f64::from(v)).collect();
            pca.project(&p)
        })
        .collect();
    let pairs: Vec<PairIndices> = (0..components - 1)
        .map(|c| {
            let xy: Vec<[f64; 2]> = projected.iter().map(|p| [p[c], p[c + 1]]).collect();
            PairIndices {
                components: [c, c + 1],
                mixture: mixture_index(&xy, MIXTURE_EPSILON),
                separability: separability_index(&xy),
            }
        })
        .collect();
    let irreducibility = |p: &PairIndices| (1.0 - p.mixture) * p.separability;
    let engels_score = pairs.iter().map(irreducibility).sum::<f64>() / pairs.len() as f64;
    // Weighted by the pair's share of the variance: an irreducible pattern along minor
    // components is not the category's shape (on a trained SAE's planted circle, PCs 2–3
    // scored (1 − M)·S 0.52 against the circle plane's 0.50, with 45 % of the variance
    // against 83 %).
    let weighted = |p: &PairIndices| {
        irreducibility(p) * (pca.variance[p.components[0]] + pca.variance[p.components[1]])
    };
    let best = pairs
        .iter()
        .max_by(|a, b| weighted(a).total_cmp(&weighted(b)))
        .map_or([0, 1], |p| p.components);
    let points: Vec<([f64; 2], i32)> = projected
        .iter()
        .zip(&cat.tokens)
        .map(|(p, &t)| ([p[best[0]], p[best[1]]], t))
        .collect();
    let xy: Vec<[f64; 2]> = points.iter().map(|(p, _)| *p).collect();
    let circle = fit_circle(&xy, best);
    let members = member_angles(cat, &pca, best, &circle);
    let tokens = token_angles(&points, &circle);
    Some(Structure {
        rows_fired: cat.rows_fired,
        samples: n,
        subspace_rank: r,
        axes: pca.axes(cat, d_in),
        pca_variance: pca.variance,
        pairs,
        engels_score,
        best_pair: best,
        circle,
        cyclic_order: members.iter().map(|&(_, f)| f).collect(),
        member_angles_deg: members.iter().map(|&(a, _)| a).collect(),
        token_order: tokens.iter().map(|&(_, t)| t).collect(),
        token_angles_deg: tokens.iter().map(|&(a, _)| a).collect(),
        points,
    })
}

/// The principal components of a category's sampled coordinates.
struct Pca {
    /// The rank of the coordinates (the category's basis).
    rank: usize,
    mean: Vec<f64>,
    /// [rank, rank] eigenvectors of the covariance, by column, largest first.
    vectors: Vec<f64>,
    /// Each kept component's share of the variance.
    variance: Vec<f64>,
}

impl Pca {
    fn of(cat: &CategorySamples) -> Pca {
        let (n, r) = (cat.tokens.len(), cat.rank);
        let mut mean = vec![0.0f64; r];
        for s in 0..n {
            for (m, &v) in mean.iter_mut().zip(cat.point(s)) {
                *m += f64::from(v) / n as f64;
            }
        }
        let mut cov = vec![0.0f64; r * r];
        for s in 0..n {
            let p = cat.point(s);
            for a in 0..r {
                let da = f64::from(p[a]) - mean[a];
                for b in 0..=a {
                    cov[a * r + b] += da * (f64::from(p[b]) - mean[b]) / n as f64;
                }
            }
        }
        for a in 0..r {
            for b in 0..a {
                cov[b * r + a] = cov[a * r + b];
            }
        }
        let (values, vectors) = symmetric_eigen(&cov, r);
        let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
        let variance = values[..COMPONENTS.min(r)]
            .iter()
            .map(|v| if total > 0.0 { v.max(0.0) / total } else { 0.0 })
            .collect();
        Pca {
            rank: r,
            mean,
            vectors,
            variance,
        }
    }

    /// A point (coordinates in the basis) on each kept component, centred.
    fn project(&self, p: &[f64]) -> Vec<f64> {
        let r = self.rank;
        (0..self.variance.len())
            .map(|c| {
                (0..r)
                    .map(|a| (p[a] - self.mean[a]) * self.vectors[a * r + c])
                    .sum()
            })
            .collect()
    }

    /// The components as directions in the input space, [components][d_in].
    fn axes(&self, cat: &CategorySamples, d_in: usize) -> Vec<Vec<f64>> {
        let r = self.rank;
        (0..self.variance.len())
            .map(|c| {
                let mut axis = vec![0.0f64; d_in];
                for a in 0..r {
                    let w = self.vectors[a * r + c];
                    for (x, q) in axis.iter_mut().zip(&cat.basis[a * d_in..(a + 1) * d_in]) {
                        *x += w * q;
                    }
                }
                axis
            })
            .collect()
    }
}

/// A point's angle around the circle, in degrees in [0, 360).
fn circle_angle(circle: &SampleCircle, p: [f64; 2]) -> f64 {
    (p[1] - circle.centre[1])
        .atan2(p[0] - circle.centre[0])
        .to_degrees()
        .rem_euclid(360.0)
}

/// Each member's angle at its typical point (its mean activation times its decoder row,
/// alone), in cyclic order: (angle, feature).
fn member_angles(
    cat: &CategorySamples,
    pca: &Pca,
    best: [usize; 2],
    circle: &SampleCircle,
) -> Vec<(f64, usize)> {
    let (m, r) = (cat.members.len(), cat.rank);
    let mut members: Vec<(f64, usize)> = (0..m)
        .map(|s| {
            let f = if cat.act_count[s] > 0 {
                cat.act_sum[s] / cat.act_count[s] as f64
            } else {
                1.0
            };
            let z: Vec<f64> = (0..r).map(|c| cat.to_basis[c * m + s] * f).collect();
            let p = pca.project(&z);
            (
                circle_angle(circle, [p[best[0]], p[best[1]]]),
                cat.members[s],
            )
        })
        .collect();
    members.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    members
}

/// The most frequent tokens at their circular-mean angle, in cyclic order: (angle, token).
fn token_angles(points: &[([f64; 2], i32)], circle: &SampleCircle) -> Vec<(f64, i32)> {
    let mut by_token: HashMap<i32, (usize, f64, f64)> = HashMap::new();
    for (p, t) in points {
        let a = circle_angle(circle, *p).to_radians();
        let e = by_token.entry(*t).or_insert((0, 0.0, 0.0));
        e.0 += 1;
        e.1 += a.cos();
        e.2 += a.sin();
    }
    let mut frequent: Vec<(i32, (usize, f64, f64))> = by_token.into_iter().collect();
    frequent.sort_by(|a, b| b.1 .0.cmp(&a.1 .0).then(a.0.cmp(&b.0)));
    frequent.truncate(CIRCLE_TOKENS);
    let mut tokens: Vec<(f64, i32)> = frequent
        .iter()
        .map(|(t, (_, c, s))| (s.atan2(*c).to_degrees().rem_euclid(360.0), *t))
        .collect();
    tokens.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    tokens
}

/// Engels et al.'s ε-mixture index of 2-D points: max over lines (direction v, offset c) of
/// the fraction of points with |v·x + c| < ε·RMS(v·x + c). High when much of the mass sits on
/// a lower-dimensional piece (a mixture of 1-D features); a circle scores low. Directions on a
/// 1° grid; for each, every offset that centres the band on a point is tried (sorted
/// projections and prefix sums make each O(log n)).
pub fn mixture_index(points: &[[f64; 2]], epsilon: f64) -> f64 {
    let n = points.len();
    if n == 0 {
        return 0.0;
    }
    let mut best = 0usize;
    let mut p = vec![0.0f64; n];
    for step in 0..180 {
        let theta = (step as f64).to_radians();
        let (c, s) = (theta.cos(), theta.sin());
        for (v, x) in p.iter_mut().zip(points) {
            *v = c * x[0] + s * x[1];
        }
        p.sort_by(f64::total_cmp);
        let mean = p.iter().sum::<f64>() / n as f64;
        let var = p.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n as f64;
        for &centre in &p {
            // Band |x − centre| < ε·RMS(x − centre), RMS² = var + (mean − centre)².
            let half = epsilon * (var + (mean - centre).powi(2)).sqrt();
            let lo = p.partition_point(|&v| v <= centre - half);
            let hi = p.partition_point(|&v| v < centre + half);
            best = best.max(hi.saturating_sub(lo));
        }
    }
    best as f64 / n as f64
}

/// Engels et al.'s separability index of 2-D points: the mutual information (bits) between the
/// two coordinates, estimated from a 10×10 histogram, minimised over rotations of the plane.
/// Near 0 when the points factor into independent 1-D parts; a circle keeps it high.
pub fn separability_index(points: &[[f64; 2]]) -> f64 {
    if points.len() < 2 {
        return 0.0;
    }
    let bins = SEPARABILITY_BINS;
    let mut lowest = f64::INFINITY;
    for step in 0..SEPARABILITY_ROTATIONS {
        let theta = std::f64::consts::FRAC_PI_2 * step as f64 / SEPARABILITY_ROTATIONS as f64;
        let (c, s) = (theta.cos(), theta.sin());
        let rotated: Vec<[f64; 2]> = points
            .iter()
            .map(|x| [c * x[0] - s * x[1], s * x[0] + c * x[1]])
            .collect();
        lowest = lowest.min(mutual_information(&rotated, bins));
    }
    lowest
}

fn mutual_information(points: &[[f64; 2]], bins: usize) -> f64 {
    let range = |a: usize| {
        points
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
                (lo.min(p[a]), hi.max(p[a]))
            })
    };
    let bin = |v: f64, (lo, hi): (f64, f64)| -> usize {
        if hi > lo {
            (((v - lo) / (hi - lo) * bins as f64) as usize).min(bins - 1)
        } else {
            0
        }
    };
    let (rx, ry) = (range(0), range(1));
    let mut joint = vec![0.0f64; bins * bins];
    for p in points {
        joint[bin(p[0], rx) * bins + bin(p[1], ry)] += 1.0;
    }
    let n = points.len() as f64;
    let px: Vec<f64> = (0..bins)
        .map(|i| joint[i * bins..(i + 1) * bins].iter().sum::<f64>() / n)
        .collect();
    let py: Vec<f64> = (0..bins)
        .map(|j| (0..bins).map(|i| joint[i * bins + j]).sum::<f64>() / n)
        .collect();
    let mut mi = 0.0;
    for i in 0..bins {
        for j in 0..bins {
            let pij = joint[i * bins + j] / n;
            if pij > 0.0 {
                mi += pij * (pij / (px[i] * py[j])).log2();
            }
        }
    }
    mi
}

/// Algebraic (Kåsa) circle fit: least squares of x² + y² + D·x + E·y + F = 0.
pub fn fit_circle(points: &[[f64; 2]], components: [usize; 2]) -> SampleCircle {
    // Normal equations of the 3-parameter linear problem, solved by Cramer's rule.
    let mut a = [[0.0f64; 3]; 3];
    let mut b = [0.0f64; 3];
    for p in points {
        let row = [p[0], p[1], 1.0];
        let z = -(p[0] * p[0] + p[1] * p[1]);
        for i in 0..3 {
            for j in 0..3 {
                a[i][j] += row[i] * row[j];
            }
            b[i] += row[i] * z;
        }
    }
    let det = |m: [[f64; 3]; 3]| {
        m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
            - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
            + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
    };
    let d = det(a);
    let solve = |col: usize| {
        let mut m = a;
        for i in 0..3 {
            m[i][col] = b[i];
        }
        det(m) / d
    };
    let (cx, cy, radius) = if d.abs() > 1e-300 {
        let (dd, ee, ff) = (solve(0), solve(1), solve(2));
        let (cx, cy) = (-dd / 2.0, -ee / 2.0);
        (cx, cy, (cx * cx + cy * cy - ff).max(0.0).sqrt())
    } else {
        (0.0, 0.0, 0.0)
    };
    let n = points.len().max(1) as f64;
    let rms = (points
        .iter()
        .map(|p| ((p[0] - cx).hypot(p[1] - cy) - radius).powi(2))
        .sum::<f64>()
        / n)
        .sqrt();
    SampleCircle {
        components,
        centre: [cx, cy],
        radius,
        relative_residual: if radius > 0.0 { rms / radius } else { 0.0 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn circle(n: usize) -> Vec<[f64; 2]> {
        (0..n)
            .map(|i| {
                let a = 2.0 * std::f64::consts::PI * i as f64 / n as f64;
                [3.0 + 2.0 * a.cos(), -1.0 + 2.0 * a.sin()]
            })
            .collect()
    }

    #[test]
    fn circle_fit_recovers_centre_and_radius() {
        let fit = fit_circle(&circle(50), [0, 1]);
        assert!((fit.centre[0] - 3.0).abs() < 1e-9 && (fit.centre[1] + 1.0).abs() < 1e-9);
        assert!((fit.radius - 2.0).abs() < 1e-9 && fit.relative_residual < 1e-9);
    }

    #[test]
    fn mixture_index_is_high_on_lines_and_low_on_a_circle() {
        // Points on two lines: all of one line's points lie in a band of width 0.
        let mut lines: Vec<[f64; 2]> = (0..100).map(|i| [i as f64 / 10.0, 0.0]).collect();
        lines.extend((0..100).map(|i| [0.0, 1.0 + i as f64 / 10.0]));
        let on_lines = mixture_index(&lines, 0.1);
        assert!(on_lines >= 0.5, "{on_lines}");
        // A circle's projections pile up at its edges (the arcsine law), so a band along a
        // tangent still holds a fifth or so of the points; far from a line's half.
        let on_circle = mixture_index(&circle(200), 0.1);
        assert!(on_circle < 0.3, "{on_circle}");
    }

    #[test]
    fn separability_is_near_zero_for_independent_axes_and_high_for_a_circle() {
        // A grid is a product of independent coordinates: zero mutual information.
        let grid: Vec<[f64; 2]> = (0..400)
            .map(|i| [(i % 20) as f64, (i / 20) as f64])
            .collect();
        assert!(separability_index(&grid) < 0.05);
        assert!(separability_index(&circle(400)) > 0.5);
    }
}
