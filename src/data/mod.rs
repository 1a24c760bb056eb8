//! Activation shards on disk: finding them, reading them (memory-mapped, validated), and
//! streaming shuffled batches from a background thread.

pub mod error;
pub mod shard;
pub mod source;
pub mod stream;
pub mod synth;

pub use error::DataError;
pub use shard::{ActDtype, Shard, ShardInfo, ShardLayout};
pub use source::{expand_inputs, open_shards};
pub use stream::{Batch, BatchStream, RowRange, StreamConfig};
