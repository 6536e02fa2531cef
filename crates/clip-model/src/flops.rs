//! Model FLOPs per sample, counted from the config (multiply-adds × 2 of every convolution and
//! matrix product; norms, activations and softmax are left out, as MFU conventions do). They turn
//! samples/s into the model FLOP utilisation the trainer logs.

use crate::config::{ClipConfig, TimmProj, TimmTrunk, TimmVisionConfig, VisionTower, VitConfig};
use crate::convnext::ConvNextConfig;
use crate::timm_vit::{GlobalPool, TimmVitConfig};

/// Forward FLOPs of one sample through both towers.
pub fn forward_flops(cfg: &ClipConfig) -> f64 {
    image_forward_flops(cfg) + text_forward_flops(cfg)
}

/// FLOPs of one trained sample: forward + backward (2× forward), plus one more forward when
/// gradient checkpointing recomputes the blocks (the definition docs/benchmarks.md uses).
pub fn train_flops(cfg: &ClipConfig, grad_checkpointing: bool) -> f64 {
    forward_flops(cfg) * if grad_checkpointing { 4.0 } else { 3.0 }
}

fn image_forward_flops(cfg: &ClipConfig) -> f64 {
    match &cfg.vision.tower {
        VisionTower::Timm(t) => timm_forward_flops(t, cfg.vision.image_size, cfg.embed_dim),
        VisionTower::Vit(v) => vit_forward_flops(v, cfg.vision.image_size, cfg.embed_dim),
    }
}

/// A ViT at full length (patch dropout, a training-only saving, is left out): the patch
/// embedding, per layer and token the qkv + out projections (4w²) and the MLP (2·w·hidden) plus
/// the scores and weighted sum (2·n·w), then the projection.
fn vit_forward_flops(v: &VitConfig, image_size: (i64, i64), embed_dim: i64) -> f64 {
    let (gh, gw) = v.grid_size(image_size);
    let patches = (gh * gw) as f64;
    let n = patches + 1.0;
    let d = v.width as f64;
    let hidden = v.mlp_width() as f64;
    let embed = 2.0 * patches * (3 * v.patch_size * v.patch_size) as f64 * d;
    let per_layer = n * (2.0 * 4.0 * d * d + 2.0 * 2.0 * d * hidden) + 2.0 * 2.0 * n * n * d;
    embed + v.layers as f64 * per_layer + 2.0 * d * embed_dim as f64
}

/// The trunk, then OpenCLIP's head over its pooled features.
fn timm_forward_flops(cfg: &TimmVisionConfig, image_size: (i64, i64), embed_dim: i64) -> f64 {
    let trunk = match &cfg.trunk {
        TimmTrunk::ConvNext(c) => convnext_trunk_flops(c, image_size),
        TimmTrunk::Vit(v) => timm_vit_trunk_flops(v, image_size),
    };
    let (prev, e) = (cfg.trunk_features() as f64, embed_dim as f64);
    trunk
        + match cfg.timm_proj {
            TimmProj::Linear => 2.0 * prev * e,
            TimmProj::Mlp => 2.0 * prev * 2.0 * e + 2.0 * 2.0 * e * e,
            // The trunk's classifier, built with embed_dim outputs.
            TimmProj::TrunkFc => 2.0 * prev * e,
            TimmProj::None => 0.0,
        }
}

fn convnext_trunk_flops(t: &ConvNextConfig, image_size: (i64, i64)) -> f64 {
    let (h, w) = image_size;
    let (mut h, mut w) = ((h / t.patch_size) as f64, (w / t.patch_size) as f64);
    let k2 = (t.kernel_size * t.kernel_size) as f64;
    // Stem: patch_size² × 3 → dims[0] at every output pixel.
    let mut flops = 2.0 * h * w * (3 * t.patch_size * t.patch_size) as f64 * t.dims[0] as f64;
    let mut prev = t.dims[0] as f64;
    for (stage, (&depth, &dim)) in t.depths.iter().zip(&t.dims).enumerate() {
        let c = dim as f64;
        if stage > 0 {
            // Downsample: 2×2 stride-2 conv prev → c.
            h = (h / 2.0).floor();
            w = (w / 2.0).floor();
            flops += 2.0 * h * w * 4.0 * prev * c;
        }
        let hidden = (t.mlp_ratio * c).floor();
        // Depthwise k×k conv, then the MLP c → hidden → c.
        flops += depth as f64 * h * w * (2.0 * k2 * c + 4.0 * c * hidden);
        prev = c;
    }
    flops
}

/// As [`vit_forward_flops`] over the patches and prefix tokens, plus the attention pool: the
/// latent's q, the tokens' k and v, one query's scores, the output projection and the MLP.
fn timm_vit_trunk_flops(v: &TimmVitConfig, image_size: (i64, i64)) -> f64 {
    let (ph, pw) = v.patch_size;
    let patches = ((image_size.0 / ph) * (image_size.1 / pw)) as f64;
    let n = patches + v.num_prefix_tokens() as f64;
    let (d, hidden) = (v.embed_dim as f64, v.mlp_hidden as f64);
    let embed = 2.0 * patches * (3 * ph * pw) as f64 * d;
    let per_layer = n * (2.0 * 4.0 * d * d + 2.0 * 2.0 * d * hidden) + 2.0 * 2.0 * n * n * d;
    let pool = if v.global_pool == GlobalPool::Map {
        2.0 * d * d * (3.0 + 2.0 * n) + 2.0 * 2.0 * n * d + 2.0 * 2.0 * d * hidden
    } else {
        0.0
    };
    embed + v.depth as f64 * per_layer + pool
}

fn text_forward_flops(cfg: &ClipConfig) -> f64 {
    let t = &cfg.text;
    let (n, d) = (t.context_length as f64, t.width as f64);
    let hidden = (t.mlp_ratio * d).floor();
    // Per layer: qkv + out projections (4d²), the MLP (2·d·hidden) per token; scores and the
    // weighted sum (2·n·d) per token. The causal mask halves no kernel's work in SDPA's math path.
    let per_layer = n * (2.0 * 4.0 * d * d + 2.0 * 2.0 * d * hidden) + 2.0 * 2.0 * n * n * d;
    let proj = if t.projection {
        2.0 * d * cfg.embed_dim as f64
    } else {
        0.0
    };
    t.layers as f64 * per_layer + proj
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/benchmarks.md's figure for the reference model: 474 GFLOP per trained sample,
    /// 632 with gradient checkpointing (ConvNeXt-L at 320 px ≈ 70 GMAC, text tower ≈ 9 GMAC).
    #[test]
    fn convnext_large_d_320_matches_the_reference_figure() {
        let cfg = ClipConfig::load("convnext_large_d_320").unwrap();
        let g = train_flops(&cfg, false) / 1e9;
        assert!((g - 474.0).abs() < 474.0 * 0.02, "{g} GFLOP");
        let g = train_flops(&cfg, true) / 1e9;
        assert!((g - 632.0).abs() < 632.0 * 0.02, "{g} GFLOP");
    }

    /// timm's published cost of ConvNeXt-B at 224 px: 15.4 GMAC.
    #[test]
    fn convnext_base_trunk_matches_timm() {
        let mut cfg = ClipConfig::load("convnext_base_w").unwrap();
        cfg.vision.image_size = (224, 224);
        cfg.vision.timm_mut().convnext_mut().dims = vec![128, 256, 512, 1024];
        cfg.vision.timm_mut().timm_proj = TimmProj::None;
        let gmac = image_forward_flops(&cfg) / 2e9;
        assert!((gmac - 15.4).abs() < 0.3, "{gmac} GMAC");
    }

    /// OpenCLIP's published image-tower costs (its model profile table, GMACs): ViT-B/32 at
    /// 224 px 4.41, ViT-L/14 81.08, ViT-H/14 167.4 (torch's FlopCounterMode on open_clip 3.3.0's
    /// `encode_image` counts 4.409, 81.01 and 167.3).
    #[test]
    fn vit_image_towers_match_openclip_profile() {
        for (name, gmac) in [("ViT-B-32", 4.41), ("ViT-L-14", 81.08), ("ViT-H-14", 167.4)] {
            let cfg = ClipConfig::load(name).unwrap();
            let got = image_forward_flops(&cfg) / 2e9;
            assert!(
                (got - gmac).abs() < gmac * 0.02,
                "{name}: {got} GMAC, expected {gmac}"
            );
        }
    }
}
