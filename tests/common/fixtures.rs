//! Reading what the ecosystem's fixtures and our commands write: f32/u32 tensors, sparsify's
//! FVU, and `sae encode`'s codes as a dense matrix.

use std::path::Path;

use safetensors::SafeTensors;

use super::sae_ok;

/// A little-endian 4-byte tensor as f32, with its shape.
pub fn read_f32(path: &Path, name: &str) -> (Vec<f32>, Vec<usize>) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap();
    let data = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    (data, view.shape().to_vec())
}

/// A little-endian 4-byte tensor as u32.
pub fn read_u32(path: &Path, name: &str) -> Vec<u32> {
    let (values, _) = read_f32(path, name);
    values.into_iter().map(f32::to_bits).collect()
}

/// sparsify's FVU (centred by the mean row) of predictions `y_hat` of `y`, in f64.
pub fn fvu(y: &[f32], y_hat: &[f32], d: usize) -> f64 {
    let rows = y.len() / d;
    let mut mean = vec![0.0f64; d];
    for row in y.chunks_exact(d) {
        for (m, v) in mean.iter_mut().zip(row) {
            *m += f64::from(*v) / rows as f64;
        }
    }
    let (mut sse, mut var) = (0.0, 0.0);
    for (row, row_hat) in y.chunks_exact(d).zip(y_hat.chunks_exact(d)) {
        for c in 0..d {
            sse += (f64::from(row[c]) - f64::from(row_hat[c])).powi(2);
            var += (f64::from(row[c]) - mean[c]).powi(2);
        }
    }
    sse / var
}

/// `sae encode SAE ROWS --out OUT --values f32` of the `n` rows in `rows_path` (written as
/// `rows.safetensors`), as dense codes [n, d_sae].
pub fn encoded_dense(sae: &Path, rows_path: &Path, out: &Path, n: usize, d_sae: usize) -> Vec<f32> {
    sae_ok(&[
        "encode".as_ref(),
        sae.as_os_str(),
        rows_path.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
        "--values".as_ref(),
        "f32".as_ref(),
        "--quiet".as_ref(),
    ]);
    let coded = out.join("rows.safetensors");
    let idx = read_u32(&coded, "indices");
    let (val, val_shape) = read_f32(&coded, "values");
    let k = val_shape[1];
    let mut dense = vec![0.0f32; n * d_sae];
    for r in 0..n {
        for j in 0..k {
            let v = val[r * k + j];
            if v != 0.0 {
                dense[r * d_sae + idx[r * k + j] as usize] += v;
            }
        }
    }
    dense
}
