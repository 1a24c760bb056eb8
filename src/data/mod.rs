//! Activation shards on disk (safetensors, NumPy, SAELens activation caches): finding them,
//! reading them (memory-mapped, validated), and
//! streaming shuffled batches from a background thread.

pub mod arrow;
pub mod column;
pub mod components;
pub mod dtype;
pub mod error;
pub mod fuzzing;
mod guard;
pub mod npy;
pub mod parts;
pub mod shard;
pub mod source;
pub mod stream;
pub mod synth;

pub use arrow::ArrowLayout;
pub use components::{ComponentCache, ComponentStream};
pub use dtype::ActDtype;
pub use error::DataError;
pub use npy::NpyArray;
pub use shard::{Shard, ShardFormat, ShardInfo, ShardLayout, DEFAULT_TENSOR};
pub use source::{expand_inputs, open_shards};
pub use stream::{check_pairs, Batch, BatchStream, RowRange, StreamConfig};
