//! Compiled shader modules and compute pipelines, each built once per process and keyed by
//! everything that changes the compiled code.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::error::{first_line, GpuError, GpuResult};
use super::shaders::{InputPrecision, Shader};

/// Names everything that changes the compiled pipeline. Constants are kept sorted so the
/// same set always makes the same key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub shader: Shader,
    pub entry: &'static str,
    pub precision: InputPrecision,
    /// `const NAME: u32 = value;` lines of the generated header (sizes WGSL needs at
    /// compile time, such as workgroup-array lengths).
    defines: Vec<(&'static str, u32)>,
    /// Values of WGSL `override` constants.
    constants: Vec<(&'static str, u64)>,
}

/// What a compiled module depends on.
type ModuleKey = (Shader, InputPrecision, Vec<(&'static str, u32)>);

impl PipelineKey {
    pub fn new(shader: Shader, entry: &'static str) -> Self {
        PipelineKey {
            shader,
            entry,
            precision: InputPrecision::F32,
            defines: Vec::new(),
            constants: Vec::new(),
        }
    }

    /// Adds `const NAME: u32 = value;` to the generated header.
    pub fn define(mut self, name: &'static str, value: u32) -> Self {
        match self.defines.binary_search_by_key(&name, |(n, _)| n) {
            Ok(i) => self.defines[i].1 = value,
            Err(i) => self.defines.insert(i, (name, value)),
        }
        self
    }

    fn header(&self) -> String {
        let mut header = self.precision.header().to_string();
        for (name, value) in &self.defines {
            header.push_str(&format!("const {name}: u32 = {value}u;\n"));
        }
        header
    }

    pub fn precision(mut self, precision: InputPrecision) -> Self {
        self.precision = precision;
        self
    }

    /// Sets a WGSL `override` constant.
    pub fn constant(mut self, name: &'static str, value: impl Into<f64>) -> Self {
        let bits = value.into().to_bits();
        match self.constants.binary_search_by_key(&name, |(n, _)| n) {
            Ok(i) => self.constants[i].1 = bits,
            Err(i) => self.constants.insert(i, (name, bits)),
        }
        self
    }

    fn label(&self) -> String {
        format!("{}::{}", self.shader.name(), self.entry)
    }
}

#[derive(Default)]
pub struct PipelineCache {
    modules: Mutex<HashMap<ModuleKey, Arc<wgpu::ShaderModule>>>,
    pipelines: Mutex<HashMap<PipelineKey, Arc<wgpu::ComputePipeline>>>,
}

fn lock_error(kernel: &str) -> GpuError {
    GpuError::Compile {
        kernel: kernel.to_string(),
        message: "pipeline cache lock poisoned".into(),
    }
}

/// Compiles WGSL source inside an error scope so a bad shader is an error value naming the
/// kernel, not a panic.
pub fn compile_module(
    device: &wgpu::Device,
    kernel: &str,
    source: &str,
) -> GpuResult<wgpu::ShaderModule> {
    let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
    let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
        label: Some(kernel),
        source: wgpu::ShaderSource::Wgsl(source.into()),
    });
    if let Some(error) = pollster::block_on(scope.pop()) {
        tracing::debug!("WGSL of {kernel} that failed to compile:\n{source}");
        return Err(GpuError::Compile {
            kernel: kernel.to_string(),
            message: first_line(&error.to_string()),
        });
    }
    Ok(module)
}

impl PipelineCache {
    fn module(
        &self,
        device: &wgpu::Device,
        key: &PipelineKey,
    ) -> GpuResult<Arc<wgpu::ShaderModule>> {
        let (shader, precision) = (key.shader, key.precision);
        let module_key: ModuleKey = (shader, precision, key.defines.clone());
        let mut modules = self.modules.lock().map_err(|_| lock_error(shader.name()))?;
        if let Some(module) = modules.get(&module_key) {
            return Ok(module.clone());
        }
        let has_f16 = device.features().contains(wgpu::Features::SHADER_F16);
        if precision == InputPrecision::F16 && !has_f16 {
            return Err(GpuError::Compile {
                kernel: shader.name().to_string(),
                message: "f16 inputs need the SHADER_F16 feature, which this adapter lacks".into(),
            });
        }
        let source = format!(
            "{}{}{}{}{}",
            shader.preamble(&key.defines),
            key.header(),
            shader.slots_header(),
            shader.prelude(),
            shader.source()
        );
        let module = Arc::new(compile_module(device, shader.name(), &source)?);
        modules.insert(module_key, module.clone());
        Ok(module)
    }

    /// The pipeline for `key`, compiled on first use.
    pub fn get(
        &self,
        device: &wgpu::Device,
        key: &PipelineKey,
    ) -> GpuResult<Arc<wgpu::ComputePipeline>> {
        if let Some(pipeline) = self
            .pipelines
            .lock()
            .map_err(|_| lock_error(key.entry))?
            .get(key)
        {
            return Ok(pipeline.clone());
        }
        let module = self.module(device, key)?;
        let label = key.label();
        let constants: Vec<(&str, f64)> = key
            .constants
            .iter()
            .map(|(name, bits)| (*name, f64::from_bits(*bits)))
            .collect();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(&label),
            layout: None,
            module: &module,
            entry_point: Some(key.entry),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &constants,
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        if let Some(error) = pollster::block_on(scope.pop()) {
            return Err(GpuError::Compile {
                kernel: label,
                message: first_line(&error.to_string()),
            });
        }
        let pipeline = Arc::new(pipeline);
        self.pipelines
            .lock()
            .map_err(|_| lock_error(key.entry))?
            .insert(key.clone(), pipeline.clone());
        Ok(pipeline)
    }
}
