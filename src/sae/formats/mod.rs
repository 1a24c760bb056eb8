//! SAE checkpoint layouts the Python tools load as they are (see REFERENCE.md): sparsify
//! (`cfg.json` + `sae.safetensors`) and SAELens (`cfg.json` + `sae_weights.safetensors`
//! [+ `sparsity.safetensors`]), each with its configuration typed. Loading detects the layout
//! and validates every tensor.
//!
//! - `sparsify.rs`, `saelens.rs`: each layout's configuration, writer and reader.
//! - `fold.rs`: what the SAELens reader folds into the weights, exactly.
//! - `load.rs`: from a directory to an SAE, whatever its layout. `provenance.rs`: what was
//!   loaded. `tensors.rs`: reading the files.

mod fold;
mod load;
mod provenance;
mod saelens;
mod sparsify;
mod tensors;

pub use load::{hookpoints, load_sae, load_sae_at, LoadedSae};
pub use provenance::{Layout, Provenance};
pub use saelens::{
    save_saelens, Normalization, SaeLensArchitecture, SaeLensConfig, KNOWN_ARCHITECTURES,
    KNOWN_NORMALIZATIONS,
};
pub use sparsify::{save_sparsify, SparsifyConfig};
pub use tensors::{parse, read_json, read_safetensors, read_tensor_f32, read_tensor_f64};
