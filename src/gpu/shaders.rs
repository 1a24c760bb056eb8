//! The registry of WGSL sources: every `shaders/*.wgsl` is included once, here, with the
//! names of its binding slots.

use super::bindings::{self, Slots};

/// One WGSL file per kernel family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Shader {
    EncoderGemm,
    TopK,
    Decoder,
    Backward,
    Optim,
    Reduce,
    Hist,
    CooccurrencePairs,
    InputNorm,
    Gated,
    Widen,
    BatchTopK,
    Penalty,
    JumpRelu,
    EncoderCoop,
    Skip,
    PairDot,
}

impl Shader {
    pub fn name(self) -> &'static str {
        match self {
            Shader::EncoderGemm => "encoder_gemm",
            Shader::TopK => "topk",
            Shader::Decoder => "decoder",
            Shader::Backward => "backward",
            Shader::Optim => "optim",
            Shader::Reduce => "reduce",
            Shader::Hist => "hist",
            Shader::CooccurrencePairs => "cooccurrence_pairs",
            Shader::InputNorm => "input_norm",
            Shader::Gated => "gated",
            Shader::Widen => "widen",
            Shader::BatchTopK => "batch_topk",
            Shader::Penalty => "penalty",
            Shader::JumpRelu => "jumprelu",
            Shader::EncoderCoop => "encoder_coop",
            Shader::Skip => "skip",
            Shader::PairDot => "pair_dot",
        }
    }

    /// Shared helpers every shader's source may use (shaders/common.wgsl).
    pub fn prelude(self) -> &'static str {
        include_str!("../../shaders/common.wgsl")
    }

    /// The names of its binding slots (super::bindings).
    pub fn slots(self) -> Slots {
        match self {
            Shader::EncoderGemm => bindings::encoder_gemm::ALL,
            Shader::TopK => bindings::topk::ALL,
            Shader::Decoder => bindings::decoder::ALL,
            Shader::Backward => bindings::backward::ALL,
            Shader::Optim => bindings::optim::ALL,
            Shader::Reduce => bindings::reduce::ALL,
            Shader::Hist => bindings::hist::ALL,
            Shader::CooccurrencePairs => bindings::cooccurrence_pairs::ALL,
            Shader::InputNorm => bindings::input_norm::ALL,
            Shader::Gated => bindings::gated::ALL,
            Shader::Widen => bindings::widen::ALL,
            Shader::BatchTopK => bindings::batch_topk::ALL,
            Shader::Penalty => bindings::penalty::ALL,
            Shader::JumpRelu => bindings::jumprelu::ALL,
            Shader::EncoderCoop => bindings::encoder_coop::ALL,
            Shader::Skip => bindings::skip::ALL,
            Shader::PairDot => bindings::pair_dot::ALL,
        }
    }

    /// `const BIND_NAME: u32 = slot;` for each binding slot, which the WGSL's `@binding(…)`
    /// attributes name.
    pub fn slots_header(self) -> String {
        self.slots()
            .iter()
            .map(|(name, slot)| format!("const BIND_{name}: u32 = {slot}u;\n"))
            .collect()
    }

    pub fn source(self) -> &'static str {
        match self {
            Shader::EncoderGemm => include_str!("../../shaders/encoder_gemm.wgsl"),
            Shader::TopK => include_str!("../../shaders/topk.wgsl"),
            Shader::Decoder => include_str!("../../shaders/decoder.wgsl"),
            Shader::Backward => include_str!("../../shaders/backward.wgsl"),
            Shader::Optim => include_str!("../../shaders/optim.wgsl"),
            Shader::Reduce => include_str!("../../shaders/reduce.wgsl"),
            Shader::Hist => include_str!("../../shaders/hist.wgsl"),
            Shader::CooccurrencePairs => include_str!("../../shaders/cooccurrence_pairs.wgsl"),
            Shader::InputNorm => include_str!("../../shaders/input_norm.wgsl"),
            Shader::Gated => include_str!("../../shaders/gated.wgsl"),
            Shader::Widen => include_str!("../../shaders/widen.wgsl"),
            Shader::BatchTopK => include_str!("../../shaders/batch_topk.wgsl"),
            Shader::Penalty => include_str!("../../shaders/penalty.wgsl"),
            Shader::JumpRelu => include_str!("../../shaders/jumprelu.wgsl"),
            Shader::EncoderCoop => include_str!("../../shaders/encoder_coop.wgsl"),
            Shader::Skip => include_str!("../../shaders/skip.wgsl"),
            Shader::PairDot => include_str!("../../shaders/pair_dot.wgsl"),
        }
    }

    /// What must open the module: extensions it enables, and (for the cooperative-matrix
    /// shader) its tile types for the tile edge `T` among `defines`.
    pub fn preamble(self, defines: &[(&'static str, u32)]) -> String {
        match self {
            Shader::EncoderCoop => {
                let t = defines
                    .iter()
                    .find(|(name, _)| *name == "T")
                    .map_or(16, |&(_, v)| v);
                format!(
                    "enable f16;\nenable wgpu_cooperative_matrix;\n\
                     alias tile_a = coop_mat{t}x{t}<f16, A>;\n\
                     alias tile_b = coop_mat{t}x{t}<f16, B>;\n\
                     alias tile_acc = coop_mat{t}x{t}<f32, C>;\n"
                )
            }
            _ => String::new(),
        }
    }
}

/// The element type a kernel reads its activations in. The only text substitution we do:
/// a generated header defines `in_t` (and enables f16 when needed).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum InputPrecision {
    F32,
    F16,
}

impl InputPrecision {
    pub fn header(self) -> &'static str {
        match self {
            InputPrecision::F32 => "alias in_t = f32;\n",
            InputPrecision::F16 => "enable f16;\nalias in_t = f16;\n",
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            InputPrecision::F32 => 4,
            InputPrecision::F16 => 2,
        }
    }
}
