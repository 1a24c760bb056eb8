//! From an architecture's name to what it is: one line each in [`Architecture::spec`] (the
//! names themselves are listed with the model's settings, super::settings).

use super::settings::{Architecture, ModelConfig};
use super::spec::ArchSpec;
use super::{batch_topk, jumprelu, matryoshka, relu, topk};
use crate::choice::Choice;
use crate::gpu::kernels::topk::MAX_K;

impl Architecture {
    /// What the architecture is and does.
    pub fn spec(self) -> &'static dyn ArchSpec {
        match self {
            Architecture::TopK => &topk::TopK,
            Architecture::BatchTopK => &batch_topk::BatchTopK,
            Architecture::Matryoshka => &matryoshka::Matryoshka,
            Architecture::Relu => &relu::Relu,
            Architecture::JumpRelu => &jumprelu::JumpRelu,
        }
    }

    /// As `--architecture` and config.json name it.
    pub fn name(self) -> &'static str {
        Choice::name(self)
    }

    /// Entries each row offers to the selection (see [`ArchSpec::row_candidates`]).
    pub fn row_candidates(self, k: usize, d_sae: usize) -> usize {
        self.spec().row_candidates(k, d_sae)
    }

    /// The architectures that read the setting `key`.
    pub fn reading(key: &str) -> Vec<Architecture> {
        Self::CHOICES
            .iter()
            .map(|(_, a, _)| *a)
            .filter(|a| a.spec().settings().contains(&key))
            .collect()
    }
}

impl ModelConfig {
    /// Checks k and d_sae, then the architecture's own settings.
    pub fn validate(&self, d_in: usize) -> Result<(), String> {
        let (k, d_sae) = (self.k, self.d_sae);
        if k == 0 {
            return Err("--k must be at least 1".into());
        }
        if k > d_sae {
            return Err(format!(
                "--k {k} exceeds the dictionary size d_sae = {d_sae}"
            ));
        }
        if k > MAX_K {
            return Err(format!("--k {k} exceeds the largest supported k ({MAX_K})"));
        }
        if d_in == 0 || d_sae == 0 {
            return Err(format!("empty dictionary (d_in {d_in}, d_sae {d_sae})"));
        }
        self.architecture.spec().validate(self)
    }

    /// Entries each row offers to the selection.
    pub fn row_candidates(&self) -> usize {
        self.architecture.row_candidates(self.k, self.d_sae)
    }
}
