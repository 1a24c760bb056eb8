//! The data a run trains and evaluates on: its shards opened once, the stream of training
//! batches, the first rows that b_dec and the input scale are estimated from, and the record
//! `config.json` keeps so that a resumed run can check it sees the same files.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::bail;

use super::config::{BDecInit, TrainConfig};

use crate::data::{
    check_pairs, expand_inputs, open_shards, BatchStream, RowRange, Shard, ShardInfo, StreamConfig,
};
use crate::sae::init::{geometric_median, input_scale, mean_row};

/// The training and held-out shards with the rows each side reads, and a transcoder's
/// targets beside them.
pub struct Data {
    pub train: Arc<Vec<Shard>>,
    pub eval: Arc<Vec<Shard>>,
    /// The targets, shard for shard beside `train` and `eval` (a transcoder's data).
    pub train_targets: Option<Arc<Vec<Shard>>>,
    pub eval_targets: Option<Arc<Vec<Shard>>>,
    pub train_range: RowRange,
    pub eval_range: RowRange,
    pub d_in: usize,
    /// The targets' width; d_in without targets.
    pub d_out: usize,
}

/// Where a new run starts, estimated on its first training rows: the factors inputs and
/// targets are divided by, b_dec, and (a transcoder's) the inputs' mean, which b_enc centres.
#[derive(Clone, Debug)]
pub struct InitialValues {
    pub scale: f32,
    pub target_scale: f32,
    pub b_dec: Vec<f32>,
    pub input_mean: Option<Vec<f32>>,
}

impl Data {
    /// Opens the shards `config` names: held-out shards, or the tail of each training shard;
    /// with targets, those beside each.
    pub fn open(config: &TrainConfig) -> anyhow::Result<Data> {
        let data = &config.data;
        let train_paths = expand_inputs(&data.inputs)?;
        let train = Arc::new(open_shards(&train_paths, &data.tensor, None)?);
        let d_in = train[0].d_in;
        let targets_of = |paths: &[PathBuf], inputs: &[Shard]| -> anyhow::Result<_> {
            let targets = open_shards(&expand_inputs(paths)?, data.target_tensor(), None)?;
            let d_out = check_pairs(inputs, &targets)?;
            Ok((Arc::new(targets), d_out))
        };
        let train_targets = match data.is_paired() {
            true => Some(targets_of(data.target_paths(), &train)?),
            false => None,
        };
        let d_out = train_targets.as_ref().map_or(d_in, |(_, d)| *d);
        let train_targets = train_targets.map(|(t, _)| t);
        let mut out = Data {
            eval: Arc::new(Vec::new()),
            eval_targets: None,
            train_range: RowRange::All,
            eval_range: RowRange::All,
            d_in,
            d_out,
            train,
            train_targets,
        };
        if !data.eval_inputs.is_empty() {
            let paths = expand_inputs(&data.eval_inputs)?;
            let eval = open_shards(&paths, &data.tensor, Some(d_in))?;
            if data.is_paired() {
                let (targets, width) = targets_of(data.eval_target_paths()?, &eval)?;
                if width != d_out {
                    bail!("the held-out targets have width {width}, the training targets {d_out}");
                }
                out.eval_targets = Some(targets);
            }
            out.eval = Arc::new(eval);
        } else if data.eval_fraction > 0.0 {
            // The tail of each training shard: the same files, another range.
            out.eval = Arc::clone(&out.train);
            out.eval_targets = out.train_targets.clone();
            out.train_range = RowRange::Head(data.eval_fraction);
            out.eval_range = RowRange::Tail(data.eval_fraction);
        }
        Ok(out)
    }

    /// The training batches from step `skip_batches` on, at most `max_rows` rows in all.
    pub fn train_stream(
        &self,
        config: &TrainConfig,
        max_rows: u64,
        skip_batches: u64,
    ) -> anyhow::Result<BatchStream> {
        let stream = stream_config(config, self.train_range, max_rows, skip_batches);
        let targets = self.train_targets.clone();
        Ok(BatchStream::start_paired(
            self.train.clone(),
            targets,
            stream,
        )?)
    }

    /// The held-out rows, in file order.
    pub fn eval_stream(&self, config: &TrainConfig) -> anyhow::Result<BatchStream> {
        let mut stream = StreamConfig::sequential(config.data.batch_size);
        stream.range = self.eval_range;
        stream.skip_nonfinite = config.data.skip_nonfinite;
        let targets = self.eval_targets.clone();
        Ok(BatchStream::start_paired(
            self.eval.clone(),
            targets,
            stream,
        )?)
    }

    /// The first `rows` training rows, in training order, and their targets (empty without).
    fn init_sample(
        &self,
        config: &TrainConfig,
        rows: usize,
    ) -> anyhow::Result<(Vec<f32>, Vec<f32>)> {
        let mut stream = stream_config(config, self.train_range, rows as u64, 0);
        stream.batch_rows = rows.clamp(1, 8192);
        stream.drop_last = false;
        // The sample is read on the host: 16-bit shards widened here, not left as stored.
        stream.keep_16bit = false;
        let mut sample = Vec::with_capacity(rows * self.d_in);
        let mut targets = Vec::new();
        let stream =
            BatchStream::start_paired(self.train.clone(), self.train_targets.clone(), stream)?;
        for batch in stream {
            let batch = batch?;
            sample.extend_from_slice(&batch.x);
            targets.extend_from_slice(&batch.y);
            if sample.len() >= rows * self.d_in {
                break;
            }
        }
        sample.truncate(rows * self.d_in);
        targets.truncate(rows * self.d_out);
        if sample.is_empty() {
            bail!("no training rows to initialise b_dec and the input scale from");
        }
        Ok((sample, targets))
    }

    /// The input scale and b_dec a new run starts from, estimated on its first training rows
    /// (for a transcoder: b_dec from the targets, each side with its own scale).
    pub fn initial_values(&self, config: &TrainConfig) -> anyhow::Result<InitialValues> {
        let (mut sample, mut targets) = self.init_sample(config, init_sample_rows(config))?;
        let scale = scale_sample(&mut sample, self.d_in, config);
        let (target_scale, input_mean) = if self.train_targets.is_some() {
            let target_scale = scale_sample(&mut targets, self.d_out, config);
            (target_scale, Some(mean_row(&sample, self.d_in)))
        } else {
            (scale, None)
        };
        let (of, d) = match input_mean {
            Some(_) => (&targets, self.d_out),
            None => (&sample, self.d_in),
        };
        let b_dec = match config.init.b_dec_init {
            BDecInit::GeometricMedian => geometric_median(of, d, 100, 1e-5),
            BDecInit::Mean => mean_row(of, d),
            BDecInit::Zeros => vec![0.0; d],
        };
        Ok(InitialValues {
            scale,
            target_scale,
            b_dec,
            input_mean,
        })
    }

    pub fn train_infos(&self) -> Vec<ShardInfo> {
        shard_infos(&self.train)
    }

    pub fn eval_infos(&self) -> Vec<ShardInfo> {
        shard_infos(&self.eval)
    }
}

/// Divides `rows` (of width `d`) by their scale when the run normalises activations, and
/// returns the scale (1 otherwise).
fn scale_sample(rows: &mut [f32], d: usize, config: &TrainConfig) -> f32 {
    if !config.init.normalize_activations {
        return 1.0;
    }
    let scale = input_scale(rows, d);
    if scale != 1.0 {
        rows.iter_mut().for_each(|v| *v /= scale);
    }
    scale
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
