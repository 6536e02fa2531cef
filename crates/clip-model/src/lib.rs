//! OpenCLIP's CLIP with a timm ConvNeXt or ViT, or an OpenCLIP ViT image tower, on tch, numerically
//! OpenCLIP's.
//!
//! Variable paths are OpenCLIP's state-dict keys (`visual.trunk.stages.0.blocks.3.conv_dw.weight`,
//! `transformer.resblocks.0.attn.in_proj_weight`, ...): build a [`Clip`] on a VarStore's root and
//! the VarStore holds exactly the checkpoint's tensors, no rename tables.
//!
//! ```no_run
//! use clip_model::{Clip, ClipConfig};
//! let cfg = ClipConfig::load("convnext_large_d_320").unwrap();
//! let vs = tch::nn::VarStore::new(tch::Device::Cpu);
//! let model = Clip::new(&vs.root(), &cfg).unwrap();
//! assert_eq!(model.named_parameters().len(), 543);
//! ```

pub mod clip;
pub mod config;
pub mod convnext;
pub mod flops;
pub mod layers;
pub mod timm_model;
pub mod timm_vit;
pub mod transformer;
pub mod units;
pub mod vit;
pub mod weights;

pub use clip::{Clip, LayerGroups, Tower, Visual, INIT_LOGIT_SCALE};
pub use config::{
    BlockOptions, ClipConfig, GeluApprox, PreprocessCfg, TextConfig, TextPool, TimmProj, TimmTrunk,
    TimmVisionConfig, VisionConfig, VisionTower, VitConfig, VitPool,
};
pub use convnext::{ConvNeXt, ConvNextConfig};
pub use layers::l2_normalize;
pub use timm_model::{TimmModel, Trunk};
pub use timm_vit::{TimmVit, TimmVitConfig};
pub use transformer::TextTransformer;
pub use units::{Hooks, Unit, UnitHooks};
pub use vit::VisionTransformer;
