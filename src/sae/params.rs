//! SAE parameters on the host, in the notation of REFERENCE.md:
//! W_enc [d_in, d_sae], b_enc [d_sae], W_dec [d_sae, d_out], b_dec [d_out], where d_out is d_in
//! for an SAE and the target's width for a transcoder (which may add W_skip [d_out, d_in]).

use rand::{Rng, SeedableRng};

use crate::gpu::kernels::input_norm::RowNorm;
use rand_chacha::ChaCha8Rng;

/// Which activation the SAE applies; all share the same weights layout.
#[derive(Clone, Debug, PartialEq)]
pub enum Activation {
    /// Keep the k largest of ReLU(h) per row.
    TopK { k: usize },
    /// f = ReLU(h) (SAELens `standard`).
    Relu,
    /// f = h · 1{h > θ_i} (SAELens `jumprelu`).
    JumpRelu { threshold: Vec<f32> },
    /// SAELens `gated`: with h = (x − b_dec)·W_enc (b_enc is zero), f = 1{h + b_gate > 0} ·
    /// ReLU(exp(r_mag) ⊙ h + b_mag).
    Gated {
        b_gate: Vec<f32>,
        r_mag: Vec<f32>,
        b_mag: Vec<f32>,
    },
}

impl Activation {
    /// The SAELens architecture name of this activation.
    pub fn name(&self) -> &'static str {
        match self {
            Activation::TopK { .. } => "topk",
            Activation::Relu => "standard",
            Activation::JumpRelu { .. } => "jumprelu",
            Activation::Gated { .. } => "gated",
        }
    }
}

/// A per-row normalisation of the input that the SAE applies at run time and undoes on its
/// output (SAELens `normalize_activations`; sae_lens/saes/sae.py,
/// `_setup_activation_normalization`). Constant scales and whitening are folded into the
/// weights when an SAE is loaded instead.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum InputNorm {
    #[default]
    None,
    /// x ← x·√d_in/‖x‖, x̂ ← x̂·‖x‖/√d_in.
    ConstantNormRescale,
    /// x ← (x − μ)/(σ + 10⁻⁵) with σ the unbiased standard deviation, x̂ ← x̂·σ + μ.
    LayerNorm,
}

impl InputNorm {
    /// The GPU kernel's mode, or `None` when there is nothing to do per row.
    pub fn row_norm(self) -> Option<RowNorm> {
        match self {
            InputNorm::None => None,
            InputNorm::ConstantNormRescale => Some(RowNorm::ConstantNormRescale),
            InputNorm::LayerNorm => Some(RowNorm::LayerNorm),
        }
    }
}

/// What makes a sparse coder a transcoder: its decoder writes another activation (of width
/// `d_out`) than the one its encoder reads, the encoder reads the input uncentred (b_dec is the
/// target's bias, not the input's), and an optional linear path adds x·W_skipᵀ.
#[derive(Clone, Debug, PartialEq)]
pub struct Transcoding {
    pub d_out: usize,
    /// W_skip [d_out, d_in] (the layout of SAELens and sparsify).
    pub w_skip: Option<Vec<f32>>,
}

#[derive(Clone, Debug)]
pub struct SaeParams {
    pub input_norm: InputNorm,
    pub d_in: usize,
    pub d_sae: usize,
    pub activation: Activation,
    pub w_enc: Vec<f32>,
    pub b_enc: Vec<f32>,
    /// [d_sae, d_out].
    pub w_dec: Vec<f32>,
    /// [d_out].
    pub b_dec: Vec<f32>,
    /// `None` for an SAE (the decoder reconstructs its own input).
    pub transcoder: Option<Transcoding>,
}

impl SaeParams {
    /// sparsify's initialisation: each latent's encoder vector u/√d_in with u uniform in
    /// [−1, 1]^d_in (PyTorch's `Linear` init), its decoder row the same direction at unit norm.
    /// So W_enc = W_decᵀ up to a per-latent scale (≈ 1/√3); biases start at zero (b_dec is set
    /// from data afterwards).
    pub fn init_topk(d_in: usize, d_sae: usize, k: usize, seed: u64) -> SaeParams {
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5ae_1417);
        let u: Vec<f32> = (0..d_sae * d_in)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        let mut w_dec = u.clone();
        for row in w_dec.chunks_exact_mut(d_in) {
            let norm = row
                .iter()
                .map(|v| f64::from(*v).powi(2))
                .sum::<f64>()
                .sqrt() as f32;
            let scale = 1.0 / (norm + f32::EPSILON);
            row.iter_mut().for_each(|v| *v *= scale);
        }
        let inv_sqrt_d = 1.0 / (d_in as f32).sqrt();
        let mut w_enc = vec![0.0f32; d_in * d_sae];
        for i in 0..d_sae {
            for c in 0..d_in {
                w_enc[c * d_sae + i] = u[i * d_in + c] * inv_sqrt_d;
            }
        }
        SaeParams {
            input_norm: Default::default(),
            d_in,
            d_sae,
            activation: Activation::TopK { k },
            w_enc,
            b_enc: vec![0.0; d_sae],
            w_dec,
            b_dec: vec![0.0; d_in],
            transcoder: None,
        }
    }

    /// A transcoder of this SAE's encoder writing `d_out` values through the decoder rows
    /// `w_dec` ([d_sae, d_out]); b_dec zeros (set from data afterwards), and with `skip` a zero
    /// W_skip (sparsify's start: the skip path learns from nothing).
    pub fn into_transcoder(mut self, d_out: usize, w_dec: Vec<f32>, skip: bool) -> SaeParams {
        assert_eq!(
            w_dec.len(),
            self.d_sae * d_out,
            "decoder rows of width d_out"
        );
        self.w_dec = w_dec;
        self.b_dec = vec![0.0; d_out];
        self.transcoder = Some(Transcoding {
            d_out,
            w_skip: skip.then(|| vec![0.0; d_out * self.d_in]),
        });
        self
    }

    /// b_enc = −mean·W_enc: the pre-activations start centred on the data, as subtracting b_dec
    /// centres an SAE's (sparsify's start for a transcoder, whose input b_dec does not centre).
    pub fn centre_pre_activations(&mut self, mean: &[f32]) {
        let n = self.d_sae;
        for (i, b) in self.b_enc.iter_mut().enumerate() {
            let dot: f64 = mean
                .iter()
                .enumerate()
                .map(|(c, &m)| f64::from(m) * f64::from(self.w_enc[c * n + i]))
                .sum();
            *b = -dot as f32;
        }
    }

    /// Anthropic's April 2024 initialisation for ReLU + L1 (SAELens `standard` with
    /// `decoder_init_norm` 0.1): random decoder directions at norm 0.1, W_enc = W_decᵀ, biases
    /// zero. `k` caps the codes kept per row while training.
    pub fn init_relu(d_in: usize, d_sae: usize, k: usize, seed: u64) -> SaeParams {
        let mut params = SaeParams::init_topk(d_in, d_sae, k, seed);
        params.w_dec.iter_mut().for_each(|v| *v *= 0.1);
        params.w_enc = params.w_dec_transposed();
        params
    }

    /// The decoder's width: d_in for an SAE, the target's for a transcoder.
    pub fn d_out(&self) -> usize {
        self.transcoder.as_ref().map_or(self.d_in, |t| t.d_out)
    }

    pub fn is_transcoder(&self) -> bool {
        self.transcoder.is_some()
    }

    /// W_skip [d_out, d_in], for a skip-transcoder.
    pub fn w_skip(&self) -> Option<&[f32]> {
        self.transcoder.as_ref()?.w_skip.as_deref()
    }

    pub fn k(&self) -> Option<usize> {
        match self.activation {
            Activation::TopK { k } => Some(k),
            _ => None,
        }
    }

    /// W_decᵀ ([d_out, d_sae]; for an SAE the layout of W_enc).
    pub fn w_dec_transposed(&self) -> Vec<f32> {
        let (d, n) = (self.d_out(), self.d_sae);
        let mut out = vec![0.0f32; d * n];
        for i in 0..n {
            for c in 0..d {
                out[c * n + i] = self.w_dec[i * d + c];
            }
        }
        out
    }

    /// W_enc transposed to [d_sae, d_in] (sparsify's `encoder.weight`).
    pub fn w_enc_transposed(&self) -> Vec<f32> {
        let (d, n) = (self.d_in, self.d_sae);
        let mut out = vec![0.0f32; n * d];
        for c in 0..d {
            for i in 0..n {
                out[i * d + c] = self.w_enc[c * n + i];
            }
        }
        out
    }

    /// Folds an input scale into the weights: a model trained on x / s becomes one on x with
    /// the same latents up to the factor s (f' = s·f, TopK selection unchanged, decoder rows
    /// still unit norm): b_enc ← s·b_enc, b_dec ← s·b_dec.
    pub fn fold_input_scale(&mut self, scale: f32) {
        self.fold_scales(scale, scale);
    }

    /// [`SaeParams::fold_input_scale`] for a transcoder trained on x / s_x to predict y / s_y:
    /// the codes become s_x·f, so W_dec ← (s_y/s_x)·W_dec, b_dec ← s_y·b_dec and
    /// W_skip ← (s_y/s_x)·W_skip (the same as the SAE's fold when s_y = s_x).
    pub fn fold_scales(&mut self, s_x: f32, s_y: f32) {
        self.b_enc.iter_mut().for_each(|v| *v *= s_x);
        self.b_dec.iter_mut().for_each(|v| *v *= s_y);
        if s_x != s_y {
            let ratio = s_y / s_x;
            self.w_dec.iter_mut().for_each(|v| *v *= ratio);
            if let Some(w) = self.transcoder.as_mut().and_then(|t| t.w_skip.as_mut()) {
                w.iter_mut().for_each(|v| *v *= ratio);
            }
        }
        match &mut self.activation {
            Activation::JumpRelu { threshold } => threshold.iter_mut().for_each(|v| *v *= s_x),
            Activation::Gated { b_gate, b_mag, .. } => {
                b_gate.iter_mut().for_each(|v| *v *= s_x);
                b_mag.iter_mut().for_each(|v| *v *= s_x);
            }
            Activation::TopK { .. } | Activation::Relu => {}
        }
    }

    /// Names the first tensor holding a NaN or Inf, if any.
    pub fn first_non_finite(&self) -> Option<&'static str> {
        [
            ("W_enc", self.w_enc.as_slice()),
            ("b_enc", &self.b_enc),
            ("W_dec", &self.w_dec),
            ("b_dec", &self.b_dec),
        ]
        .into_iter()
        .chain(self.w_skip().map(|w| ("W_skip", w)))
        .find(|(_, v)| v.iter().any(|x| !x.is_finite()))
        .map(|(name, _)| name)
    }
}
