//! The timm ViT trunk (`visual.trunk.*`) against OpenCLIP + timm themselves: goldens from
//! scripts/make-timm-vit-goldens.py (weights, inputs, eval features, loss gradients; cached under
//! `.deps/golden/`), every feature and gradient within 1e-5 of timm's (relative to the largest
//! value), and timm's position-embedding resampling.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clip_model::timm_vit::resample_abs_pos_embed;
use clip_model::{ClipConfig, TimmTrunk, VisionTower};
use tch::Tensor;

use crate::parity::{rel_err, run_parity_with, safetensors_metadata};

const TOL: f64 = 1e-5;

/// The golden folder made by `make-timm-vit-goldens.py OUT ARGS`.
fn timm_golden(name: &str, args: &[&str]) -> Option<PathBuf> {
    crate::vit::model_script_golden("make-timm-vit-goldens.py", name, args)
}

/// The case's config as the golden built it: its blocks cut to the metadata's counts.
fn case_config(dir: &Path, name: &str, meta: &HashMap<String, String>) -> ClipConfig {
    let mut cfg = ClipConfig::load(dir.join(format!("{name}.json")).to_str().unwrap()).unwrap();
    if let Some(d) = serde_json::from_str::<Option<i64>>(&meta["trunk_depth"]).unwrap() {
        match &mut cfg.vision.tower {
            VisionTower::Timm(t) => match &mut t.trunk {
                TimmTrunk::Vit(v) => v.depth = d,
                TimmTrunk::ConvNext(_) => panic!("{name}: not a ViT trunk"),
            },
            VisionTower::Vit(_) => panic!("{name}: not a timm tower"),
        }
    }
    if let Some(l) = serde_json::from_str::<Option<i64>>(&meta["text_layers"]).unwrap() {
        cfg.text.layers = l;
    }
    cfg
}

/// [`run_parity_with`] on the case's config at `TOL`.
fn check_case(dir: &Path, name: &str) {
    let path = dir.join(format!("{name}.safetensors"));
    let cfg = case_config(dir, name, &safetensors_metadata(&path));
    let r = run_parity_with(&cfg, &path, TOL);
    assert!(r.image.is_finite() && r.text.is_finite() && r.worst_grad.1.is_finite());
}

/// Register tokens with average pooling and fc_norm, OpenCLIP's config with LayerScale and no
/// qkv bias, a class-token, pre-norm, QuickGELU trunk whose classifier projects, and SigLIP 2's
/// SO400M/16 trunk (gelu_tanh, the MAP head) under a linear head.
#[test]
fn timm_vit_trunks_match_openclip_and_timm() {
    let _rng = crate::rng_lock();
    let Some(dir) = timm_golden("timm-vit", &[]) else {
        return;
    };
    for name in [
        "timm_vit_reg4_gap",
        "vit_medium_patch16_gap_256",
        "timm_vit_clip_token",
        "timm_vit_so400m16_map",
    ] {
        check_case(&dir, name);
    }
}

/// `resample_abs_pos_embed` equals timm's for prefix rows kept or not, grids grown, shrunk and
/// made non-square.
#[test]
fn position_embeddings_resample_as_timm() {
    let Some(dir) = timm_golden("timm-vit-resample", &["--resample"]) else {
        return;
    };
    let path = dir.join("resample.safetensors");
    let g: HashMap<String, Tensor> = Tensor::read_safetensors(&path)
        .unwrap()
        .into_iter()
        .collect();
    let cases: HashMap<String, (i64, [i64; 2], [i64; 2])> =
        serde_json::from_str(&safetensors_metadata(&path)["cases"]).unwrap();
    assert_eq!(cases.len(), 3);
    for (name, (prefix, old, new)) in cases {
        let ours = resample_abs_pos_embed(
            &g[&format!("in.{name}")],
            (new[0], new[1]),
            (old[0], old[1]),
            prefix,
        );
        let e = rel_err(&ours, &g[&format!("out.{name}")]);
        assert!(e <= TOL, "{name}: {e:.2e}");
    }
}

/// The whole ViT-B-16-SigLIP2 (its 256k-token vocabulary makes it 375 M parameters): the MAP
/// head, the SigLIP text tower under `text.` (no causal mask, last-token pooling, a biased
/// projection, LayerNorm eps 1e-6, tanh GELU), logit_bias under SigLipLoss.
#[test]
fn vit_b_16_siglip2_matches_openclip_and_timm() {
    let _rng = crate::rng_lock();
    let Some(dir) = timm_golden("timm-vit-siglip2", &["ViT-B-16-SigLIP2"]) else {
        return;
    };
    check_case(&dir, "ViT-B-16-SigLIP2");
}

/// ViT-SO400M-14-SigLIP-384 with the same widths and 2 blocks per tower.
#[test]
fn shallow_so400m_siglip_matches_openclip_and_timm() {
    let _rng = crate::rng_lock();
    let name = "ViT-SO400M-14-SigLIP-384-shallow";
    let Some(dir) = timm_golden("timm-vit-so400m", &[name]) else {
        return;
    };
    check_case(&dir, name);
}
