//! Encoder GEMM tile tuning: the candidate tile shapes timed at a run's shape, the fastest
//! cached per adapter, driver and shape (sizes rounded up to powers of two) in the user's cache
//! directory. Tile shapes never change results (the k order of every sum is the same), only
//! speed, so a cached choice is safe to reuse and to drop.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::kernels::encoder::{launch_encode_gemm, EncoderShape, GemmTiles};
use super::{Gpu, GpuBuffer, GpuResult, InputPrecision, Recorder};

/// The tuning cache file: `$SAE_CACHE_DIR`, else `$XDG_CACHE_HOME/sae-wgpu`, else
/// `~/.cache/sae-wgpu`; `gemm-tiles.json` inside.
pub fn cache_path() -> Option<PathBuf> {
    let dir = std::env::var_os("SAE_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("sae-wgpu")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/sae-wgpu")))?;
    Some(dir.join("gemm-tiles.json"))
}

#[derive(Default, Serialize, Deserialize)]
struct CacheFile {
    /// The candidate set the entries were chosen from; entries of another set are dropped.
    candidates: Vec<String>,
    entries: BTreeMap<String, CacheEntry>,
}

#[derive(Clone, Serialize, Deserialize)]
struct CacheEntry {
    tiles: String,
    /// Milliseconds per GEMM of each candidate timed.
    timings: BTreeMap<String, f64>,
}

fn candidate_labels() -> Vec<String> {
    GemmTiles::CANDIDATES.iter().map(GemmTiles::label).collect()
}

/// The cache key: adapter, backend, driver and the shape rounded up to powers of two.
fn key(gpu: &Gpu, shape: EncoderShape) -> String {
    let p2 = |v: usize| v.max(1).next_power_of_two();
    format!(
        "{} | {:?} | {} {} | {}x{}x{}",
        gpu.info.name,
        gpu.info.backend,
        gpu.info.driver,
        gpu.info.driver_info,
        p2(shape.rows),
        p2(shape.d_in),
        p2(shape.d_sae)
    )
}

fn load() -> CacheFile {
    let Some(path) = cache_path() else {
        return CacheFile::default();
    };
    let file: CacheFile = std::fs::read_to_string(&path)
        .ok()
        .and_then(|text| serde_json::from_str(&text).ok())
        .unwrap_or_default();
    if file.candidates == candidate_labels() {
        file
    } else {
        CacheFile::default()
    }
}

/// The cached tile shape for this adapter and shape, if one was tuned.
pub fn cached(gpu: &Gpu, shape: EncoderShape) -> Option<GemmTiles> {
    load()
        .entries
        .get(&key(gpu, shape))
        .and_then(|e| GemmTiles::parse(&e.tiles))
        .filter(|t| t.fits(&gpu.limits))
}

/// What a tuning run found.
#[derive(Clone, Debug, Serialize)]
pub struct Tuned {
    pub best: String,
    /// (tiles, milliseconds per GEMM, median of the repetitions) for every candidate that fits.
    pub timings: Vec<(String, f64)>,
    pub shape: String,
    pub timing_method: &'static str,
    /// Where the choice was stored, if it could be.
    pub cache: Option<String>,
}

/// Milliseconds of one GEMM at `shape` with `tiles` (median of `reps` after a warm-up).
pub fn time_gemm(gpu: &Gpu, shape: EncoderShape, tiles: GemmTiles, reps: usize) -> GpuResult<f64> {
    let op = GemmOperands::new(gpu, shape)?;
    time_recording(gpu, reps, |rec| {
        launch_encode_gemm(
            rec,
            &op.x,
            InputPrecision::F32,
            &op.w_enc,
            &op.b_dec,
            &op.b_enc,
            &op.h,
            shape,
            tiles,
        )
    })
}

/// Stand-in operands of the encoder GEMM at a shape, for timing (the values do not matter).
pub struct GemmOperands {
    pub x: GpuBuffer,
    pub w_enc: GpuBuffer,
    pub b_dec: GpuBuffer,
    pub b_enc: GpuBuffer,
    pub h: GpuBuffer,
}

impl GemmOperands {
    pub fn new(gpu: &Gpu, shape: EncoderShape) -> GpuResult<GemmOperands> {
        let EncoderShape { rows, d_in, d_sae } = shape;
        Ok(GemmOperands {
            x: gpu.upload("x", &vec![0.5f32; rows * d_in])?,
            w_enc: gpu.upload("w_enc", &vec![0.01f32; d_in * d_sae])?,
            b_dec: gpu.storage::<f32>("b_dec", d_in)?,
            b_enc: gpu.storage::<f32>("b_enc", d_sae)?,
            h: gpu.storage::<f32>("h", rows * d_sae)?,
        })
    }
}

/// The median GPU time (ms) of what `record` records, over `reps` repetitions after one
/// warm-up: GPU timestamps where the adapter has them, else wall time around a wait.
pub fn time_recording(
    gpu: &Gpu,
    reps: usize,
    record: impl Fn(&mut Recorder<'_>) -> GpuResult<()>,
) -> GpuResult<f64> {
    let reps = reps.max(1);
    let mut warm = Recorder::new(gpu, "timing warm-up");
    record(&mut warm)?;
    warm.submit()?;
    gpu.wait()?;
    let mut times = Vec::with_capacity(reps);
    if gpu.has_timestamps() {
        let mut rec = Recorder::timed(gpu, "timing", reps as u32)?;
        for _ in 0..reps {
            record(&mut rec)?;
        }
        times.extend(rec.submit_timed()?.into_iter().map(|(_, _, ms)| ms));
    } else {
        for _ in 0..reps {
            let mut rec = Recorder::new(gpu, "timing");
            record(&mut rec)?;
            let start = Instant::now();
            rec.submit()?;
            gpu.wait()?;
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    times.sort_by(f64::total_cmp);
    Ok(times[times.len() / 2])
}

/// Times every candidate that fits the adapter at `shape`, stores the fastest in the cache
/// and returns what was measured.
pub fn tune(gpu: &Gpu, shape: EncoderShape, reps: usize) -> GpuResult<Tuned> {
    let mut timings = Vec::new();
    for tiles in GemmTiles::CANDIDATES.iter().filter(|t| t.fits(&gpu.limits)) {
        let ms = time_gemm(gpu, shape, *tiles, reps.max(1))?;
        timings.push((tiles.label(), ms));
    }
    let best = timings
        .iter()
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(label, _)| label.clone())
        .unwrap_or_else(|| GemmTiles::default().label());
    let mut file = load();
    file.candidates = candidate_labels();
    file.entries.insert(
        key(gpu, shape),
        CacheEntry {
            tiles: best.clone(),
            timings: timings.iter().cloned().collect(),
        },
    );
    let cache = cache_path().and_then(|path| {
        let stored = path
            .parent()
            .map(std::fs::create_dir_all)
            .transpose()
            .ok()
            .and_then(|_| write_atomic(&path, &file).ok());
        stored.map(|_| path.display().to_string())
    });
    Ok(Tuned {
        best,
        timings,
        shape: format!("{}x{}x{}", shape.rows, shape.d_in, shape.d_sae),
        timing_method: if gpu.has_timestamps() {
            "gpu_timestamps"
        } else {
            "wall_clock"
        },
        cache,
    })
}

/// Writes `value` as JSON to `path` through a temporary file and a rename (concurrent runs
/// never see half a file).
fn write_atomic(path: &std::path::Path, value: &impl Serialize) -> std::io::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(std::io::Error::other)?;
    let temp = path.with_extension(format!("json.tmp-{}", std::process::id()));
    std::fs::write(&temp, text)?;
    std::fs::rename(&temp, path)
}

/// The tiles a run at `shape` should use: the cached choice, or (with `tune_if_new`) a fresh
/// tuning when there is none; the default otherwise. `on_tune` is told before tuning starts.
pub fn tiles_for(
    gpu: &Gpu,
    shape: EncoderShape,
    tune_if_new: bool,
    on_tune: impl FnOnce(),
) -> GpuResult<GemmTiles> {
    if let Some(tiles) = cached(gpu, shape) {
        return Ok(tiles);
    }
    if !tune_if_new {
        return Ok(GemmTiles::default());
    }
    on_tune();
    let reps = if gpu.info.device_type == wgpu::DeviceType::Cpu {
        2
    } else {
        10
    };
    let tuned = tune(gpu, shape, reps)?;
    Ok(GemmTiles::parse(&tuned.best).unwrap_or_default())
}
