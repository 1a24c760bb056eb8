//! The matrix units (tensor cores) through wgpu's cooperative matrices: which configurations an
//! adapter offers, the tile the f16 encoder GEMM uses on it, and how a command chooses between
//! that path and the f32 one (`--matmul auto|f32|f16`).

use serde::Serialize;

use super::error::{GpuError, GpuResult};
use crate::choice::Choice;

/// One matrix shape and type pair an adapter's matrix units run: M×K by K×N into M×N.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CoopConfig {
    pub m: u32,
    pub n: u32,
    pub k: u32,
    /// Operand and accumulator element types.
    pub ab: &'static str,
    pub cr: &'static str,
    pub saturating: bool,
}

fn scalar(t: wgpu::CooperativeScalarType) -> &'static str {
    match t {
        wgpu::CooperativeScalarType::F32 => "f32",
        wgpu::CooperativeScalarType::F16 => "f16",
        wgpu::CooperativeScalarType::I32 => "i32",
        wgpu::CooperativeScalarType::U32 => "u32",
    }
}

/// The configurations the adapter reports (none without cooperative matrices).
pub fn configs(adapter: &wgpu::Adapter) -> Vec<CoopConfig> {
    adapter
        .cooperative_matrix_properties()
        .into_iter()
        .map(|p| CoopConfig {
            m: p.m_size,
            n: p.n_size,
            k: p.k_size,
            ab: scalar(p.ab_type),
            cr: scalar(p.cr_type),
            saturating: p.saturating_accumulation,
        })
        .collect()
}

/// The square tile edge for f16 × f16 → f32 the adapter runs (16 before 8), if any.
pub fn f16_tile(configs: &[CoopConfig]) -> Option<u32> {
    [16, 8].into_iter().find(|&t| {
        configs
            .iter()
            .any(|c| c.m == t && c.n == t && c.k == t && c.ab == "f16" && c.cr == "f32")
    })
}

/// How the f16 encoder GEMM is laid out on an adapter: the tile edge, and its workgroups as
/// whole subgroups (each subgroup owns its own output tiles).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct CoopTile {
    /// T of the T×T×T matrix operations.
    pub edge: u32,
    /// Invocations per subgroup the workgroup is sized for.
    pub subgroup_size: u32,
    /// Subgroups per workgroup. 1 where the adapter's subgroup size varies (the workgroup is
    /// one largest subgroup; smaller ones would each compute its tiles, redundantly but
    /// correctly).
    pub subgroups: u32,
}

impl CoopTile {
    /// The layout for tile edge `edge` on an adapter whose subgroups have `min..=max`
    /// invocations.
    pub fn new(edge: u32, subgroup_min: u32, subgroup_max: u32) -> CoopTile {
        let size = subgroup_max.max(1);
        let subgroups = if subgroup_min == subgroup_max {
            (128 / size).clamp(1, 8)
        } else {
            1
        };
        CoopTile {
            edge,
            subgroup_size: size,
            subgroups,
        }
    }

    pub fn invocations(self) -> u32 {
        self.subgroup_size * self.subgroups
    }

    /// "coop8x8/16x8": the tile edge, then subgroup size × subgroups per workgroup.
    pub fn label(self) -> String {
        let t = self.edge;
        format!("coop{t}x{t}/{}x{}", self.subgroup_size, self.subgroups)
    }
}

/// What f16 could not hold: rows with a value that is not finite (they stay inf/NaN, as in
/// f32) and weights clamped to ±65504.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct F16Overflow {
    pub rows: u32,
    pub weights: u32,
}

/// What `--matmul` asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MatmulChoice {
    /// f16 operands on the matrix units where the adapter has them, f32 elsewhere (as
    /// PyTorch's autocast would).
    #[default]
    Auto,
    F32,
    F16,
}

impl Choice for MatmulChoice {
    const CHOICES: &'static [(&'static str, Self, &'static str)] = &[
        (
            "auto",
            MatmulChoice::Auto,
            "f16 on the matrix units where the adapter has cooperative matrices, f32 elsewhere",
        ),
        (
            "f32",
            MatmulChoice::F32,
            "f32 operands on the ordinary cores",
        ),
        (
            "f16",
            MatmulChoice::F16,
            "f16 operands, f32 accumulation, on the matrix units (cooperative matrices)",
        ),
    ];
}

/// How the dense products run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "matmul", rename_all = "lowercase")]
pub enum Matmul {
    F32,
    F16(CoopTile),
}

impl Matmul {
    pub fn name(self) -> &'static str {
        match self {
            Matmul::F32 => "f32",
            Matmul::F16(_) => "f16",
        }
    }

    /// The f16 layout, or `None` in f32.
    pub fn tile(self) -> Option<CoopTile> {
        match self {
            Matmul::F32 => None,
            Matmul::F16(tile) => Some(tile),
        }
    }

    /// `choice` on an adapter whose f16 layout is `coop` (`None`: no cooperative matrices).
    pub fn resolve(choice: MatmulChoice, coop: Option<CoopTile>, adapter: &str) -> GpuResult<Self> {
        match (choice, coop) {
            (MatmulChoice::F32, _) | (MatmulChoice::Auto, None) => Ok(Matmul::F32),
            (_, Some(tile)) => Ok(Matmul::F16(tile)),
            (MatmulChoice::F16, None) => Err(GpuError::Unsupported {
                what: "--matmul f16".into(),
                message: format!(
                    "adapter '{adapter}' has no cooperative matrices for f16 × f16 → f32 (wgpu's EXPERIMENTAL_COOPERATIVE_MATRIX with SHADER_F16 and SUBGROUP: Vulkan's VK_KHR_cooperative_matrix, or Metal on Apple7+); use --matmul f32 or auto"
                ),
            }),
        }
    }
}
