//! What a loaded SAE is and where it came from, recorded in every command's outputs.

use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Sparsify,
    SaeLens,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Provenance {
    /// The directory the weights were read from.
    pub path: String,
    /// `sparsify` or `saelens`.
    pub layout: &'static str,
    /// The sparsify hookpoint (subdirectory) chosen with `--hookpoint`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hookpoint: Option<String>,
    /// SAELens architecture name (`topk`, `standard`, `jumprelu`, `gated`).
    pub architecture: &'static str,
    /// A transcoder: the decoder writes another activation (`hook_name_out`) than the one the
    /// encoder reads.
    pub transcoder: bool,
    /// With a skip path W_skip.
    pub skip: bool,
    pub d_in: usize,
    /// What the decoder writes: d_in for an SAE.
    pub d_out: usize,
    pub d_sae: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k: Option<usize>,
    /// `normalize_activations` as the checkpoint states it.
    pub normalize_activations: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model_name: Option<String>,
    /// The hook point the encoder reads.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_name: Option<String>,
    /// A transcoder's target hook point (SAELens `hook_name_out`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hook_name_out: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context_size: Option<u64>,
    /// The weights' dtype as stored; computation is in f32.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<String>,
    /// What was folded into the weights on load (each exact; see README).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub folded: Vec<String>,
}

impl Provenance {
    /// One line for a terminal: what, from where, for which model and hook.
    pub fn describe(&self) -> String {
        let kind = match (self.transcoder, self.skip) {
            (false, _) => String::new(),
            (true, false) => format!(" transcoder → d_out {}", self.d_out),
            (true, true) => format!(" skip-transcoder → d_out {}", self.d_out),
        };
        let mut line = format!(
            "{} ({} layout, {}{}{kind}, d_in {}, d_sae {}, normalize_activations {})",
            self.path,
            self.layout,
            self.architecture,
            self.k.map_or(String::new(), |k| format!(" k {k}")),
            self.d_in,
            self.d_sae,
            self.normalize_activations
        );
        if let Some(hookpoint) = &self.hookpoint {
            line.push_str(&format!(", hookpoint {hookpoint}"));
        }
        fn known(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|v| !v.is_empty() && *v != "unknown")
        }
        if let Some(model) = known(&self.model_name) {
            line.push_str(&format!(", model {model}"));
        }
        if let Some(hook) = known(&self.hook_name) {
            line.push_str(&format!(", hook {hook}"));
        }
        if let Some(hook) = known(&self.hook_name_out) {
            line.push_str(&format!(" → {hook}"));
        }
        if let Some(context) = self.context_size.filter(|&c| c > 0) {
            line.push_str(&format!(", context {context}"));
        }
        line
    }
}
