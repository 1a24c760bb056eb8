//! The data a run trains and evaluates on: its shards opened once, the stream of training
//! batches, the first rows that b_dec and the input scale are estimated from, and the record
//! `config.json` keeps so that a resumed run can check it sees the same files.

use std::sync::Arc;

use anyhow::bail;

use super::config::{BDecInit, TrainConfig};
use crate::data::{
    expand_inputs, open_shards, BatchStream, RowRange, Shard, ShardInfo, StreamConfig,
};
use crate::sae::init::{geometric_median, input_scale, mean_row};

/// The training and held-out shards with the rows each side reads.
pub struct Data {
    pub train: Arc<Vec<Shard>>,
    pub eval: Arc<Vec<Shard>>,
    pub train_range: RowRange,
    pub eval_range: RowRange,
    pub d_in: usize,
}

impl Data {
    /// Opens the shards `config` names: held-out shards, or the tail of each training shard.
    pub fn open(config: &TrainConfig) -> anyhow::Result<Data> {
        let data = &config.data;
        let train_paths = expand_inputs(&data.inputs)?;
        let train = open_shards(&train_paths, &data.tensor, None)?;
        let d_in = train[0].d_in;
        let (eval, train_range, eval_range) = if !data.eval_inputs.is_empty() {
            let paths = expand_inputs(&data.eval_inputs)?;
            (
                open_shards(&paths, &data.tensor, Some(d_in))?,
                RowRange::All,
                RowRange::All,
            )
        } else if data.eval_fraction > 0.0 {
            // The tail of each training shard: the same files, another range.
            let train = Arc::new(train);
            let fraction = data.eval_fraction;
            return Ok(Data {
                eval: Arc::clone(&train),
                train,
                train_range: RowRange::Head(fraction),
                eval_range: RowRange::Tail(fraction),
                d_in,
            });
        } else {
            (Vec::new(), RowRange::All, RowRange::All)
        };
        Ok(Data {
            train: Arc::new(train),
            eval: Arc::new(eval),
            train_range,
            eval_range,
            d_in,
        })
    }

    /// The training batches from step `skip_batches` on, at most `max_rows` rows in all.
    pub fn train_stream(
        &self,
        config: &TrainConfig,
        max_rows: u64,
        skip_batches: u64,
    ) -> anyhow::Result<BatchStream> {
        let stream = stream_config(config, self.train_range, max_rows, skip_batches);
        Ok(BatchStream::start(self.train.clone(), stream)?)
    }

    /// The held-out rows, in file order.
    pub fn eval_stream(&self, config: &TrainConfig) -> anyhow::Result<BatchStream> {
        let mut stream = StreamConfig::sequential(config.data.batch_size);
        stream.range = self.eval_range;
        stream.skip_nonfinite = config.data.skip_nonfinite;
        Ok(BatchStream::start(self.eval.clone(), stream)?)
    }

    /// The first `rows` training rows, in training order.
    fn init_sample(&self, config: &TrainConfig, rows: usize) -> anyhow::Result<Vec<f32>> {
        let mut stream = stream_config(config, self.train_range, rows as u64, 0);
        stream.batch_rows = rows.clamp(1, 8192);
        stream.drop_last = false;
        // The sample is read on the host: 16-bit shards widened here, not left as stored.
        stream.keep_16bit = false;
        let mut sample = Vec::with_capacity(rows * self.d_in);
        for batch in BatchStream::start(self.train.clone(), stream)? {
            sample.extend_from_slice(&batch?.x);
            if sample.len() >= rows * self.d_in {
                break;
            }
        }
        sample.truncate(rows * self.d_in);
        if sample.is_empty() {
            bail!("no training rows to initialise b_dec and the input scale from");
        }
        Ok(sample)
    }

    /// The input scale and b_dec a new run starts from, estimated on its first training rows.
    pub fn initial_b_dec(&self, config: &TrainConfig) -> anyhow::Result<(f32, Vec<f32>)> {
        let d_in = self.d_in;
        let mut sample = self.init_sample(config, init_sample_rows(config))?;
        let scale = if config.init.normalize_activations {
            input_scale(&sample, d_in)
        } else {
            1.0
        };
        if scale != 1.0 {
            sample.iter_mut().for_each(|v| *v /= scale);
        }
        let b_dec = match config.init.b_dec_init {
            BDecInit::GeometricMedian => geometric_median(&sample, d_in, 100, 1e-5),
            BDecInit::Mean => mean_row(&sample, d_in),
            BDecInit::Zeros => vec![0.0; d_in],
        };
        Ok((scale, b_dec))
    }

    pub fn train_infos(&self) -> Vec<ShardInfo> {
        shard_infos(&self.train)
    }

    pub fn eval_infos(&self) -> Vec<ShardInfo> {
        shard_infos(&self.eval)
    }
}

/// What a run's initial b_dec and input scale depend on besides the data order: sample rows,
/// method, whether inputs are scaled. Runs with the same key share them.
pub type InitKey = (usize, BDecInit, bool);

pub fn init_key(config: &TrainConfig) -> InitKey {
    let init = &config.init;
    (
        init_sample_rows(config),
        init.b_dec_init,
        init.normalize_activations,
    )
}

/// The rows b_dec is estimated from: one batch for the mean (sparsify), else the sample.
fn init_sample_rows(config: &TrainConfig) -> usize {
    match config.init.b_dec_init {
        BDecInit::Mean => config.data.batch_size,
        _ => config.init.init_sample_rows,
    }
    .max(1)
}

fn stream_config(
    config: &TrainConfig,
    range: RowRange,
    max_rows: u64,
    skip_batches: u64,
) -> StreamConfig {
    StreamConfig {
        batch_rows: config.data.batch_size,
        shuffle_rows: config.data.shuffle_buffer,
        shuffle_shards: true,
        seed: config.data_seed(),
        epochs: None,
        max_rows: Some(max_rows),
        drop_last: true,
        skip_nonfinite: config.data.skip_nonfinite,
        queue_depth: 4,
        skip_batches,
        range,
        // 16-bit shards go to the GPU as stored and are widened there.
        keep_16bit: true,
    }
}

fn shard_infos(shards: &[Shard]) -> Vec<ShardInfo> {
    shards.iter().map(Shard::info).collect()
}

/// Resuming replays the data stream, so the files must be the ones the run started on.
pub fn check_same_data(recorded: &serde_json::Value, now: &[ShardInfo]) -> anyhow::Result<()> {
    let recorded = recorded.as_array().map(Vec::as_slice).unwrap_or_default();
    if recorded.len() != now.len() {
        bail!(
            "the run was trained on {} shards, but its inputs now give {}; resuming needs the same data",
            recorded.len(),
            now.len()
        );
    }
    for (then, shard) in recorded.iter().zip(now) {
        let rows = then.get("rows").and_then(serde_json::Value::as_u64);
        let bytes = then.get("bytes").and_then(serde_json::Value::as_u64);
        if rows != Some(shard.rows as u64) || bytes != Some(shard.bytes) {
            bail!(
                "{}: changed since the run started ({} rows, {} bytes then; {} rows, {} bytes now); resuming needs the same data",
                shard.path,
                rows.map_or("?".to_string(), |r| r.to_string()),
                bytes.map_or("?".to_string(), |b| b.to_string()),
                shard.rows,
                shard.bytes
            );
        }
    }
    Ok(())
}
