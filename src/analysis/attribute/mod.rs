//! Direct attribution (REFERENCE.md, "Direct attribution"): from latents to the components
//! that write them. A latent's pre-activation is linear in the residual, which is the sum of
//! its writers, so it splits exactly into one term per component (heads, and the features of
//! a transcoder standing in for an MLP) plus a constant; [`pass`] sums those terms per latent
//! over a cache, [`groups`] asks which writers a group of latents shares beyond chance.

pub mod groups;
pub mod pass;
pub mod totals;

pub use groups::{
    attribute_group, check_resolution, families, random_groups, GroupReport, GroupRequest,
    NullConfig, Universe,
};
pub use pass::{attribute, AttributionSetup, HeadWeights, TranscoderSpec};
pub use totals::{
    top_token_sums, top_tokens, Completeness, GroupHeadTokens, HeadTokens, Totals, BIAS,
    HOOK_PARTS, MAX_TOKEN_GROUPS,
};
