//! Data-driven initialisation: b_dec from the geometric median (Weiszfeld) or the mean of a
//! sample, and the scale that makes E‖x‖² = 1.

/// Mean row of `rows` rows of width `d`.
pub fn mean_row(x: &[f32], d: usize) -> Vec<f32> {
    let rows = x.len() / d;
    let mut sum = vec![0.0f64; d];
    for row in x.chunks_exact(d) {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += f64::from(*v);
        }
    }
    sum.iter()
        .map(|s| (s / rows.max(1) as f64) as f32)
        .collect()
}

/// Geometric median by Weiszfeld's iteration (weights 1/‖p − g‖, at most `max_iter`
/// iterations, stopping when the relative change of the objective is below `tol`), started at
/// the mean, as openai/sparse_autoencoder does.
pub fn geometric_median(x: &[f32], d: usize, max_iter: usize, tol: f64) -> Vec<f32> {
    let mut g: Vec<f64> = mean_row(x, d).into_iter().map(f64::from).collect();
    let distance = |row: &[f32], g: &[f64]| -> f64 {
        row.iter()
            .zip(g)
            .map(|(a, b)| (f64::from(*a) - b).powi(2))
            .sum::<f64>()
            .sqrt()
    };
    let objective = |g: &[f64]| -> f64 { x.chunks_exact(d).map(|row| distance(row, g)).sum() };
    let mut previous = objective(&g);
    for _ in 0..max_iter {
        let mut numerator = vec![0.0f64; d];
        let mut denominator = 0.0f64;
        for row in x.chunks_exact(d) {
            let w = 1.0 / distance(row, &g).max(1e-12);
            denominator += w;
            for (n, v) in numerator.iter_mut().zip(row) {
                *n += w * f64::from(*v);
            }
        }
        g = numerator.iter().map(|n| n / denominator).collect();
        let current = objective(&g);
        if (previous - current).abs() <= tol * previous.max(1e-30) {
            break;
        }
        previous = current;
    }
    g.into_iter().map(|v| v as f32).collect()
}

/// √(E‖x‖²) over the sample: dividing inputs by it makes E‖x‖² = 1.
pub fn input_scale(x: &[f32], d: usize) -> f32 {
    let rows = (x.len() / d).max(1);
    let total: f64 = x.iter().map(|v| f64::from(*v).powi(2)).sum();
    ((total / rows as f64).sqrt() as f32).max(f32::MIN_POSITIVE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geometric_median_resists_an_outlier() {
        // Four points around the origin and one far away: the median stays near the origin
        // while the mean moves.
        let x = [1.0, 0.0, -1.0, 0.0, 0.0, 1.0, 0.0, -1.0, 100.0, 100.0];
        let median = geometric_median(&x, 2, 200, 1e-9);
        let mean = mean_row(&x, 2);
        assert!(median[0].abs() < 1.0 && median[1].abs() < 1.0, "{median:?}");
        assert!(mean[0] > 19.0);
    }
}
