//! Learning-rate schedule: linear warmup from 0 (step 0 has lr 0, as in sparsify's
//! `get_linear_schedule_with_warmup`), constant, then linear decay to 0 at the last step over
//! the final `decay` steps. `decay` = every step after the warmup is sparsify's schedule; 0 is
//! SAELens' default (constant); a fifth of the steps is Anthropic's (April 2024 update).

/// sparsify's default: 2e-4 · √(2¹⁴ / d_sae).
pub fn default_lr(d_sae: usize) -> f64 {
    2e-4 * (16384.0 / d_sae as f64).sqrt()
}

/// The schedule's two phases, in optimiser steps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Schedule {
    pub warmup: u64,
    /// Steps at the end over which the rate decays linearly to 0 (at most those after the
    /// warmup).
    pub decay: u64,
}

/// Learning rate of the optimiser step with 0-based index `step` out of `total`.
pub fn lr_at(base: f64, step: u64, schedule: Schedule, total: u64) -> f64 {
    if step < schedule.warmup {
        return base * step as f64 / schedule.warmup.max(1) as f64;
    }
    let decay = schedule.decay.min(total.saturating_sub(schedule.warmup));
    let remaining = total.saturating_sub(step);
    if decay == 0 || remaining >= decay {
        return base;
    }
    base * remaining as f64 / decay as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rate at each listed step of a 10-step run with these phases.
    fn rates(warmup: u64, decay: u64, steps: &[u64]) -> Vec<f64> {
        let schedule = Schedule { warmup, decay };
        steps.iter().map(|&s| lr_at(1.0, s, schedule, 10)).collect()
    }

    #[test]
    fn warmup_then_linear_decay() {
        assert_eq!(rates(4, 10, &[0, 2, 4, 7]), [0.0, 0.5, 1.0, 0.5]);
        assert!((default_lr(4608) - 3.771236166328254e-4).abs() < 1e-12);
    }

    #[test]
    fn constant_then_decay_over_the_last_steps() {
        assert_eq!(rates(2, 4, &[1, 5, 6, 8, 9]), [0.5, 1.0, 1.0, 0.5, 0.25]);
        assert_eq!(rates(2, 0, &[1, 9]), [0.5, 1.0]);
    }
}
