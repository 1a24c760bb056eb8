//! TopK (Gao et al. 2024): the k largest ReLU pre-activations of each row. The trainer's step
//! is TopK's already (FVU + AuxK, unit-norm decoder), so it adds nothing; sparsify and SAELens
//! both run it.

use crate::sae::trainer::Trainer;

use super::settings::ModelConfig;
use super::spec::{ArchResume, ArchSpec, AttachError};

pub struct TopK;

impl ArchSpec for TopK {
    fn exports_sparsify(&self) -> bool {
        true
    }

    fn attach<'g>(
        &self,
        trainer: Trainer<'g>,
        _model: &ModelConfig,
        _resume: Option<&ArchResume>,
    ) -> Result<Trainer<'g>, AttachError> {
        Ok(trainer)
    }
}
