//! Learning-rate schedule: linear warmup from 0, then linear decay to 0 at the last step
//! (the schedule sparsify uses through `get_linear_schedule_with_warmup`: step 0 has lr 0).

/// sparsify's default: 2e-4 · √(2¹⁴ / d_sae).
pub fn default_lr(d_sae: usize) -> f64 {
    2e-4 * (16384.0 / d_sae as f64).sqrt()
}

/// Learning rate of the optimiser step with 0-based index `step` out of `total`.
pub fn lr_at(base: f64, step: u64, warmup: u64, total: u64) -> f64 {
    if step < warmup {
        return base * step as f64 / warmup.max(1) as f64;
    }
    let remaining = total.saturating_sub(step) as f64;
    let span = total.saturating_sub(warmup).max(1) as f64;
    base * (remaining / span).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_linear_decay() {
        assert_eq!(lr_at(1.0, 0, 4, 10), 0.0);
        assert_eq!(lr_at(1.0, 2, 4, 10), 0.5);
        assert_eq!(lr_at(1.0, 4, 4, 10), 1.0);
        assert!((lr_at(1.0, 7, 4, 10) - 0.5).abs() < 1e-12);
        assert!((default_lr(4608) - 3.771236166328254e-4).abs() < 1e-12);
    }
}
