//! OpenCLIP model-config JSON (`open_clip/model_configs/*.json`), as far as this crate builds
//! models from it: a timm ConvNeXt or OpenCLIP VisionTransformer image tower and OpenCLIP's text
//! transformer.
//!
//! Parsing is by hand over `serde_json::Value` so that every error is one line naming the field
//! and the reason (`text_cfg.width: invalid type: string "x", expected i64`). Fields OpenCLIP knows
//! but this crate does not build (timm ViT trunks, HF text towers, CoCa, ...) are accepted only at
//! their defaults; anything else is an error naming the field.

use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::convnext::ConvNextConfig;
use crate::timm_vit::{self, TimmVitConfig, TrunkHead};

/// The built-in configs: OpenCLIP's own files, copied verbatim (the ConvNeXt ones and every
/// `ViT-*` with OpenCLIP's own towers), plus three tiny models (`clip_tiny_test` and
/// `vit_tiny_test`: vocab 1000 for small goldens; `clip_tiny`: CLIP's vocab, for the demo).
pub const BUILTIN: &[(&str, &str)] = &[
    (
        "convnext_base_w",
        include_str!("../../../configs/convnext_base_w.json"),
    ),
    (
        "convnext_base_w_320",
        include_str!("../../../configs/convnext_base_w_320.json"),
    ),
    (
        "convnext_large_d",
        include_str!("../../../configs/convnext_large_d.json"),
    ),
    (
        "convnext_large_d_320",
        include_str!("../../../configs/convnext_large_d_320.json"),
    ),
    (
        "convnext_xxlarge",
        include_str!("../../../configs/convnext_xxlarge.json"),
    ),
    (
        "clip_tiny_test",
        include_str!("../../../configs/clip_tiny_test.json"),
    ),
    ("clip_tiny", include_str!("../../../configs/clip_tiny.json")),
    (
        "vit_tiny_test",
        include_str!("../../../configs/vit_tiny_test.json"),
    ),
    (
        "ViT-B-16-plus-240",
        include_str!("../../../configs/ViT-B-16-plus-240.json"),
    ),
    (
        "ViT-B-16-plus",
        include_str!("../../../configs/ViT-B-16-plus.json"),
    ),
    (
        "ViT-B-16-quickgelu",
        include_str!("../../../configs/ViT-B-16-quickgelu.json"),
    ),
    ("ViT-B-16", include_str!("../../../configs/ViT-B-16.json")),
    (
        "ViT-B-32-256",
        include_str!("../../../configs/ViT-B-32-256.json"),
    ),
    (
        "ViT-B-32-plus-256",
        include_str!("../../../configs/ViT-B-32-plus-256.json"),
    ),
    (
        "ViT-B-32-quickgelu",
        include_str!("../../../configs/ViT-B-32-quickgelu.json"),
    ),
    ("ViT-B-32", include_str!("../../../configs/ViT-B-32.json")),
    (
        "ViT-H-14-378-quickgelu",
        include_str!("../../../configs/ViT-H-14-378-quickgelu.json"),
    ),
    (
        "ViT-H-14-378",
        include_str!("../../../configs/ViT-H-14-378.json"),
    ),
    (
        "ViT-H-14-CLIPA-336",
        include_str!("../../../configs/ViT-H-14-CLIPA-336.json"),
    ),
    (
        "ViT-H-14-CLIPA",
        include_str!("../../../configs/ViT-H-14-CLIPA.json"),
    ),
    (
        "ViT-H-14-quickgelu",
        include_str!("../../../configs/ViT-H-14-quickgelu.json"),
    ),
    (
        "ViT-H-14-worldwide-378",
        include_str!("../../../configs/ViT-H-14-worldwide-378.json"),
    ),
    (
        "ViT-H-14-worldwide-quickgelu",
        include_str!("../../../configs/ViT-H-14-worldwide-quickgelu.json"),
    ),
    (
        "ViT-H-14-worldwide",
        include_str!("../../../configs/ViT-H-14-worldwide.json"),
    ),
    ("ViT-H-14", include_str!("../../../configs/ViT-H-14.json")),
    ("ViT-H-16", include_str!("../../../configs/ViT-H-16.json")),
    (
        "ViT-L-14-280",
        include_str!("../../../configs/ViT-L-14-280.json"),
    ),
    (
        "ViT-L-14-336-quickgelu",
        include_str!("../../../configs/ViT-L-14-336-quickgelu.json"),
    ),
    (
        "ViT-L-14-336",
        include_str!("../../../configs/ViT-L-14-336.json"),
    ),
    (
        "ViT-L-14-CLIPA-336",
        include_str!("../../../configs/ViT-L-14-CLIPA-336.json"),
    ),
    (
        "ViT-L-14-CLIPA",
        include_str!("../../../configs/ViT-L-14-CLIPA.json"),
    ),
    (
        "ViT-L-14-quickgelu",
        include_str!("../../../configs/ViT-L-14-quickgelu.json"),
    ),
    (
        "ViT-L-14-worldwide-quickgelu",
        include_str!("../../../configs/ViT-L-14-worldwide-quickgelu.json"),
    ),
    (
        "ViT-L-14-worldwide",
        include_str!("../../../configs/ViT-L-14-worldwide.json"),
    ),
    ("ViT-L-14", include_str!("../../../configs/ViT-L-14.json")),
    (
        "ViT-L-16-320",
        include_str!("../../../configs/ViT-L-16-320.json"),
    ),
    ("ViT-L-16", include_str!("../../../configs/ViT-L-16.json")),
    (
        "ViT-M-16-alt",
        include_str!("../../../configs/ViT-M-16-alt.json"),
    ),
    ("ViT-M-16", include_str!("../../../configs/ViT-M-16.json")),
    (
        "ViT-M-32-alt",
        include_str!("../../../configs/ViT-M-32-alt.json"),
    ),
    ("ViT-M-32", include_str!("../../../configs/ViT-M-32.json")),
    (
        "ViT-S-16-alt",
        include_str!("../../../configs/ViT-S-16-alt.json"),
    ),
    ("ViT-S-16", include_str!("../../../configs/ViT-S-16.json")),
    (
        "ViT-S-32-alt",
        include_str!("../../../configs/ViT-S-32-alt.json"),
    ),
    ("ViT-S-32", include_str!("../../../configs/ViT-S-32.json")),
    (
        "ViT-bigG-14-CLIPA-336",
        include_str!("../../../configs/ViT-bigG-14-CLIPA-336.json"),
    ),
    (
        "ViT-bigG-14-CLIPA",
        include_str!("../../../configs/ViT-bigG-14-CLIPA.json"),
    ),
    (
        "ViT-bigG-14-quickgelu",
        include_str!("../../../configs/ViT-bigG-14-quickgelu.json"),
    ),
    (
        "ViT-bigG-14-worldwide-378",
        include_str!("../../../configs/ViT-bigG-14-worldwide-378.json"),
    ),
    (
        "ViT-bigG-14-worldwide",
        include_str!("../../../configs/ViT-bigG-14-worldwide.json"),
    ),
    (
        "ViT-bigG-14",
        include_str!("../../../configs/ViT-bigG-14.json"),
    ),
    ("ViT-e-14", include_str!("../../../configs/ViT-e-14.json")),
    ("ViT-g-14", include_str!("../../../configs/ViT-g-14.json")),
    (
        "MobileCLIP2-L-14",
        include_str!("../../../configs/MobileCLIP2-L-14.json"),
    ),
    (
        "vit_medium_patch16_gap_256",
        include_str!("../../../configs/vit_medium_patch16_gap_256.json"),
    ),
    (
        "ViT-B-16-SigLIP",
        include_str!("../../../configs/ViT-B-16-SigLIP.json"),
    ),
    (
        "ViT-B-16-SigLIP-256",
        include_str!("../../../configs/ViT-B-16-SigLIP-256.json"),
    ),
    (
        "ViT-B-16-SigLIP-384",
        include_str!("../../../configs/ViT-B-16-SigLIP-384.json"),
    ),
    (
        "ViT-B-16-SigLIP-512",
        include_str!("../../../configs/ViT-B-16-SigLIP-512.json"),
    ),
    (
        "ViT-B-16-SigLIP-i18n-256",
        include_str!("../../../configs/ViT-B-16-SigLIP-i18n-256.json"),
    ),
    (
        "ViT-B-16-SigLIP2",
        include_str!("../../../configs/ViT-B-16-SigLIP2.json"),
    ),
    (
        "ViT-B-16-SigLIP2-256",
        include_str!("../../../configs/ViT-B-16-SigLIP2-256.json"),
    ),
    (
        "ViT-B-16-SigLIP2-384",
        include_str!("../../../configs/ViT-B-16-SigLIP2-384.json"),
    ),
    (
        "ViT-B-16-SigLIP2-512",
        include_str!("../../../configs/ViT-B-16-SigLIP2-512.json"),
    ),
    (
        "ViT-B-32-SigLIP2-256",
        include_str!("../../../configs/ViT-B-32-SigLIP2-256.json"),
    ),
    (
        "ViT-L-16-SigLIP-256",
        include_str!("../../../configs/ViT-L-16-SigLIP-256.json"),
    ),
    (
        "ViT-L-16-SigLIP-384",
        include_str!("../../../configs/ViT-L-16-SigLIP-384.json"),
    ),
    (
        "ViT-L-16-SigLIP2-256",
        include_str!("../../../configs/ViT-L-16-SigLIP2-256.json"),
    ),
    (
        "ViT-L-16-SigLIP2-384",
        include_str!("../../../configs/ViT-L-16-SigLIP2-384.json"),
    ),
    (
        "ViT-L-16-SigLIP2-512",
        include_str!("../../../configs/ViT-L-16-SigLIP2-512.json"),
    ),
    (
        "ViT-SO400M-14-SigLIP",
        include_str!("../../../configs/ViT-SO400M-14-SigLIP.json"),
    ),
    (
        "ViT-SO400M-14-SigLIP-378",
        include_str!("../../../configs/ViT-SO400M-14-SigLIP-378.json"),
    ),
    (
        "ViT-SO400M-14-SigLIP-384",
        include_str!("../../../configs/ViT-SO400M-14-SigLIP-384.json"),
    ),
    (
        "ViT-SO400M-14-SigLIP2",
        include_str!("../../../configs/ViT-SO400M-14-SigLIP2.json"),
    ),
    (
        "ViT-SO400M-14-SigLIP2-378",
        include_str!("../../../configs/ViT-SO400M-14-SigLIP2-378.json"),
    ),
    (
        "ViT-SO400M-16-SigLIP-i18n-256",
        include_str!("../../../configs/ViT-SO400M-16-SigLIP-i18n-256.json"),
    ),
    (
        "ViT-SO400M-16-SigLIP2-256",
        include_str!("../../../configs/ViT-SO400M-16-SigLIP2-256.json"),
    ),
    (
        "ViT-SO400M-16-SigLIP2-384",
        include_str!("../../../configs/ViT-SO400M-16-SigLIP2-384.json"),
    ),
    (
        "ViT-SO400M-16-SigLIP2-512",
        include_str!("../../../configs/ViT-SO400M-16-SigLIP2-512.json"),
    ),
    (
        "ViT-gopt-16-SigLIP2-256",
        include_str!("../../../configs/ViT-gopt-16-SigLIP2-256.json"),
    ),
    (
        "ViT-gopt-16-SigLIP2-384",
        include_str!("../../../configs/ViT-gopt-16-SigLIP2-384.json"),
    ),
];

/// OpenCLIP 3.3.0's configs whose towers this crate does not build, refused by name with the
/// reason (`--model EVA02-L-14` says why rather than "unknown model").
const REFUSED: &[(&str, &str)] = &[
    ("ViTamin-B-LTT", "its image tower is the timm trunk vitamin_base_224"),
    ("ViTamin-B", "its image tower is the timm trunk vitamin_base_224"),
    ("ViTamin-L-256", "its image tower is the timm trunk vitamin_large_256"),
    ("ViTamin-L-336", "its image tower is the timm trunk vitamin_large_336"),
    ("ViTamin-L-384", "its image tower is the timm trunk vitamin_large_384"),
    ("ViTamin-L", "its image tower is the timm trunk vitamin_large_224"),
    ("ViTamin-L2-256", "its image tower is the timm trunk vitamin_large2_256"),
    ("ViTamin-L2-336", "its image tower is the timm trunk vitamin_large2_336"),
    ("ViTamin-L2-384", "its image tower is the timm trunk vitamin_large2_384"),
    ("ViTamin-L2", "its image tower is the timm trunk vitamin_large2_224"),
    ("ViTamin-S-LTT", "its image tower is the timm trunk vitamin_small_224"),
    ("ViTamin-S", "its image tower is the timm trunk vitamin_small_224"),
    ("ViTamin-XL-256", "its image tower is the timm trunk vitamin_xlarge_256"),
    ("ViTamin-XL-336", "its image tower is the timm trunk vitamin_xlarge_336"),
    ("ViTamin-XL-384", "its image tower is the timm trunk vitamin_xlarge_384"),
    ("vit_relpos_medium_patch16_cls_224", "its image tower is the timm trunk vit_relpos_medium_patch16_cls_224 (VisionTransformerRelPos, relative position biases)"),    ("EVA01-g-14", "its image tower is the timm model eva_giant_patch14_224 (architecture Eva)"),
    ("EVA01-g-14-plus", "its image tower is the timm model eva_giant_patch14_224 (architecture Eva)"),
    ("EVA02-B-16", "its image tower is the timm model eva02_base_patch16_clip_224 (architecture Eva)"),
    ("EVA02-E-14", "its image tower is the timm model eva02_enormous_patch14_clip_224 (architecture Eva)"),
    ("EVA02-E-14-plus", "its image tower is the timm model eva02_enormous_patch14_clip_224 (architecture Eva)"),
    ("EVA02-L-14", "its image tower is the timm model eva02_large_patch14_clip_224 (architecture Eva)"),
    ("EVA02-L-14-336", "its image tower is the timm model eva02_large_patch14_clip_336 (architecture Eva)"),
    ("MobileCLIP-B", "its image tower is the timm model vit_base_mci_224 (patch embedding HybridEmbed)"),
    ("MobileCLIP-S1", "its image tower is the timm model fastvit_mci1, neither a ConvNeXt nor a VisionTransformer"),
    ("MobileCLIP-S2", "its image tower is the timm model fastvit_mci2, neither a ConvNeXt nor a VisionTransformer"),
    ("MobileCLIP2-B", "its image tower is the timm model vit_base_mci_224 (patch embedding HybridEmbed)"),
    ("MobileCLIP2-S0", "its image tower is the timm model fastvit_mci0, neither a ConvNeXt nor a VisionTransformer"),
    ("MobileCLIP2-S2", "its image tower is the timm model fastvit_mci2, neither a ConvNeXt nor a VisionTransformer"),
    ("MobileCLIP2-S3", "its image tower is the timm model fastvit_mci3, neither a ConvNeXt nor a VisionTransformer"),
    ("MobileCLIP2-S4", "its image tower is the timm model fastvit_mci4, neither a ConvNeXt nor a VisionTransformer"),
    ("PE-Core-B-16", "its image tower is the timm model vit_pe_core_base_patch16_224 (architecture Eva)"),
    ("PE-Core-L-14-336", "its image tower is the timm model vit_pe_core_large_patch14_336 (architecture Eva)"),
    ("PE-Core-S-16-384", "its image tower is the timm model vit_pe_core_small_patch16_384 (architecture Eva)"),
    ("PE-Core-T-16-384", "its image tower is the timm model vit_pe_core_tiny_patch16_384 (architecture Eva)"),
    ("PE-Core-bigG-14-448", "its image tower is the timm model vit_pe_core_gigantic_patch14_448 (architecture Eva)"),
    ("RN101", "its image tower is a ModifiedResNet"),
    ("RN101-quickgelu", "its image tower is a ModifiedResNet"),
    ("RN50", "its image tower is a ModifiedResNet"),
    ("RN50-quickgelu", "its image tower is a ModifiedResNet"),
    ("RN50x16", "its image tower is a ModifiedResNet"),
    ("RN50x16-quickgelu", "its image tower is a ModifiedResNet"),
    ("RN50x4", "its image tower is a ModifiedResNet"),
    ("RN50x4-quickgelu", "its image tower is a ModifiedResNet"),
    ("RN50x64", "its image tower is a ModifiedResNet"),
    ("RN50x64-quickgelu", "its image tower is a ModifiedResNet"),
    ("coca_ViT-B-32", "it is a CoCa model (multimodal decoder)"),
    ("coca_ViT-L-14", "it is a CoCa model (multimodal decoder)"),
    ("coca_base", "it is a CoCa model (multimodal decoder)"),
    ("coca_roberta-ViT-B-32", "it is a CoCa model (multimodal decoder)"),
    ("mt5-base-ViT-B-32", "its text tower is the Hugging Face model google/mt5-base"),
    ("mt5-xl-ViT-H-14", "its text tower is the Hugging Face model google/mt5-xl"),
    ("nllb-clip-base", "its text tower is the Hugging Face model facebook/nllb-200-distilled-600M"),
    ("nllb-clip-base-siglip", "its text tower is the Hugging Face model facebook/nllb-200-distilled-600M"),
    ("nllb-clip-large", "its text tower is the Hugging Face model facebook/nllb-200-distilled-1.3B"),
    ("nllb-clip-large-siglip", "its text tower is the Hugging Face model facebook/nllb-200-distilled-1.3B"),
    ("roberta-ViT-B-32", "its text tower is the Hugging Face model roberta-base"),
    ("swin_base_patch4_window7_224", "its image tower is the timm model swin_base_patch4_window7_224, neither a ConvNeXt nor a VisionTransformer"),
    ("xlm-roberta-base-ViT-B-32", "its text tower is the Hugging Face model xlm-roberta-base"),
    ("xlm-roberta-large-ViT-H-14", "its text tower is the Hugging Face model xlm-roberta-large"),
];

/// The names `ClipConfig::load` knows without a path.
pub fn builtin_names() -> Vec<&'static str> {
    BUILTIN.iter().map(|(n, _)| *n).collect()
}

/// The projection head after the trunk (`timm_proj`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimmProj {
    /// `visual.head.proj`: Dropout(timm_drop) → Linear(num_features, embed_dim, bias=timm_proj_bias).
    Linear,
    /// `visual.head.mlp`: timm Mlp: fc1 (bias) → GELU → Dropout(timm_drop) → fc2 (bias=timm_proj_bias).
    Mlp,
    /// `"none"`: the pooled, normed trunk features pass through (dim = trunk width).
    None,
    /// `""` / null: the trunk's own classifier `visual.trunk.head.fc` (with bias) projects.
    TrunkFc,
}

/// The timm model inside OpenCLIP's TimmModel.
#[derive(Debug, Clone, PartialEq)]
pub enum TimmTrunk {
    ConvNext(ConvNextConfig),
    /// timm's VisionTransformer (SigLIP's image towers and their family).
    Vit(TimmVitConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct TimmVisionConfig {
    pub timm_model_name: String,
    pub timm_model_pretrained: bool,
    /// `timm_pool` as the config gives it (`""`: the trunk's own pooling). A ConvNeXt pools by
    /// global average either way; a ViT trunk's pooling is resolved into its config.
    pub timm_pool: String,
    pub timm_proj: TimmProj,
    pub timm_proj_bias: bool,
    pub timm_drop: f64,
    /// None: timm's default (0).
    pub timm_drop_path: Option<f64>,
    /// The trunk, resolved from `timm_model_name` (with `timm_drop_path` filled in).
    pub trunk: TimmTrunk,
}

impl TimmVisionConfig {
    /// The ConvNeXt trunk's settings; panics on a ViT trunk (for code and tests that build only
    /// ConvNeXt towers).
    pub fn convnext(&self) -> &ConvNextConfig {
        match &self.trunk {
            TimmTrunk::ConvNext(c) => c,
            TimmTrunk::Vit(_) => panic!("not a ConvNeXt trunk"),
        }
    }

    pub fn convnext_mut(&mut self) -> &mut ConvNextConfig {
        match &mut self.trunk {
            TimmTrunk::ConvNext(c) => c,
            TimmTrunk::Vit(_) => panic!("not a ConvNeXt trunk"),
        }
    }

    /// The width the trunk hands the head: its pooled features, or its classifier's outputs.
    pub fn trunk_features(&self) -> i64 {
        match &self.trunk {
            TimmTrunk::ConvNext(c) => *c.dims.last().unwrap(),
            TimmTrunk::Vit(v) => v.embed_dim,
        }
    }
}

/// How OpenCLIP's VisionTransformer pools its tokens (`vision_cfg.pool_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VitPool {
    /// `tok`: the class token.
    Tok,
    /// `avg`: the mean of the patch tokens (the class token left out).
    Avg,
}

/// OpenCLIP's own VisionTransformer tower (`vision_cfg` without `timm_model_name`).
#[derive(Debug, Clone, PartialEq)]
pub struct VitConfig {
    pub patch_size: i64,
    pub width: i64,
    pub layers: i64,
    /// `width / head_width`, as `_build_vision_tower` computes it.
    pub heads: i64,
    pub mlp_ratio: f64,
    /// LayerScale after attention and MLP (`ls_1.gamma`, `ls_2.gamma`), initialised to this.
    pub ls_init_value: Option<f64>,
    /// The share of patch tokens dropped in training (PatchDropout; 0: none).
    pub patch_dropout: f64,
    pub pool_type: VitPool,
    /// `ln_post` after pooling instead of over every token.
    pub final_ln_after_pool: bool,
    /// No `ln_pre` before the transformer.
    pub no_ln_pre: bool,
    /// `norm_kwargs` / `act_kwargs`: every LayerNorm's eps, the blocks' GELU.
    pub block: BlockOptions,
}

impl VitConfig {
    /// `int(width * mlp_ratio)`, as OpenCLIP computes it.
    pub fn mlp_width(&self) -> i64 {
        (self.width as f64 * self.mlp_ratio) as i64
    }

    /// Patches per side at `image_size`: OpenCLIP's `grid_size` (floor division).
    pub fn grid_size(&self, image_size: (i64, i64)) -> (i64, i64) {
        (
            image_size.0 / self.patch_size,
            image_size.1 / self.patch_size,
        )
    }
}

/// The GELU approximation `act_kwargs.approximate` selects (`nn.GELU(approximate=…)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeluApprox {
    None,
    Tanh,
}

/// What a tower's `norm_kwargs` and `act_kwargs` set in OpenCLIP's own transformers (which pass
/// them to every `norm_layer(…)` and `act_layer(…)` as `functools.partial` arguments).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockOptions {
    /// `norm_kwargs.eps`: every LayerNorm's eps (nn.LayerNorm's 1e-5 unless set).
    pub ln_eps: f64,
    /// `act_kwargs.approximate`: None when `act_kwargs` sets nothing (exact GELU, or QuickGELU
    /// under `quick_gelu`, which takes no argument).
    pub gelu_approx: Option<GeluApprox>,
}

impl Default for BlockOptions {
    fn default() -> Self {
        Self {
            ln_eps: 1e-5,
            gelu_approx: None,
        }
    }
}

/// The image tower: a timm trunk with OpenCLIP's TimmModel head, or OpenCLIP's VisionTransformer.
#[derive(Debug, Clone, PartialEq)]
pub enum VisionTower {
    Timm(TimmVisionConfig),
    Vit(VitConfig),
}

#[derive(Debug, Clone, PartialEq)]
pub struct VisionConfig {
    /// (height, width). ConvNeXt works at any size (the data pipeline uses it); a ViT's
    /// positional embedding has one row per patch of it.
    pub image_size: (i64, i64),
    pub tower: VisionTower,
}

impl VisionConfig {
    /// `--force-image-size`: the input size, and a timm ViT trunk's position-embedding grid with
    /// it (OpenCLIP's `set_input_size` on the trunk).
    pub fn set_image_size(&mut self, size: (i64, i64)) {
        self.image_size = size;
        if let VisionTower::Timm(TimmVisionConfig {
            trunk: TimmTrunk::Vit(v),
            ..
        }) = &mut self.tower
        {
            v.img_size = size;
        }
    }

    /// The timm tower's settings; panics on a ViT (for code and tests that build only timm towers).
    pub fn timm(&self) -> &TimmVisionConfig {
        match &self.tower {
            VisionTower::Timm(t) => t,
            VisionTower::Vit(_) => panic!("not a timm image tower"),
        }
    }

    pub fn timm_mut(&mut self) -> &mut TimmVisionConfig {
        match &mut self.tower {
            VisionTower::Timm(t) => t,
            VisionTower::Vit(_) => panic!("not a timm image tower"),
        }
    }

    /// The ViT's settings; panics on a timm tower.
    pub fn vit(&self) -> &VitConfig {
        match &self.tower {
            VisionTower::Vit(v) => v,
            VisionTower::Timm(_) => panic!("not a ViT image tower"),
        }
    }

    pub fn vit_mut(&mut self) -> &mut VitConfig {
        match &mut self.tower {
            VisionTower::Vit(v) => v,
            VisionTower::Timm(_) => panic!("not a ViT image tower"),
        }
    }
}

/// Which token's output the text tower keeps (`text_cfg.pool_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TextPool {
    /// The position of the largest token id (the CLIP tokenizer's eot).
    Argmax,
    First,
    Last,
    /// The first position holding `eos_id`.
    Eos,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TextConfig {
    pub context_length: i64,
    pub vocab_size: i64,
    pub width: i64,
    pub heads: i64,
    pub layers: i64,
    pub mlp_ratio: f64,
    pub pool_type: TextPool,
    pub eos_id: i64,
    /// `no_causal_mask`: bidirectional attention.
    pub no_causal_mask: bool,
    /// false for `proj_type: "none"` (features are the width-sized pooled tokens).
    pub projection: bool,
    /// `proj_bias`: the projection is an nn.Linear (`text_projection.weight` [embed_dim, width]
    /// and `.bias`), not a bias-free [width, embed_dim] matrix.
    pub proj_bias: bool,
    /// `norm_kwargs` / `act_kwargs`: every LayerNorm's eps, the blocks' GELU.
    pub block: BlockOptions,
    /// `hf_tokenizer_name`: the model's captions need this HuggingFace tokenizer (a hub id or a
    /// folder), not CLIP's BPE.
    pub hf_tokenizer_name: Option<String>,
    /// `tokenizer_kwargs.clean` for the HuggingFace tokenizer (OpenCLIP's default "whitespace").
    pub tokenizer_clean: String,
    /// `tokenizer_kwargs.strip_sep_token`.
    pub strip_sep_token: bool,
}

impl TextConfig {
    /// `int(width * mlp_ratio)`, as OpenCLIP computes it.
    pub fn mlp_width(&self) -> i64 {
        (self.width as f64 * self.mlp_ratio) as i64
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClipConfig {
    /// The built-in name, or the path the config came from.
    pub name: String,
    pub embed_dim: i64,
    /// QuickGELU in the text tower and a ViT image tower (timm trunks always use exact GELU).
    pub quick_gelu: bool,
    /// `logit_scale`'s initial value (OpenCLIP's `init_logit_scale`; ln(1/0.07) by default,
    /// ln 10 under `--siglip`).
    pub init_logit_scale: f64,
    /// `init_logit_bias`: when set, the model has SigLIP's `logit_bias` parameter, initialised
    /// to it (−10 under `--siglip`).
    pub init_logit_bias: Option<f64>,
    /// `custom_text`: OpenCLIP's `CustomTextCLIP`, whose text tower's keys sit under `text.`
    /// (`text.token_embedding.weight`, …) after `logit_scale`, `logit_bias` and `visual.`.
    pub custom_text: bool,
    pub vision: VisionConfig,
    pub text: TextConfig,
    /// `preprocess_cfg`: the image preprocessing the weights expect, from an
    /// `open_clip_config.json` (the Hugging Face hub's layout) or a config that carries one.
    pub preprocess: PreprocessCfg,
}

/// OpenCLIP's `PreprocessCfg` fields a config may set (None: OpenCLIP's default, or the flag).
/// `size` is the model's image size and `mode` / `fill_color` have one value OpenCLIP accepts,
/// so those are not kept.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PreprocessCfg {
    pub mean: Option<Vec<f64>>,
    pub std: Option<Vec<f64>>,
    pub interpolation: Option<String>,
    pub resize_mode: Option<String>,
}

fn parse_preprocess(src: &str, v: Option<&Value>) -> Result<PreprocessCfg> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(PreprocessCfg::default());
    };
    let mut s = Section::new(src, "preprocess_cfg", v)?;
    let cfg = PreprocessCfg {
        mean: s.opt("mean")?,
        std: s.opt("std")?,
        interpolation: s.opt("interpolation")?,
        resize_mode: s.opt("resize_mode")?,
    };
    s.ignore(&["size", "mode", "fill_color"]);
    s.finish()?;
    Ok(cfg)
}

/// A JSON object being read: the section name for messages and the keys consumed so far.
struct Section<'a> {
    src: &'a str,
    name: &'a str,
    obj: &'a Map<String, Value>,
    known: Vec<&'static str>,
}

impl<'a> Section<'a> {
    fn new(src: &'a str, name: &'a str, v: &'a Value) -> Result<Self> {
        let obj = v.as_object().ok_or_else(|| {
            anyhow!(
                "config {src}: `{name}` must be a JSON object, found {}",
                kind_of(v)
            )
        })?;
        Ok(Self {
            src,
            name,
            obj,
            known: Vec::new(),
        })
    }

    fn field_name(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.name)
        }
    }

    /// An optional field; JSON null counts as absent.
    fn opt<T: DeserializeOwned>(&mut self, key: &'static str) -> Result<Option<T>> {
        self.known.push(key);
        match self.obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => serde_json::from_value::<T>(v.clone())
                .map(Some)
                .map_err(|e| {
                    anyhow!(
                        "config {}: `{}`: {e} (found {})",
                        self.src,
                        self.field_name(key),
                        short(v)
                    )
                }),
        }
    }

    fn get<T: DeserializeOwned>(&mut self, key: &'static str, default: T) -> Result<T> {
        Ok(self.opt(key)?.unwrap_or(default))
    }

    fn req<T: DeserializeOwned>(&mut self, key: &'static str) -> Result<T> {
        self.opt(key)?.ok_or_else(|| {
            anyhow!(
                "config {}: missing field `{}`",
                self.src,
                self.field_name(key)
            )
        })
    }

    fn raw(&mut self, key: &'static str) -> Option<&'a Value> {
        self.known.push(key);
        self.obj.get(key)
    }

    /// A field OpenCLIP knows whose non-default values this crate does not build.
    fn unsupported_unless(
        &mut self,
        key: &'static str,
        is_default: impl Fn(&Value) -> bool,
        why: &str,
    ) -> Result<()> {
        self.known.push(key);
        match self.obj.get(key) {
            Some(v) if !v.is_null() && !is_default(v) => bail!(
                "config {}: `{}` = {} is not supported: {why}",
                self.src,
                self.field_name(key),
                short(v)
            ),
            _ => Ok(()),
        }
    }

    /// Fields OpenCLIP accepts that do not change the model built here.
    fn ignore(&mut self, keys: &[&'static str]) {
        self.known.extend_from_slice(keys);
    }

    fn finish(self) -> Result<()> {
        let mut unknown: Vec<&String> = self
            .obj
            .keys()
            .filter(|k| !self.known.contains(&k.as_str()))
            .collect();
        unknown.sort();
        if let Some(k) = unknown.first() {
            bail!(
                "config {}: unknown field `{}` (known: {})",
                self.src,
                self.field_name(k),
                self.known.join(", ")
            );
        }
        Ok(())
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 60 {
        format!(
            "{}…",
            &s[..s.char_indices().nth(57).map(|(i, _)| i).unwrap_or(s.len())]
        )
    } else {
        s
    }
}

fn is_false(v: &Value) -> bool {
    v == &Value::Bool(false)
}

fn is_zero(v: &Value) -> bool {
    v.as_f64() == Some(0.0)
}

impl ClipConfig {
    /// A built-in config by name (`convnext_large_d_320`, ...), else a path to a JSON file.
    pub fn load(name_or_path: &str) -> Result<Self> {
        if let Some((name, json)) = BUILTIN.iter().find(|(n, _)| *n == name_or_path) {
            return Self::from_json_str(json, name);
        }
        let path = Path::new(name_or_path);
        if path.is_file() {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading model config {}", path.display()))?;
            return Self::from_json_str(&text, name_or_path);
        }
        if let Some((name, why)) = REFUSED.iter().find(|(n, _)| *n == name_or_path) {
            bail!("model `{name}` is not supported: {why}");
        }
        let looks_like_path = name_or_path.contains('/') || name_or_path.ends_with(".json");
        if looks_like_path {
            bail!("model config file {name_or_path} does not exist");
        }
        bail!(
            "unknown model `{name_or_path}`: not a built-in config ({}) and not a JSON file",
            builtin_names().join(", ")
        )
    }

    /// Parses OpenCLIP model-config JSON; `src` names it in error messages.
    pub fn from_json_str(json: &str, src: &str) -> Result<Self> {
        let v: Value =
            serde_json::from_str(json).map_err(|e| anyhow!("config {src}: malformed JSON: {e}"))?;
        Self::from_value(&v, src)
    }

    /// A model config, or an `open_clip_config.json` (`{"model_cfg": …, "preprocess_cfg": …}`,
    /// what OpenCLIP's `hf-hub:` / `local-dir:` models read).
    pub fn from_value(v: &Value, src: &str) -> Result<Self> {
        if let Some(model_cfg) = v.get("model_cfg") {
            let mut outer = Section::new(src, "", v)?;
            let pre = parse_preprocess(src, outer.raw("preprocess_cfg"))?;
            outer.raw("model_cfg");
            outer.finish()?;
            let mut cfg = Self::from_value(model_cfg, src)?;
            if pre != PreprocessCfg::default() {
                cfg.preprocess = pre;
            }
            return Ok(cfg);
        }
        let mut top = Section::new(src, "", v)?;
        let embed_dim: i64 = top.req("embed_dim")?;
        if embed_dim <= 0 {
            bail!("config {src}: `embed_dim` must be positive, found {embed_dim}");
        }
        let quick_gelu: bool = top.get("quick_gelu", false)?;
        let custom_text: bool = top.get("custom_text", false)?;
        let init_logit_scale: f64 = top.get("init_logit_scale", crate::clip::INIT_LOGIT_SCALE)?;
        let init_logit_bias: Option<f64> = top.opt("init_logit_bias")?;
        top.unsupported_unless(
            "multimodal_cfg",
            |_| false,
            "CoCa models are not built by clip-model",
        )?;
        top.unsupported_unless(
            "nonscalar_logit_scale",
            is_false,
            "logit_scale is a scalar here",
        )?;
        let vision_v = top
            .raw("vision_cfg")
            .ok_or_else(|| anyhow!("config {src}: missing field `vision_cfg`"))?;
        let text_v = top
            .raw("text_cfg")
            .ok_or_else(|| anyhow!("config {src}: missing field `text_cfg`"))?;
        let preprocess = parse_preprocess(src, top.raw("preprocess_cfg"))?;
        top.ignore(&["cast_dtype", "output_dict"]);
        top.finish()?;
        let vision = parse_vision(src, vision_v, embed_dim)?;
        let text = parse_text(src, text_v)?;
        let cfg = Self {
            name: src.to_string(),
            embed_dim,
            quick_gelu,
            init_logit_scale,
            init_logit_bias,
            custom_text,
            vision,
            text,
            preprocess,
        };
        if let Some(section) = cfg.act_kwargs_with_quick_gelu() {
            bail!("config {src}: `{section}.act_kwargs` with `quick_gelu`: OpenCLIP's QuickGELU takes no arguments");
        }
        Ok(cfg)
    }

    /// The section whose `act_kwargs` OpenCLIP would pass to QuickGELU (under `quick_gelu` or
    /// `--force-quick-gelu`), where it fails: `QuickGELU()` takes no arguments.
    pub fn act_kwargs_with_quick_gelu(&self) -> Option<&'static str> {
        if !self.quick_gelu {
            return None;
        }
        match &self.vision.tower {
            VisionTower::Vit(v) if v.block.gelu_approx.is_some() => Some("vision_cfg"),
            _ => self.text.block.gelu_approx.is_some().then_some("text_cfg"),
        }
    }

    /// The width of `encode_image`'s output.
    pub fn image_feature_dim(&self) -> i64 {
        match &self.vision.tower {
            VisionTower::Timm(t) if t.timm_proj == TimmProj::None => t.trunk_features(),
            _ => self.embed_dim,
        }
    }

    /// The width of `encode_text`'s output.
    pub fn text_feature_dim(&self) -> i64 {
        if self.text.projection {
            self.embed_dim
        } else {
            self.text.width
        }
    }
}

/// CLIPVisionCfg fields that only ViT / ModifiedResNet towers read: a timm tower ignores them
/// (`patch_dropout` is read by both).
const VIT_ONLY_KEYS: &[&str] = &[
    "layers",
    "width",
    "head_width",
    "mlp_ratio",
    "patch_size",
    "ls_init_value",
    "attentional_pool",
    "attn_pooler_queries",
    "attn_pooler_heads",
    "no_ln_pre",
    "pos_embed_type",
    "final_ln_after_pool",
    "pool_type",
    "output_tokens",
    "act_kwargs",
    "norm_kwargs",
    "block_type",
];

/// OpenCLIP's custom attention-block options: a timm tower ignores them; the text tower built
/// here has none of them.
const CUSTOM_ATTENTION_KEYS: &[&str] = &[
    "qk_norm",
    "scaled_cosine_attn",
    "scale_heads",
    "scale_attn_inner",
    "scale_attn",
    "scale_fc",
];

fn parse_vision(src: &str, v: &Value, embed_dim: i64) -> Result<VisionConfig> {
    let mut s = Section::new(src, "vision_cfg", v)?;
    let image_size = parse_image_size(src, s.raw("image_size"))?;
    let name: Option<String> = s.opt("timm_model_name")?;
    let tower = match name {
        Some(timm_model_name) => {
            let t = parse_timm(src, &mut s, timm_model_name, embed_dim)?;
            if let TimmTrunk::Vit(v) = &t.trunk {
                if v.img_size != image_size {
                    bail!(
                        "config {src}: `vision_cfg.image_size` {image_size:?} differs from {}'s {:?}, \
                         for which timm lays out its position embedding (--force-image-size resamples it)",
                        t.timm_model_name,
                        v.img_size
                    );
                }
            }
            s.ignore(VIT_ONLY_KEYS);
            s.ignore(CUSTOM_ATTENTION_KEYS);
            VisionTower::Timm(t)
        }
        None => {
            let vit = parse_vit(src, &mut s)?;
            s.ignore(TIMM_ONLY_KEYS);
            VisionTower::Vit(vit)
        }
    };
    s.finish()?;
    Ok(VisionConfig { image_size, tower })
}

/// CLIPVisionCfg fields that only a timm tower reads: OpenCLIP's ViT ignores them.
const TIMM_ONLY_KEYS: &[&str] = &[
    "timm_model_pretrained",
    "timm_pool",
    "timm_proj",
    "timm_proj_bias",
    "timm_drop",
    "timm_drop_path",
];

fn parse_timm(
    src: &str,
    s: &mut Section,
    timm_model_name: String,
    embed_dim: i64,
) -> Result<TimmVisionConfig> {
    let timm_model_pretrained: bool = s.get("timm_model_pretrained", false)?;
    if timm_model_pretrained {
        bail!(
            "config {src}: `vision_cfg.timm_model_pretrained` = true is not supported: timm ImageNet \
             weights are not downloaded; start from an OpenCLIP checkpoint instead"
        );
    }
    let (timm_pool, timm_proj) = parse_timm_head(src, s)?;
    let timm_proj_bias: bool = s.get("timm_proj_bias", false)?;
    let timm_drop: f64 = s.get("timm_drop", 0.0)?;
    if !(0.0..1.0).contains(&timm_drop) {
        bail!("config {src}: `vision_cfg.timm_drop` must be in [0, 1), found {timm_drop}");
    }
    let timm_drop_path: Option<f64> = s.opt("timm_drop_path")?;
    if let Some(dp) = timm_drop_path {
        if !(0.0..1.0).contains(&dp) {
            bail!("config {src}: `vision_cfg.timm_drop_path` must be in [0, 1), found {dp}");
        }
    }
    s.unsupported_unless(
        "patch_dropout",
        is_zero,
        "timm trunks are built without timm's PatchDropout",
    )?;
    let drop_path = timm_drop_path.unwrap_or(0.0);
    let trunk = if let Some(mut c) = ConvNextConfig::preset(&timm_model_name) {
        if !matches!(timm_pool.as_str(), "" | "avg") {
            bail!(
                "config {src}: `vision_cfg.timm_pool` = {timm_pool:?} is not supported for a ConvNeXt trunk (supported: \"\", \"avg\")"
            );
        }
        c.drop_path_rate = drop_path;
        TimmTrunk::ConvNext(c)
    } else if timm_vit::is_timm_vit_name(&timm_model_name) {
        // OpenCLIP creates the trunk with its pooling and classifier unless it adds a head of
        // its own, in which case it resets a default-built trunk's classifier.
        let head = match timm_proj {
            TimmProj::Linear | TimmProj::Mlp => TrunkHead::Reset { pool: &timm_pool },
            TimmProj::None => TrunkHead::Create {
                pool: &timm_pool,
                num_classes: 0,
            },
            TimmProj::TrunkFc => TrunkHead::Create {
                pool: &timm_pool,
                num_classes: embed_dim,
            },
        };
        TimmTrunk::Vit(
            TimmVitConfig::resolve(&timm_model_name, head, drop_path)
                .map_err(|e| anyhow!("config {src}: `vision_cfg.timm_model_name`: {e}"))?,
        )
    } else {
        bail!(
            "config {src}: `vision_cfg.timm_model_name` = {timm_model_name:?} is not supported (supported: the ConvNeXt models {} and timm's VisionTransformer family, configs/timm_vit_presets.json)",
            ConvNextConfig::preset_names().join(", ")
        )
    };
    Ok(TimmVisionConfig {
        timm_model_name,
        timm_model_pretrained,
        timm_pool,
        timm_proj,
        timm_proj_bias,
        timm_drop,
        timm_drop_path,
        trunk,
    })
}

/// OpenCLIP's VisionTransformer options, with CLIPVisionCfg's defaults.
fn parse_vit(src: &str, s: &mut Section) -> Result<VitConfig> {
    let layers_v = s.raw("layers");
    if layers_v.is_some_and(|v| v.is_array()) {
        bail!(
            "config {src}: `vision_cfg.layers` is a list: ModifiedResNet image towers are not built by clip-model"
        );
    }
    let layers: i64 = match layers_v {
        None | Some(Value::Null) => 12,
        Some(v) => serde_json::from_value(v.clone()).map_err(|e| {
            anyhow!(
                "config {src}: `vision_cfg.layers`: {e} (found {})",
                short(v)
            )
        })?,
    };
    let width: i64 = s.get("width", 768)?;
    let head_width: i64 = s.get("head_width", 64)?;
    let mlp_ratio: f64 = s.get("mlp_ratio", 4.0)?;
    let patch_size: i64 = s.get("patch_size", 16)?;
    let ls_init_value: Option<f64> = s.opt("ls_init_value")?;
    let patch_dropout: f64 = s.get("patch_dropout", 0.0)?;
    let no_ln_pre: bool = s.get("no_ln_pre", false)?;
    let final_ln_after_pool: bool = s.get("final_ln_after_pool", false)?;
    let pool: String = s.get("pool_type", "tok".to_string())?;
    let pool_type = match pool.as_str() {
        "tok" => VitPool::Tok,
        "avg" => VitPool::Avg,
        other => bail!(
            "config {src}: `vision_cfg.pool_type` = {other:?} is not supported (supported: tok, avg)"
        ),
    };
    let block = parse_block_options(src, s, "vision_cfg")?;
    refuse_unbuilt_vit_options(s)?;
    for (k, val) in [
        ("layers", layers),
        ("width", width),
        ("head_width", head_width),
        ("patch_size", patch_size),
    ] {
        if val <= 0 {
            bail!("config {src}: `vision_cfg.{k}` must be positive, found {val}");
        }
    }
    if width % head_width != 0 {
        bail!("config {src}: `vision_cfg.width` ({width}) must be a multiple of `vision_cfg.head_width` ({head_width})");
    }
    if mlp_ratio.is_nan() || mlp_ratio <= 0.0 {
        bail!("config {src}: `vision_cfg.mlp_ratio` must be positive, found {mlp_ratio}");
    }
    if !(0.0..1.0).contains(&patch_dropout) {
        bail!("config {src}: `vision_cfg.patch_dropout` must be in [0, 1), found {patch_dropout}");
    }
    Ok(VitConfig {
        patch_size,
        width,
        layers,
        heads: width / head_width,
        mlp_ratio,
        ls_init_value,
        patch_dropout,
        pool_type,
        final_ln_after_pool,
        no_ln_pre,
        block,
    })
}

/// `norm_kwargs` and `act_kwargs` of OpenCLIP's own transformer towers (`section`: `vision_cfg`
/// or `text_cfg`): `eps` for the LayerNorms, `approximate` for GELU; any other argument is refused
/// by name.
fn parse_block_options(src: &str, s: &mut Section, section: &str) -> Result<BlockOptions> {
    let mut opts = BlockOptions::default();
    let norm: Map<String, Value> = s.opt("norm_kwargs")?.unwrap_or_default();
    for (k, v) in norm {
        match (k.as_str(), v.as_f64()) {
            ("eps", Some(eps)) if eps > 0.0 => opts.ln_eps = eps,
            ("eps", _) => bail!(
                "config {src}: `{section}.norm_kwargs.eps` must be a positive number, found {}",
                short(&v)
            ),
            _ => {
                bail!("config {src}: `{section}.norm_kwargs.{k}` is not supported (supported: eps)")
            }
        }
    }
    let act: Map<String, Value> = s.opt("act_kwargs")?.unwrap_or_default();
    for (k, v) in act {
        opts.gelu_approx = Some(match (k.as_str(), v.as_str()) {
            ("approximate", Some("none")) => GeluApprox::None,
            ("approximate", Some("tanh")) => GeluApprox::Tanh,
            ("approximate", _) => bail!(
                "config {src}: `{section}.act_kwargs.approximate` = {} is not supported (supported: \"none\", \"tanh\")",
                short(&v)
            ),
            _ => bail!(
                "config {src}: `{section}.act_kwargs.{k}` is not supported (supported: approximate)"
            ),
        });
    }
    Ok(opts)
}

/// The options of OpenCLIP's transformer blocks that both towers share and clip-model does not
/// build: token outputs, other block types, custom attention.
fn refuse_unbuilt_block_options(s: &mut Section) -> Result<()> {
    s.unsupported_unless(
        "output_tokens",
        is_false,
        "only pooled features are returned",
    )?;
    s.unsupported_unless(
        "block_type",
        |v| v == "default",
        "only the default residual attention block is built",
    )?;
    for &key in CUSTOM_ATTENTION_KEYS {
        s.unsupported_unless(
            key,
            is_false,
            "custom attention blocks are not built by clip-model",
        )?;
    }
    Ok(())
}

/// The VisionTransformer options OpenCLIP has whose non-default values build a tower this crate
/// does not: refused, naming the option.
fn refuse_unbuilt_vit_options(s: &mut Section) -> Result<()> {
    s.unsupported_unless(
        "attentional_pool",
        is_false,
        "the attentional pooler (CoCa) is not built by clip-model",
    )?;
    s.ignore(&["attn_pooler_queries", "attn_pooler_heads"]);
    s.unsupported_unless(
        "pos_embed_type",
        |v| v == "learnable",
        "only the learnable positional embedding is built",
    )?;
    refuse_unbuilt_block_options(s)
}

/// `timm_pool` and `timm_proj`: the pooling and the head over the trunk.
fn parse_timm_head(src: &str, s: &mut Section) -> Result<(String, TimmProj)> {
    let pool: String = s.get("timm_pool", "avg".to_string())?;
    if !matches!(
        pool.as_str(),
        "" | "avg" | "max" | "avgmax" | "token" | "map"
    ) {
        bail!(
            "config {src}: `vision_cfg.timm_pool` = {pool:?} is not supported (supported: \"\", avg, max, avgmax, token, map; OpenCLIP's abs_attn / rot_attn heads are not built)"
        );
    }
    // Absent: OpenCLIP's default "linear". Null or "": no extra head, the trunk's classifier projects.
    let proj: Option<String> = match s.raw("timm_proj") {
        None => Some("linear".to_string()),
        Some(Value::Null) => None,
        Some(Value::String(p)) => Some(p.clone()),
        Some(v) => bail!(
            "config {src}: `vision_cfg.timm_proj`: expected a string or null, found {}",
            short(v)
        ),
    };
    let timm_proj = match proj.as_deref() {
        Some("linear") => TimmProj::Linear,
        Some("mlp") => TimmProj::Mlp,
        Some("none") => TimmProj::None,
        Some("") | None => TimmProj::TrunkFc,
        Some(other) => bail!(
            "config {src}: `vision_cfg.timm_proj` = {other:?} is not supported (supported: \"linear\", \"mlp\", \"none\", \"\")"
        ),
    };
    if pool.is_empty() && matches!(timm_proj, TimmProj::None | TimmProj::TrunkFc) {
        bail!(
            "config {src}: `vision_cfg.timm_pool` = \"\" with `timm_proj` = {:?} makes the trunk return an \
             unpooled feature map (timm builds it with global_pool=''), which is not supported",
            proj.unwrap_or_default()
        );
    }
    Ok((pool, timm_proj))
}

/// `image_size`: an integer or `[h, w]`, positive; absent: 224.
fn parse_image_size(src: &str, raw: Option<&Value>) -> Result<(i64, i64)> {
    let image_size = match raw {
        None | Some(Value::Null) => (224, 224),
        Some(v) => {
            if let Some(n) = v.as_i64() {
                (n, n)
            } else if let Some([h, w]) = v.as_array().map(|a| a.as_slice()) {
                match (h.as_i64(), w.as_i64()) {
                    (Some(h), Some(w)) => (h, w),
                    _ => bail!("config {src}: `vision_cfg.image_size` must be an integer or [h, w], found {}", short(v)),
                }
            } else {
                bail!(
                    "config {src}: `vision_cfg.image_size` must be an integer or [h, w], found {}",
                    short(v)
                )
            }
        }
    };
    if image_size.0 <= 0 || image_size.1 <= 0 {
        bail!("config {src}: `vision_cfg.image_size` must be positive, found {image_size:?}");
    }
    Ok(image_size)
}

fn parse_text(src: &str, v: &Value) -> Result<TextConfig> {
    let mut s = Section::new(src, "text_cfg", v)?;
    let context_length: i64 = s.get("context_length", 77)?;
    let vocab_size: i64 = s.get("vocab_size", 49408)?;
    let width: i64 = s.get("width", 512)?;
    let heads: i64 = s.get("heads", 8)?;
    let layers: i64 = s.get("layers", 12)?;
    let mlp_ratio: f64 = s.get("mlp_ratio", 4.0)?;
    let eos_id: i64 = s.get("eos_id", 2)?;
    let no_causal_mask: bool = s.get("no_causal_mask", false)?;
    let pool: String = s.get("pool_type", "argmax".to_string())?;
    let pool_type = match pool.as_str() {
        "argmax" => TextPool::Argmax,
        "first" => TextPool::First,
        "last" => TextPool::Last,
        "eos" => TextPool::Eos,
        other => bail!(
            "config {src}: `text_cfg.pool_type` = {other:?} is not supported (supported: argmax, first, last, eos)"
        ),
    };
    let hf_tokenizer_name: Option<String> = s.opt("hf_tokenizer_name")?;
    let proj_type: String = s.get("proj_type", "linear".to_string())?;
    let projection = match proj_type.as_str() {
        "linear" => true,
        "none" => false,
        other => bail!("config {src}: `text_cfg.proj_type` = {other:?} is not supported (supported: linear, none)"),
    };
    let proj_bias: bool = s.get("proj_bias", false)?;
    let (tokenizer_clean, strip_sep_token) = tokenizer_kwargs(&mut s, src)?;
    let block = parse_block_options(src, &mut s, "text_cfg")?;
    refuse_unbuilt_text_options(&mut s)?;
    // HF-only fields: not part of the model built here.
    s.ignore(&[
        "pad_id",
        "hf_model_pretrained",
        "hf_proj_type",
        "hf_pooler_type",
    ]);
    s.finish()?;
    for (k, val) in [
        ("context_length", context_length),
        ("vocab_size", vocab_size),
        ("width", width),
        ("heads", heads),
        ("layers", layers),
    ] {
        if val <= 0 {
            bail!("config {src}: `text_cfg.{k}` must be positive, found {val}");
        }
    }
    if width % heads != 0 {
        bail!("config {src}: `text_cfg.width` ({width}) must be a multiple of `text_cfg.heads` ({heads})");
    }
    if mlp_ratio.is_nan() || mlp_ratio <= 0.0 {
        bail!("config {src}: `text_cfg.mlp_ratio` must be positive, found {mlp_ratio}");
    }
    Ok(TextConfig {
        context_length,
        vocab_size,
        width,
        heads,
        layers,
        mlp_ratio,
        pool_type,
        eos_id,
        no_causal_mask,
        projection,
        proj_bias,
        block,
        hf_tokenizer_name,
        tokenizer_clean,
        strip_sep_token,
    })
}

/// `tokenizer_kwargs` (what OpenCLIP's `HFTokenizer` takes: `clean`, `strip_sep_token`) and
/// `tokenizer_mode` (only the standard one, unset).
fn tokenizer_kwargs(s: &mut Section, src: &str) -> Result<(String, bool)> {
    let mode: Option<String> = s.opt("tokenizer_mode")?;
    if let Some(mode) = mode.filter(|m| !m.is_empty()) {
        bail!("config {src}: `text_cfg.tokenizer_mode` = {mode:?} is not supported (only the standard mode)");
    }
    let kwargs: serde_json::Map<String, serde_json::Value> =
        s.opt("tokenizer_kwargs")?.unwrap_or_default();
    let mut clean = "whitespace".to_string();
    let mut strip = false;
    for (k, v) in kwargs {
        match (k.as_str(), v) {
            ("clean", serde_json::Value::String(c)) => clean = c,
            ("strip_sep_token", serde_json::Value::Bool(b)) => strip = b,
            (k, v) => bail!(
                "config {src}: `text_cfg.tokenizer_kwargs.{k}` = {v} is not supported (supported: clean, strip_sep_token)"
            ),
        }
    }
    Ok((clean, strip))
}

/// The `text_cfg` options OpenCLIP has whose non-default values build a tower this crate does
/// not: refused, naming the option.
fn refuse_unbuilt_text_options(s: &mut Section) -> Result<()> {
    s.unsupported_unless(
        "hf_model_name",
        |_| false,
        "HuggingFace text towers are not built by clip-model",
    )?;
    s.unsupported_unless(
        "embed_cls",
        is_false,
        "CoCa's class token is not built by clip-model",
    )?;
    s.unsupported_unless(
        "ls_init_value",
        |_| false,
        "text layer scale is not built by clip-model",
    )?;
    s.unsupported_unless(
        "final_ln_after_pool",
        is_false,
        "ln_final runs before pooling here",
    )?;
    refuse_unbuilt_block_options(s)
}
