//! The geometry of a category's unit decoder rows: participation ratio, subspace score, PCA,
//! and the members' cyclic order in the top principal plane.

use serde::Serialize;

/// The geometry of one category's unit decoder rows.
#[derive(Clone, Debug, Serialize)]
pub struct CategoryShape {
    pub mean_pairwise_cosine: f64,
    /// (Σσᵢ²)² / Σσᵢ⁴ of the members' unit decoder rows.
    pub participation_ratio: f64,
    /// members − participation ratio.
    pub subspace_score: f64,
    /// Share of the centred rows' variance along each of the top principal components.
    pub pca_variance: Vec<f64>,
    /// Members ordered by angle in the plane of the top two principal components.
    pub cyclic_order: Vec<usize>,
    /// Each member's angle there, in degrees, in the order of `cyclic_order`.
    pub angles_deg: Vec<f64>,
    pub circle: CircleFit,
}

/// A circle through the members' points in the top-two-PC plane (centre at their mean).
#[derive(Clone, Debug, Serialize)]
pub struct CircleFit {
    pub radius: f64,
    /// Standard deviation of the distances to the centre, relative to the radius.
    pub relative_residual: f64,
}

/// The geometry of the unit decoder rows `unit` ([d_sae, d_in]) of `members`.
pub fn category_shape(unit: &[f32], d_in: usize, members: &[usize]) -> CategoryShape {
    let m = members.len();
    let gram = member_gram(unit, d_in, members);
    let trace: f64 = (0..m).map(|i| gram[i * m + i]).sum();
    let frob_sq: f64 = gram.iter().map(|g| g * g).sum();
    let participation_ratio = if frob_sq > 0.0 {
        trace * trace / frob_sq
    } else {
        0.0
    };
    let off_diagonal: f64 = (0..m)
        .flat_map(|i| (0..m).filter(move |&j| j != i).map(move |j| (i, j)))
        .map(|(i, j)| gram[i * m + j])
        .sum();
    let pairs = (m * m.saturating_sub(1)) as f64;
    // PCA of the centred rows through their m × m Gram matrix: eigenvector e with eigenvalue
    // λ gives the members' coordinates √λ·e along that component.
    let mean_row: Vec<f64> = (0..m)
        .map(|i| gram[i * m..(i + 1) * m].iter().sum::<f64>() / m as f64)
        .collect();
    let grand = mean_row.iter().sum::<f64>() / m as f64;
    let mut centred = vec![0.0f64; m * m];
    for i in 0..m {
        for j in 0..m {
            centred[i * m + j] = gram[i * m + j] - mean_row[i] - mean_row[j] + grand;
        }
    }
    let (values, vectors) = symmetric_eigen(&centred, m);
    let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
    let pca_variance = values
        .iter()
        .take(5)
        .map(|v| if total > 0.0 { v.max(0.0) / total } else { 0.0 })
        .collect();
    let coord = |c: usize, i: usize| -> f64 {
        if c < m {
            values[c].max(0.0).sqrt() * vectors[i * m + c]
        } else {
            0.0
        }
    };
    let points: Vec<(f64, f64)> = (0..m).map(|i| (coord(0, i), coord(1, i))).collect();
    let radii: Vec<f64> = points.iter().map(|(x, y)| x.hypot(*y)).collect();
    let radius = radii.iter().sum::<f64>() / m as f64;
    let spread = (radii.iter().map(|r| (r - radius).powi(2)).sum::<f64>() / m as f64).sqrt();
    let mut by_angle: Vec<(f64, usize)> = points
        .iter()
        .enumerate()
        .map(|(i, (x, y))| (y.atan2(*x).to_degrees().rem_euclid(360.0), i))
        .collect();
    by_angle.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    CategoryShape {
        mean_pairwise_cosine: if pairs > 0.0 {
            off_diagonal / pairs
        } else {
            1.0
        },
        participation_ratio,
        subspace_score: m as f64 - participation_ratio,
        pca_variance,
        cyclic_order: by_angle.iter().map(|&(_, i)| members[i]).collect(),
        angles_deg: by_angle.iter().map(|&(a, _)| a).collect(),
        circle: CircleFit {
            radius,
            relative_residual: if radius > 0.0 { spread / radius } else { 0.0 },
        },
    }
}

/// The Gram matrix [m, m] of `members`' rows of `rows` ([n, d_in]), in f64: the cosine
/// matrix when the rows are unit.
pub fn member_gram(rows: &[f32], d_in: usize, members: &[usize]) -> Vec<f64> {
    let m = members.len();
    let row = |i: usize| &rows[members[i] * d_in..(members[i] + 1) * d_in];
    let mut gram = vec![0.0f64; m * m];
    for i in 0..m {
        for j in 0..=i {
            let g: f64 = row(i)
                .iter()
                .zip(row(j))
                .map(|(a, b)| f64::from(*a) * f64::from(*b))
                .sum();
            gram[i * m + j] = g;
            gram[j * m + i] = g;
        }
    }
    gram
}

/// Eigenvalues (descending) and eigenvectors (column c of the row-major [n, n] result) of a
/// symmetric matrix, by cyclic Jacobi rotations: exact to rounding, and plenty fast for the
/// category-sized matrices it is used on.
pub fn symmetric_eigen(matrix: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = matrix.to_vec();
    let mut v = vec![0.0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let scale: f64 = a.iter().map(|x| x * x).sum::<f64>().max(f64::MIN_POSITIVE);
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j].powi(2))
            .sum();
        if off <= 1e-30 * scale {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq.abs() < 1e-300 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&x, &y| a[y * n + y].total_cmp(&a[x * n + x]).then(x.cmp(&y)));
    let values = order.iter().map(|&i| a[i * n + i]).collect();
    let mut vectors = vec![0.0f64; n * n];
    for (c, &i) in order.iter().enumerate() {
        for k in 0..n {
            vectors[k * n + c] = v[k * n + i];
        }
    }
    (values, vectors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalises_a_symmetric_matrix() {
        let n = 5;
        let mut a = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..=i {
                let v = ((i * 7 + j * 3) % 11) as f64 / 5.0 - 1.0;
                a[i * n + j] = v;
                a[j * n + i] = v;
            }
        }
        let (values, vectors) = symmetric_eigen(&a, n);
        for c in 0..n {
            for i in 0..n {
                let av: f64 = (0..n).map(|k| a[i * n + k] * vectors[k * n + c]).sum();
                assert!((av - values[c] * vectors[i * n + c]).abs() < 1e-10);
            }
        }
        assert!(values.windows(2).all(|w| w[0] >= w[1]));
    }

    #[test]
    fn points_on_a_circle_have_participation_ratio_two_and_their_order() {
        // 7 unit vectors at angles 2πj/7 in a plane of R^4, listed out of order.
        let d = 4;
        let order = [3usize, 0, 5, 1, 6, 2, 4];
        let mut unit = vec![0.0f32; 7 * d];
        for (feature, &j) in order.iter().enumerate() {
            let angle = 2.0 * std::f64::consts::PI * j as f64 / 7.0;
            unit[feature * d] = angle.cos() as f32;
            unit[feature * d + 2] = angle.sin() as f32;
        }
        let members: Vec<usize> = (0..7).collect();
        let shape = category_shape(&unit, d, &members);
        assert!((shape.participation_ratio - 2.0).abs() < 1e-5);
        assert!(shape.circle.relative_residual < 1e-5);
        // Consecutive features in the cyclic order are consecutive points (either direction).
        let position: Vec<usize> = shape.cyclic_order.iter().map(|&f| order[f]).collect();
        let step = (position[1] + 7 - position[0]) % 7;
        assert!(step == 1 || step == 6, "{position:?}");
        for w in position.windows(2) {
            assert_eq!((w[1] + 7 - w[0]) % 7, step, "{position:?}");
        }
    }
}
