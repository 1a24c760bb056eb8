//! The binding slots of every shader, named once. The WGSL refers to each slot by name
//! (`@binding(BIND_X_HAT)`), defined by the header the pipeline cache generates from these
//! lists (super::shaders); the launch wrappers (super::kernels) bind buffers by the same names.
//! Slot 0 of every shader is its uniform parameters, which the recorder binds itself. Each
//! entry point's bind-group layout is derived from the slots it uses (wgpu's automatic
//! layout), so a launch binds exactly what its entry reads.

/// A shader's slots: (name, index).
pub type Slots = &'static [(&'static str, u32)];

/// shaders/backward.wgsl
pub mod backward {
    pub const PARAMS: u32 = 0;
    pub const X_HAT: u32 = 1;
    pub const X: u32 = 2;
    pub const STATS: u32 = 3;
    pub const GRAD_OUT: u32 = 4;
    pub const TOP_IDX: u32 = 5;
    pub const TOP_VAL: u32 = 6;
    pub const W_DEC: u32 = 7;
    pub const CODE_GRAD_OUT: u32 = 8;
    pub const ROW_BITS: u32 = 9;
    pub const COUNTS: u32 = 10;
    pub const OFFSETS: u32 = 11;
    pub const REVERSE_INDEX: u32 = 12;
    pub const B_DEC: u32 = 13;
    pub const GRAD_W_DEC: u32 = 14;
    pub const GRAD_W_ENC: u32 = 15;
    pub const GRAD_B_ENC: u32 = 16;
    pub const W_ENC: u32 = 17;
    pub const GRAD_B_DEC: u32 = 18;
    pub const E_HAT: u32 = 19;
    pub const AUX_DIFF: u32 = 20;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("X_HAT", X_HAT),
        ("X", X),
        ("STATS", STATS),
        ("GRAD_OUT", GRAD_OUT),
        ("TOP_IDX", TOP_IDX),
        ("TOP_VAL", TOP_VAL),
        ("W_DEC", W_DEC),
        ("CODE_GRAD_OUT", CODE_GRAD_OUT),
        ("ROW_BITS", ROW_BITS),
        ("COUNTS", COUNTS),
        ("OFFSETS", OFFSETS),
        ("REVERSE_INDEX", REVERSE_INDEX),
        ("B_DEC", B_DEC),
        ("GRAD_W_DEC", GRAD_W_DEC),
        ("GRAD_W_ENC", GRAD_W_ENC),
        ("GRAD_B_ENC", GRAD_B_ENC),
        ("W_ENC", W_ENC),
        ("GRAD_B_DEC", GRAD_B_DEC),
        ("E_HAT", E_HAT),
        ("AUX_DIFF", AUX_DIFF),
    ];
}

/// shaders/skip.wgsl
pub mod skip {
    pub const PARAMS: u32 = 0;
    pub const X: u32 = 1;
    pub const G: u32 = 2;
    pub const GRAD_SKIP_T: u32 = 3;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("X", X),
        ("G", G),
        ("GRAD_SKIP_T", GRAD_SKIP_T),
    ];
}

/// shaders/batch_topk.wgsl
pub mod batch_topk {
    pub const PARAMS: u32 = 0;
    pub const TOP_VAL: u32 = 1;
    pub const STATE: u32 = 2;

    pub const ALL: super::Slots = &[("PARAMS", PARAMS), ("TOP_VAL", TOP_VAL), ("STATE", STATE)];
}

/// shaders/cooccurrence_pairs.wgsl
pub mod cooccurrence_pairs {
    pub const PARAMS: u32 = 0;
    pub const ENTRY_UNIT: u32 = 1;
    pub const UNIT_START: u32 = 2;
    pub const UNIT_FEATURES: u32 = 3;
    pub const COUNTS: u32 = 4;
    pub const FEATURE_UNITS: u32 = 5;
    pub const SCORES: u32 = 6;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("ENTRY_UNIT", ENTRY_UNIT),
        ("UNIT_START", UNIT_START),
        ("UNIT_FEATURES", UNIT_FEATURES),
        ("COUNTS", COUNTS),
        ("FEATURE_UNITS", FEATURE_UNITS),
        ("SCORES", SCORES),
    ];
}

/// shaders/decoder.wgsl
pub mod decoder {
    pub const PARAMS: u32 = 0;
    pub const TOP_IDX: u32 = 1;
    pub const TOP_VAL: u32 = 2;
    pub const W_DEC: u32 = 3;
    pub const B_DEC: u32 = 4;
    pub const X_HAT: u32 = 5;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("TOP_IDX", TOP_IDX),
        ("TOP_VAL", TOP_VAL),
        ("W_DEC", W_DEC),
        ("B_DEC", B_DEC),
        ("X_HAT", X_HAT),
    ];
}

/// shaders/encoder_gemm.wgsl
pub mod encoder_gemm {
    pub const PARAMS: u32 = 0;
    pub const X: u32 = 1;
    pub const W_ENC: u32 = 2;
    pub const B_DEC: u32 = 3;
    pub const B_ENC: u32 = 4;
    pub const H: u32 = 5;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("X", X),
        ("W_ENC", W_ENC),
        ("B_DEC", B_DEC),
        ("B_ENC", B_ENC),
        ("H", H),
    ];
}

/// shaders/gated.wgsl
pub mod gated {
    pub const PARAMS: u32 = 0;
    pub const H: u32 = 1;
    pub const B_GATE: u32 = 2;
    pub const MAG_SCALE: u32 = 3;
    pub const B_MAG: u32 = 4;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("H", H),
        ("B_GATE", B_GATE),
        ("MAG_SCALE", MAG_SCALE),
        ("B_MAG", B_MAG),
    ];
}

/// shaders/hist.wgsl
pub mod hist {
    pub const PARAMS: u32 = 0;
    pub const TOP_IDX: u32 = 1;
    pub const TOP_VAL: u32 = 2;
    pub const OFFSETS: u32 = 3;
    pub const REVERSE_INDEX: u32 = 4;
    pub const BATCH_STATS: u32 = 5;
    pub const BINS: u32 = 6;
    pub const ROW_ORIGIN: u32 = 7;
    pub const BEST_VAL: u32 = 8;
    pub const BEST_ORIGIN: u32 = 9;
    pub const SLOT_OF: u32 = 10;
    pub const PAIRS: u32 = 11;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("TOP_IDX", TOP_IDX),
        ("TOP_VAL", TOP_VAL),
        ("OFFSETS", OFFSETS),
        ("REVERSE_INDEX", REVERSE_INDEX),
        ("BATCH_STATS", BATCH_STATS),
        ("BINS", BINS),
        ("ROW_ORIGIN", ROW_ORIGIN),
        ("BEST_VAL", BEST_VAL),
        ("BEST_ORIGIN", BEST_ORIGIN),
        ("SLOT_OF", SLOT_OF),
        ("PAIRS", PAIRS),
    ];
}

/// shaders/input_norm.wgsl
pub mod input_norm {
    pub const PARAMS: u32 = 0;
    pub const X: u32 = 1;
    pub const ROW_STATS: u32 = 2;

    pub const ALL: super::Slots = &[("PARAMS", PARAMS), ("X", X), ("ROW_STATS", ROW_STATS)];
}

/// shaders/jumprelu.wgsl
pub mod jumprelu {
    pub const PARAMS: u32 = 0;
    pub const PRE: u32 = 1;
    pub const GRAD_OUT: u32 = 2;
    pub const W_DEC: u32 = 3;
    pub const NORMS: u32 = 4;
    pub const THRESHOLDS: u32 = 5;
    pub const GRAD_PARAM: u32 = 6;
    pub const PARAM: u32 = 7;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("PRE", PRE),
        ("GRAD_OUT", GRAD_OUT),
        ("W_DEC", W_DEC),
        ("NORMS", NORMS),
        ("THRESHOLDS", THRESHOLDS),
        ("GRAD_PARAM", GRAD_PARAM),
        ("PARAM", PARAM),
    ];
}

/// shaders/optim.wgsl
pub mod optim {
    pub const PARAMS: u32 = 0;
    pub const PARAM: u32 = 1;
    pub const GRAD: u32 = 2;
    pub const EXP_AVG: u32 = 3;
    pub const EXP_AVG_SQ: u32 = 4;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("PARAM", PARAM),
        ("GRAD", GRAD),
        ("EXP_AVG", EXP_AVG),
        ("EXP_AVG_SQ", EXP_AVG_SQ),
    ];
}

/// shaders/penalty.wgsl
pub mod penalty {
    pub const PARAMS: u32 = 0;
    pub const W_DEC: u32 = 1;
    pub const NORMS: u32 = 2;
    pub const TOP_IDX: u32 = 3;
    pub const TOP_VAL: u32 = 4;
    pub const CODE_GRAD: u32 = 5;
    pub const OFFSETS: u32 = 6;
    pub const REVERSE_INDEX: u32 = 7;
    pub const GRAD_W_DEC: u32 = 8;
    pub const STATS: u32 = 9;
    pub const A: u32 = 10;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("W_DEC", W_DEC),
        ("NORMS", NORMS),
        ("TOP_IDX", TOP_IDX),
        ("TOP_VAL", TOP_VAL),
        ("CODE_GRAD", CODE_GRAD),
        ("OFFSETS", OFFSETS),
        ("REVERSE_INDEX", REVERSE_INDEX),
        ("GRAD_W_DEC", GRAD_W_DEC),
        ("STATS", STATS),
        ("A", A),
    ];
}

/// shaders/reduce.wgsl
pub mod reduce {
    pub const PARAMS: u32 = 0;
    pub const A: u32 = 1;
    pub const B: u32 = 2;
    pub const PARTIAL_OUT: u32 = 3;
    pub const STATS: u32 = 4;
    pub const COL_MEAN: u32 = 5;
    pub const TOP_VAL: u32 = 6;
    pub const TOP_IDX: u32 = 7;
    pub const L0_OUT: u32 = 8;
    pub const FIRE_COUNT: u32 = 9;
    pub const SINCE_FIRED: u32 = 10;
    pub const ELIGIBLE: u32 = 11;
    pub const DEAD_COUNT: u32 = 12;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("A", A),
        ("B", B),
        ("PARTIAL_OUT", PARTIAL_OUT),
        ("STATS", STATS),
        ("COL_MEAN", COL_MEAN),
        ("TOP_VAL", TOP_VAL),
        ("TOP_IDX", TOP_IDX),
        ("L0_OUT", L0_OUT),
        ("FIRE_COUNT", FIRE_COUNT),
        ("SINCE_FIRED", SINCE_FIRED),
        ("ELIGIBLE", ELIGIBLE),
        ("DEAD_COUNT", DEAD_COUNT),
    ];
}

/// shaders/topk.wgsl
pub mod topk {
    pub const PARAMS: u32 = 0;
    pub const H: u32 = 1;
    pub const TOP_IDX: u32 = 2;
    pub const TOP_VAL: u32 = 3;
    pub const ELIGIBLE: u32 = 4;
    pub const THRESHOLD: u32 = 5;
    pub const ACTIVE_COUNT: u32 = 6;
    pub const CAND_IDX: u32 = 7;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("H", H),
        ("TOP_IDX", TOP_IDX),
        ("TOP_VAL", TOP_VAL),
        ("ELIGIBLE", ELIGIBLE),
        ("THRESHOLD", THRESHOLD),
        ("ACTIVE_COUNT", ACTIVE_COUNT),
        ("CAND_IDX", CAND_IDX),
    ];
}

/// shaders/widen.wgsl
pub mod widen {
    pub const PARAMS: u32 = 0;
    pub const RAW: u32 = 1;
    pub const X: u32 = 2;

    pub const ALL: super::Slots = &[("PARAMS", PARAMS), ("RAW", RAW), ("X", X)];
}

/// shaders/encoder_coop.wgsl
pub mod encoder_coop {
    pub const PARAMS: u32 = 0;
    pub const X: u32 = 1;
    pub const B_DEC: u32 = 2;
    pub const A: u32 = 3;
    pub const ROW_SCALE: u32 = 4;
    pub const W: u32 = 5;
    pub const W16: u32 = 6;
    pub const B_ENC: u32 = 7;
    pub const H: u32 = 8;
    pub const OVERFLOW: u32 = 9;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("X", X),
        ("B_DEC", B_DEC),
        ("A", A),
        ("ROW_SCALE", ROW_SCALE),
        ("W", W),
        ("W16", W16),
        ("B_ENC", B_ENC),
        ("H", H),
        ("OVERFLOW", OVERFLOW),
    ];
}

/// shaders/pair_dot.wgsl
pub mod pair_dot {
    pub const PARAMS: u32 = 0;
    pub const X: u32 = 1;
    pub const Y: u32 = 2;
    pub const IA: u32 = 3;
    pub const IB: u32 = 4;
    pub const OUT: u32 = 5;

    pub const ALL: super::Slots = &[
        ("PARAMS", PARAMS),
        ("X", X),
        ("Y", Y),
        ("IA", IA),
        ("IB", IB),
        ("OUT", OUT),
    ];
}
