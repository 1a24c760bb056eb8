//! Component caches (scripts/cache_components.py, `sae synth --components`): safetensors files
//! holding, row for row, every activation that writes the residual stream (TransformerLens
//! names: `hook_embed`, `blocks.{l}.hook_attn_out`, …) beside the residual itself. Files are
//! memory-mapped and checked up front (every per-row tensor has the file's row count, every
//! file the same tensors and widths); batches of any set of tensors stream from a background
//! thread, so memory stays bounded whatever the cache's size.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

use memmap2::Mmap;
use safetensors::{Dtype, SafeTensors};

use super::dtype::{convert_rows, ActDtype};
use super::error::DataError;
use super::shard::map_file;
use super::stream::Batch;

/// Tensors that describe windows rather than rows (not read per row).
const WINDOW_TENSORS: [&str; 1] = ["window_tokens"];

/// Where one tensor lies in its file.
#[derive(Clone, Debug)]
struct Placed {
    dtype: ActDtype,
    /// Values per row (the product of the trailing dimensions).
    width: usize,
    /// The shape after the row dimension.
    inner: Vec<usize>,
    offset: usize,
}

/// One memory-mapped cache file.
struct CacheFile {
    path: PathBuf,
    map: Mmap,
    rows: usize,
    floats: BTreeMap<String, Placed>,
    /// Int32 per-row tensors (tokens, window, position): their offsets.
    ints: BTreeMap<String, usize>,
}

/// Every file of a cache, opened and checked against each other.
pub struct ComponentCache {
    files: Vec<CacheFile>,
}

fn float_dtype(dtype: Dtype) -> Option<ActDtype> {
    match dtype {
        Dtype::F32 => Some(ActDtype::F32),
        Dtype::F16 => Some(ActDtype::F16),
        Dtype::BF16 => Some(ActDtype::Bf16),
        _ => None,
    }
}

impl CacheFile {
    fn open(path: &Path) -> Result<CacheFile, DataError> {
        let map = map_file(path, 8)?;
        let (rows, floats, ints) = {
            let st = SafeTensors::deserialize(&map).map_err(|e| DataError::Format {
                path: path.to_path_buf(),
                kind: "safetensors",
                message: e.to_string(),
            })?;
            let mut rows: Option<(usize, String)> = None;
            let (mut floats, mut ints) = (BTreeMap::new(), BTreeMap::new());
            let mut tensors = st.tensors();
            // In name order, so that errors are the same whatever the header's order.
            tensors.sort_by(|a, b| a.0.cmp(&b.0));
            for (name, view) in tensors {
                if WINDOW_TENSORS.contains(&name.as_str()) {
                    continue;
                }
                let shape = view.shape();
                let Some(&n) = shape.first() else { continue };
                match &rows {
                    None => rows = Some((n, name.clone())),
                    Some((r, first)) if *r != n => {
                        return Err(DataError::tensor(
                            path,
                            format!("tensor '{name}' has {n} rows but '{first}' has {r}: every tensor of a component cache holds the same rows"),
                        ))
                    }
                    Some(_) => {}
                }
                let offset = view.data().as_ptr() as usize - map.as_ptr() as usize;
                if let Some(dtype) = float_dtype(view.dtype()) {
                    let inner = shape[1..].to_vec();
                    let width = inner.iter().product();
                    floats.insert(
                        name,
                        Placed {
                            dtype,
                            width,
                            inner,
                            offset,
                        },
                    );
                } else if view.dtype() == Dtype::I32 && shape.len() == 1 {
                    ints.insert(name, offset);
                }
            }
            let rows = rows.map_or(0, |(r, _)| r);
            (rows, floats, ints)
        };
        Ok(CacheFile {
            path: path.to_path_buf(),
            map,
            rows,
            floats,
            ints,
        })
    }
}

impl ComponentCache {
    /// Opens every file (in the order given) and checks that they hold the same float tensors
    /// at the same widths.
    pub fn open(paths: &[PathBuf]) -> Result<ComponentCache, DataError> {
        if paths.is_empty() {
            return Err(DataError::Input("no component cache files given".into()));
        }
        let files = paths
            .iter()
            .map(|p| CacheFile::open(p))
            .collect::<Result<Vec<_>, _>>()?;
        let first = &files[0];
        for file in &files[1..] {
            for (name, placed) in &first.floats {
                match file.floats.get(name) {
                    None => {
                        return Err(DataError::tensor(
                            &file.path,
                            format!(
                                "no tensor '{name}', which {} holds: the files of one cache hold the same tensors",
                                first.path.display()
                            ),
                        ))
                    }
                    Some(p) if p.inner != placed.inner => {
                        return Err(DataError::tensor(
                            &file.path,
                            format!(
                                "tensor '{name}' has rows of shape {:?} but {} has {:?}",
                                p.inner,
                                first.path.display(),
                                placed.inner
                            ),
                        ))
                    }
                    Some(_) => {}
                }
            }
        }
        Ok(ComponentCache { files })
    }

    /// The float tensors of the cache, by name.
    pub fn names(&self) -> Vec<String> {
        self.files[0].floats.keys().cloned().collect()
    }

    pub fn has(&self, name: &str) -> bool {
        self.files[0].floats.contains_key(name)
    }

    /// The shape of one row of `name` (`[d]`, or `[heads, d_head]` for `attn.hook_z`).
    pub fn row_shape(&self, name: &str) -> Option<&[usize]> {
        self.files[0].floats.get(name).map(|p| p.inner.as_slice())
    }

    /// The element type of a float tensor.
    pub fn dtype(&self, name: &str) -> Option<ActDtype> {
        self.files[0].floats.get(name).map(|p| p.dtype)
    }

    /// A file of the cache, for error messages.
    pub fn path(&self, file: usize) -> &Path {
        &self.files[file].path
    }

    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    pub fn file_rows(&self, file: usize) -> usize {
        self.files[file].rows
    }

    pub fn rows(&self) -> u64 {
        self.files.iter().map(|f| f.rows as u64).sum()
    }

    /// Rows `start..start + out.len() / width` of `name` in file `file`, as f32.
    fn read(&self, file: usize, name: &str, start: usize, out: &mut [f32]) {
        let f = &self.files[file];
        let p = &f.floats[name];
        let row_bytes = p.width * p.dtype.bytes();
        let from = p.offset + start * row_bytes;
        convert_rows(
            &f.map[from..from + out.len() * p.dtype.bytes()],
            p.dtype,
            out,
        );
    }

    /// Rows of an int32 per-row tensor (`tokens`, `window`, `position`), if the file has it.
    fn read_ints(&self, file: usize, name: &str, start: usize, rows: usize) -> Vec<i32> {
        let f = &self.files[file];
        let Some(&offset) = f.ints.get(name) else {
            return Vec::new();
        };
        f.map[offset + 4 * start..offset + 4 * (start + rows)]
            .chunks_exact(4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }

    /// Fails unless `name` is in the cache with rows of `width` values.
    pub fn require(&self, name: &str, width: usize, why: &str) -> Result<(), DataError> {
        match self.files[0].floats.get(name) {
            None => Err(DataError::tensor(
                &self.files[0].path,
                format!("no tensor '{name}' ({why})"),
            )),
            Some(p) if p.width != width => Err(DataError::tensor(
                &self.files[0].path,
                format!(
                    "tensor '{name}' has rows of {} values but {why} needs {width}",
                    p.width
                ),
            )),
            Some(_) => Ok(()),
        }
    }
}

/// Batches of the listed tensors, read in a background thread, file after file: the first
/// tensor as a [`Batch`]'s `x` (what the SAE reads), the others as its `columns`, the
/// `origin` of each row (file, row within it) and its token.
pub struct ComponentStream {
    receiver: Receiver<Batch>,
    handle: Option<JoinHandle<()>>,
}

impl ComponentStream {
    /// Every name must be in the cache ([`ComponentCache::require`]).
    pub fn start(cache: Arc<ComponentCache>, names: Vec<String>, batch_rows: usize) -> Self {
        let (sender, receiver) = sync_channel(2);
        let handle = std::thread::spawn(move || {
            let widths: Vec<usize> = names
                .iter()
                .map(|n| cache.files[0].floats[n].width)
                .collect();
            let mut index = 0u64;
            for file in 0..cache.files.len() {
                let total = cache.files[file].rows;
                for start in (0..total).step_by(batch_rows.max(1)) {
                    let rows = batch_rows.min(total - start);
                    let mut values: Vec<Vec<f32>> = names
                        .iter()
                        .zip(&widths)
                        .map(|(name, &w)| {
                            let mut out = vec![0.0f32; rows * w];
                            cache.read(file, name, start, &mut out);
                            out
                        })
                        .collect();
                    let x = values.remove(0);
                    let batch = Batch {
                        x,
                        columns: values,
                        tokens: cache.read_ints(file, "tokens", start, rows),
                        origin: (start..start + rows)
                            .map(|r| (file as u32, r as u32))
                            .collect(),
                        rows,
                        index,
                        ..Batch::default()
                    };
                    index += 1;
                    if sender.send(batch).is_err() {
                        return;
                    }
                }
            }
        });
        ComponentStream {
            receiver,
            handle: Some(handle),
        }
    }
}

impl Iterator for ComponentStream {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        let batch = self.receiver.recv().ok();
        if batch.is_none() {
            if let Some(handle) = self.handle.take() {
                let _ = handle.join();
            }
        }
        batch.map(Ok)
    }
}
