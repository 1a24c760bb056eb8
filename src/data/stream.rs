//! Batches of rows streamed from shards by a background thread through a bounded queue, so
//! disk reads and conversion overlap GPU compute and memory stays bounded whatever the
//! dataset size: at most `queue_depth` batches, the shuffle pool and one read chunk.
//!
//! Order is a pure function of the seed and the data: shard order is shuffled per epoch and
//! rows go through a seeded shuffle pool. Resuming replays the stream and drops the batches
//! already trained on, so a resumed run sees exactly the rows an uninterrupted one would.

use std::ops::Range;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::dtype::ActDtype;
use super::error::DataError;
use super::shard::Shard;

/// Which rows of every shard a stream reads: all, or a split into a head and a held-out tail.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RowRange {
    All,
    /// All but the last `fraction` of each shard's rows.
    Head(f64),
    /// The last `fraction` of each shard's rows.
    Tail(f64),
}

impl RowRange {
    pub fn range(&self, rows: usize) -> Range<usize> {
        let tail = |f: f64| ((rows as f64 * f).ceil() as usize).min(rows);
        match *self {
            RowRange::All => 0..rows,
            RowRange::Head(f) => 0..rows - tail(f),
            RowRange::Tail(f) => rows - tail(f)..rows,
        }
    }
}

#[derive(Clone, Debug)]
pub struct StreamConfig {
    pub batch_rows: usize,
    /// Rows in the shuffle pool; 0 keeps file order.
    pub shuffle_rows: usize,
    pub shuffle_shards: bool,
    pub seed: u64,
    /// Passes over the data; `None` repeats until `max_rows`.
    pub epochs: Option<u64>,
    /// Stop after this many rows have been emitted.
    pub max_rows: Option<u64>,
    /// Drop a final batch smaller than `batch_rows`.
    pub drop_last: bool,
    pub skip_nonfinite: bool,
    pub queue_depth: usize,
    /// Produce but do not deliver the first batches (resume).
    pub skip_batches: u64,
    pub range: RowRange,
    /// Deliver rows as stored (16-bit) when every shard holds this dtype; see [`Batch::half`].
    pub keep_16bit: bool,
}

impl StreamConfig {
    /// Every row once, in file order, keeping the last partial batch: for evaluation.
    pub fn sequential(batch_rows: usize) -> Self {
        StreamConfig {
            batch_rows,
            shuffle_rows: 0,
            shuffle_shards: false,
            seed: 0,
            epochs: Some(1),
            max_rows: None,
            drop_last: false,
            skip_nonfinite: false,
            queue_depth: 2,
            skip_batches: 0,
            range: RowRange::All,
            keep_16bit: false,
        }
    }
}

/// Rows ready for the GPU. `tokens` is empty when the shards have none.
#[derive(Debug, Default)]
pub struct Batch {
    /// The rows as f32 `[rows, d_in]`; empty when they come as stored in `half`.
    pub x: Vec<f32>,
    /// With [`StreamConfig::keep_16bit`] and 16-bit shards: the rows' bits as stored
    /// (`half_dtype`), for the GPU to widen; `x` is then empty.
    pub half: Vec<u16>,
    pub half_dtype: Option<ActDtype>,
    /// A paired stream's targets (a transcoder's): the same rows of the target shards,
    /// `[rows, d_out]` as f32 in `y`, or as stored in `half_y` exactly when the inputs are in
    /// `half`. Empty for a stream of inputs alone.
    pub y: Vec<f32>,
    pub half_y: Vec<u16>,
    pub tokens: Vec<i32>,
    /// More tensors of the same rows, f32 `[rows, width]` each, in the order the stream was
    /// asked for them (a component cache's: src/data/components.rs). Empty for shards.
    pub columns: Vec<Vec<f32>>,
    /// (shard index, row) of every row, for tools that point back into the data.
    pub origin: Vec<(u32, u32)>,
    pub rows: usize,
    pub index: u64,
    pub epoch: u64,
    /// Non-finite rows skipped so far (with `skip_nonfinite`).
    pub skipped_nonfinite: u64,
}

pub struct BatchStream {
    receiver: Option<Receiver<Result<Batch, DataError>>>,
    handle: Option<JoinHandle<()>>,
    pub d_in: usize,
}

/// Rows whose tokens [`check_pairs`] compares, from the start of each pair of files.
const PAIR_TOKEN_ROWS: usize = 65_536;

/// Checks that `targets` pair row for row with `inputs`: as many shards, each of the same row
/// count as its input, all of one width (returned: d_out), and, where both files of a pair
/// hold tokens, the same tokens on their first rows (two caches of one dataset written in
/// different orders would otherwise pair silently).
pub fn check_pairs(inputs: &[Shard], targets: &[Shard]) -> Result<usize, DataError> {
    if inputs.len() != targets.len() {
        return Err(DataError::Input(format!(
            "{} input shards but {} target shards: the targets must pair with the inputs file for file",
            inputs.len(),
            targets.len()
        )));
    }
    let d_out = targets.first().map_or(0, |t| t.d_in);
    for (input, target) in inputs.iter().zip(targets) {
        if input.rows != target.rows {
            return Err(DataError::Input(format!(
                "{} has {} rows but its target {} has {}: paired files must hold the same rows",
                input.path.display(),
                input.rows,
                target.path.display(),
                target.rows
            )));
        }
        if input.path != target.path && input.has_tokens() && target.has_tokens() {
            let rows = input.rows.min(PAIR_TOKEN_ROWS);
            if let Some(r) = (0..rows).find(|&r| input.token(r) != target.token(r)) {
                return Err(DataError::Input(format!(
                    "{} and its target {} hold different tokens at row {r} ({:?} and {:?}): the files do not pair row for row",
                    input.path.display(),
                    target.path.display(),
                    input.token(r).unwrap_or(-1),
                    target.token(r).unwrap_or(-1)
                )));
            }
        }
        if target.d_in != d_out {
            return Err(DataError::tensor(
                &target.path,
                format!(
                    "width {} but {} has {d_out}: every target must have the same width",
                    target.d_in,
                    targets[0].path.display()
                ),
            ));
        }
    }
    Ok(d_out)
}

impl BatchStream {
    pub fn start(shards: Arc<Vec<Shard>>, config: StreamConfig) -> Result<BatchStream, DataError> {
        BatchStream::start_paired(shards, None, config)
    }

    /// A stream of inputs and, with `targets` (checked with [`check_pairs`]), the same rows of
    /// the targets beside them: the pair stays a pair through the shuffle.
    pub fn start_paired(
        shards: Arc<Vec<Shard>>,
        targets: Option<Arc<Vec<Shard>>>,
        mut config: StreamConfig,
    ) -> Result<BatchStream, DataError> {
        let d_in = shards
            .first()
            .map(|s| s.d_in)
            .ok_or_else(|| DataError::Input("no input shards given".into()))?;
        if let Some(targets) = &targets {
            check_pairs(&shards, targets)?;
        }
        if config.batch_rows == 0 {
            return Err(DataError::Input("batch size must be at least 1 row".into()));
        }
        let total: usize = shards
            .iter()
            .map(|s| config.range.range(s.rows).len())
            .sum();
        if total == 0 {
            return Err(DataError::Input(
                "the selected rows of the input shards are empty".into(),
            ));
        }
        // A pool larger than the data would cycle through it several times before emitting a
        // row, repeating rows within one pass.
        config.shuffle_rows = config.shuffle_rows.min(total);
        let (sender, receiver) = sync_channel(config.queue_depth.max(1));
        // Rows stay 16-bit only when every shard (targets too) stores the same 16-bit type.
        let every = |dtype| {
            shards.iter().all(|s| s.dtype == dtype)
                && targets
                    .iter()
                    .flat_map(|t| t.iter())
                    .all(|s| s.dtype == dtype)
        };
        let half = match shards[0].dtype {
            dtype @ (ActDtype::F16 | ActDtype::Bf16) if config.keep_16bit && every(dtype) => {
                Some(dtype)
            }
            _ => None,
        };
        let handle = std::thread::Builder::new()
            .name("shard-reader".into())
            .spawn(move || {
                let targets = targets.as_deref().map(Vec::as_slice);
                let result = match half {
                    Some(dtype) => {
                        Producer::<u16>::new(&shards, targets, config, sender, dtype).run()
                    }
                    None => {
                        Producer::<f32>::new(&shards, targets, config, sender, ActDtype::F32).run()
                    }
                };
                if let Err((sender, error)) = result {
                    let _ = sender.send(Err(error));
                }
            })
            .map_err(|e| {
                DataError::Input(format!("could not start the shard reader thread: {e}"))
            })?;
        Ok(BatchStream {
            receiver: Some(receiver),
            handle: Some(handle),
            d_in,
        })
    }
}

impl Iterator for BatchStream {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.receiver.as_ref()?.recv().ok()
    }
}

impl Drop for BatchStream {
    fn drop(&mut self) {
        // Dropping the receiver makes the producer's next send fail, which ends its loop.
        self.receiver.take();
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// Signals that the consumer went away or the row budget is spent.
struct Stop;

/// What the producer moves rows as: f32 (converted from any dtype) or 16-bit values as
/// stored (f16 or bf16 bits, widened on the GPU).
trait Element: Copy + Default + Send + 'static {
    fn read(shard: &Shard, start: usize, out: &mut [Self]);
    fn finite(row: &[Self], dtype: ActDtype) -> bool;
    /// Puts the inputs `x` (and targets `y`, empty without) into the batch.
    fn into_batch(x: Vec<Self>, y: Vec<Self>, dtype: ActDtype, batch: &mut Batch);
}

impl Element for f32 {
    fn read(shard: &Shard, start: usize, out: &mut [f32]) {
        shard.read_rows(start, out);
    }

    fn finite(row: &[f32], _: ActDtype) -> bool {
        row.iter().all(|v| v.is_finite())
    }

    fn into_batch(x: Vec<f32>, y: Vec<f32>, _: ActDtype, batch: &mut Batch) {
        batch.x = x;
        batch.y = y;
    }
}

impl Element for u16 {
    fn read(shard: &Shard, start: usize, out: &mut [u16]) {
        shard.read_raw16(start, out);
    }

    fn finite(row: &[u16], dtype: ActDtype) -> bool {
        // All exponent bits set is Inf or NaN.
        let exponent: u16 = if dtype == ActDtype::Bf16 {
            0x7f80
        } else {
            0x7c00
        };
        row.iter().all(|v| v & exponent != exponent)
    }

    fn into_batch(x: Vec<u16>, y: Vec<u16>, dtype: ActDtype, batch: &mut Batch) {
        batch.half = x;
        batch.half_y = y;
        batch.half_dtype = Some(dtype);
    }
}

struct Producer<'a, E: Element> {
    shards: &'a [Shard],
    /// A paired stream's target shards, one per input shard.
    targets: Option<&'a [Shard]>,
    config: StreamConfig,
    sender: SyncSender<Result<Batch, DataError>>,
    d_in: usize,
    /// Target width (0 without targets); rows move as d_in + d_out values.
    d_out: usize,
    dtype: ActDtype,
    rng: ChaCha8Rng,
    pool: Vec<E>,
    pool_tokens: Vec<i32>,
    pool_origin: Vec<(u32, u32)>,
    rows: Vec<E>,
    rows_y: Vec<E>,
    batch: Batch,
    batch_index: u64,
    emitted_rows: u64,
    skipped: u64,
    epoch: u64,
    has_tokens: bool,
}

impl<'a, E: Element> Producer<'a, E> {
    fn new(
        shards: &'a [Shard],
        targets: Option<&'a [Shard]>,
        config: StreamConfig,
        sender: SyncSender<Result<Batch, DataError>>,
        dtype: ActDtype,
    ) -> Self {
        let d_in = shards[0].d_in;
        let d_out = targets.and_then(|t| t.first()).map_or(0, |t| t.d_in);
        let has_tokens = shards.iter().all(Shard::has_tokens);
        Producer {
            shards,
            targets,
            rng: ChaCha8Rng::seed_from_u64(config.seed),
            pool: Vec::with_capacity(config.shuffle_rows * (d_in + d_out)),
            pool_tokens: Vec::new(),
            pool_origin: Vec::new(),
            rows: Vec::new(),
            rows_y: Vec::new(),
            batch: Batch::default(),
            config,
            sender,
            d_in,
            d_out,
            dtype,
            batch_index: 0,
            emitted_rows: 0,
            skipped: 0,
            epoch: 0,
            has_tokens,
        }
    }

    /// Values per row as the pool holds it: the input, then the target.
    fn width(&self) -> usize {
        self.d_in + self.d_out
    }

    /// Produces every batch; on an error, hands back the sender to report it with.
    #[allow(clippy::result_large_err)]
    fn run(mut self) -> Result<(), (SyncSender<Result<Batch, DataError>>, DataError)> {
        match self.produce() {
            Ok(()) | Err(Ok(Stop)) => Ok(()),
            Err(Err(error)) => Err((self.sender, error)),
        }
    }

    fn produce(&mut self) -> Result<(), Result<Stop, DataError>> {
        let mut order: Vec<usize> = (0..self.shards.len()).collect();
        loop {
            if self.config.epochs.is_some_and(|e| self.epoch >= e) {
                break;
            }
            if self.config.shuffle_shards {
                order.shuffle(&mut self.rng);
            }
            for &s in &order {
                self.read_shard(s)?;
            }
            self.epoch += 1;
        }
        // End of data: drain the pool in a random order, then the last partial batch.
        let w = self.width();
        let n = self.pool.len() / w;
        let mut rest: Vec<usize> = (0..n).collect();
        rest.shuffle(&mut self.rng);
        let pool = std::mem::take(&mut self.pool);
        let tokens = std::mem::take(&mut self.pool_tokens);
        let origin = std::mem::take(&mut self.pool_origin);
        for i in rest {
            let token = tokens.get(i).copied().unwrap_or(-1);
            self.emit(&pool[i * w..(i + 1) * w], token, origin[i])?;
        }
        if self.batch.rows > 0 && !self.config.drop_last {
            self.send_batch()?;
        }
        Ok(())
    }

    /// Every selected row of shard `s` (and of its target) into the pool, in chunks.
    fn read_shard(&mut self, s: usize) -> Result<(), Result<Stop, DataError>> {
        const CHUNK_ROWS: usize = 1024;
        let (d, d_out, w) = (self.d_in, self.d_out, self.width());
        let shard = &self.shards[s];
        let target = self.targets.map(|t| &t[s]);
        let mut chunk = vec![E::default(); CHUNK_ROWS * d];
        let mut chunk_y = vec![E::default(); CHUNK_ROWS * d_out];
        let mut row = vec![E::default(); w];
        let range = self.config.range.range(shard.rows);
        let mut start = range.start;
        while start < range.end {
            let count = CHUNK_ROWS.min(range.end - start);
            E::read(shard, start, &mut chunk[..count * d]);
            if let Some(target) = target {
                E::read(target, start, &mut chunk_y[..count * d_out]);
            }
            for r in 0..count {
                let at = start + r;
                row[..d].copy_from_slice(&chunk[r * d..(r + 1) * d]);
                row[d..].copy_from_slice(&chunk_y[r * d_out..(r + 1) * d_out]);
                if !E::finite(&row, self.dtype) {
                    if self.config.skip_nonfinite {
                        self.skipped += 1;
                        continue;
                    }
                    let bad = match target {
                        Some(t) if E::finite(&row[..d], self.dtype) => t,
                        _ => shard,
                    };
                    return Err(Err(DataError::NonFinite {
                        path: bad.path.clone(),
                        row: at,
                    }));
                }
                let token = shard.token(at).unwrap_or(-1);
                self.push_row(&row, token, (s as u32, at as u32))?;
            }
            start += count;
        }
        Ok(())
    }

    fn push_row(
        &mut self,
        row: &[E],
        token: i32,
        origin: (u32, u32),
    ) -> Result<(), Result<Stop, DataError>> {
        let cap = self.config.shuffle_rows;
        if cap == 0 {
            return self.emit(row, token, origin);
        }
        let d = self.width();
        let len = self.pool.len() / d;
        if len < cap {
            self.pool.extend_from_slice(row);
            self.pool_tokens.push(token);
            self.pool_origin.push(origin);
            return Ok(());
        }
        let j = self.rng.random_range(0..cap);
        // Emit the pooled row j, then put the new row in its place.
        let out: Vec<E> = self.pool[j * d..(j + 1) * d].to_vec();
        let (out_token, out_origin) = (self.pool_tokens[j], self.pool_origin[j]);
        self.pool[j * d..(j + 1) * d].copy_from_slice(row);
        self.pool_tokens[j] = token;
        self.pool_origin[j] = origin;
        self.emit(&out, out_token, out_origin)
    }

    fn emit(
        &mut self,
        row: &[E],
        token: i32,
        origin: (u32, u32),
    ) -> Result<(), Result<Stop, DataError>> {
        if self.batch.rows == 0 {
            self.rows.reserve(self.config.batch_rows * self.d_in);
            self.rows_y.reserve(self.config.batch_rows * self.d_out);
        }
        self.rows.extend_from_slice(&row[..self.d_in]);
        self.rows_y.extend_from_slice(&row[self.d_in..]);
        if self.has_tokens {
            self.batch.tokens.push(token);
        }
        self.batch.origin.push(origin);
        self.batch.rows += 1;
        if self.batch.rows == self.config.batch_rows {
            self.send_batch()?;
        }
        Ok(())
    }

    fn send_batch(&mut self) -> Result<(), Result<Stop, DataError>> {
        let mut batch = std::mem::take(&mut self.batch);
        let (x, y) = (
            std::mem::take(&mut self.rows),
            std::mem::take(&mut self.rows_y),
        );
        E::into_batch(x, y, self.dtype, &mut batch);
        batch.index = self.batch_index;
        batch.epoch = self.epoch;
        batch.skipped_nonfinite = self.skipped;
        self.batch_index += 1;
        self.emitted_rows += batch.rows as u64;
        if batch.index >= self.config.skip_batches {
            self.sender.send(Ok(batch)).map_err(|_| Ok(Stop))?;
        }
        if self.config.max_rows.is_some_and(|m| self.emitted_rows >= m) {
            return Err(Ok(Stop));
        }
        Ok(())
    }
}
