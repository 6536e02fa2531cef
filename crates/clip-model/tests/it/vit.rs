//! OpenCLIP's VisionTransformer tower against OpenCLIP itself: goldens from
//! scripts/make-vit-goldens.py (weights, inputs, eval features, ClipLoss gradients; cached under
//! `.deps/golden/`), compared by `parity::run_parity` within 1e-4 relative. The tiny variants cover
//! QuickGELU, LayerScale, CLIPA's pooling options, patch dropout (off in eval; in train mode the
//! same tokens dropped as OpenCLIP's for the same seed) and the SigLIP configs' text tower
//! (CustomTextCLIP's `text.` keys, `logit_bias` under SigLipLoss, an nn.Linear projection,
//! `norm_kwargs` / `act_kwargs` in either tower); ViT-B-32 and ViT-L-14 run at full size.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::path::PathBuf;

use clip_model::{Clip, ClipConfig};
use tch::{nn, Device, Tensor};

use crate::golden::{golden, root, run_python, script_inputs};
use crate::parity::{load_weights, rel_err, run_parity};

const TOL: f64 = 1e-4;

/// The golden folder `scripts/SCRIPT OUT ARGS` makes, for a golden script that builds on
/// make-model-goldens.py (make-vit-goldens.py, make-timm-vit-goldens.py): keyed by both.
pub(crate) fn model_script_golden(script: &str, name: &str, args: &[&str]) -> Option<PathBuf> {
    let mut inputs = script_inputs(script);
    inputs.push(root().join("scripts/make-model-goldens.py"));
    golden(name, &inputs, args, |out| {
        let mut a = vec![inputs[0].as_os_str(), out.as_os_str()];
        a.extend(args.iter().map(OsStr::new));
        run_python(a);
    })
}

/// The golden folder made by `make-vit-goldens.py OUT ARGS`.
fn vit_golden(name: &str, args: &[&str]) -> Option<PathBuf> {
    model_script_golden("make-vit-goldens.py", name, args)
}

#[test]
fn tiny_vit_variants_match_openclip() {
    let _rng = crate::rng_lock();
    let Some(dir) = vit_golden("vit-tiny", &[]) else {
        return;
    };
    for name in [
        "vit_tiny_test",
        "vit_tiny_quickgelu",
        "vit_tiny_ls",
        "vit_tiny_clipa",
        "vit_tiny_patchdrop",
        "vit_tiny_siglip_text",
        "vit_tiny_siglip_both",
    ] {
        let cfg = dir.join(format!("{name}.json"));
        let r = run_parity(
            cfg.to_str().unwrap(),
            &dir.join(format!("{name}.safetensors")),
        );
        assert!(r.image.is_finite() && r.text.is_finite() && r.worst_grad.1.is_finite());
    }
}

/// Patch dropout is on in train mode only, and drops the same tokens as OpenCLIP's PatchDropout
/// after the same `manual_seed` (both draw from the CPU generator).
#[test]
fn patch_dropout_matches_openclip_in_training() {
    let _rng = crate::rng_lock();
    let Some(dir) = vit_golden("vit-tiny", &[]) else {
        return;
    };
    let g: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("vit_tiny_patchdrop.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let train: HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.join("vit_tiny_patchdrop.train.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    let cfg = ClipConfig::load(dir.join("vit_tiny_patchdrop.json").to_str().unwrap()).unwrap();
    assert_eq!(cfg.vision.vit().patch_dropout, 0.5);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Clip::new(&vs.root(), &cfg).unwrap();
    load_weights(&model, &g);
    tch::no_grad(|| {
        let eval = model.encode_image(&g["image"], false);
        assert!(rel_err(&eval, &g["image_features"]) <= TOL);
        tch::manual_seed(1234);
        let ours = model.encode_image(&g["image"], true);
        let e = rel_err(&ours, &train["image_features_train"]);
        assert!(e <= TOL, "train-mode features rel err {e:.3e}");
        // Dropping patches changed the features: the comparison above is not the eval one again.
        assert!(rel_err(&ours, &eval) > 1e-3);
    });
}

/// ViT-B-32 at full size, batch 2 at 224 px (golden ~1.2 GB, made in about a minute).
#[test]
fn vit_b_32_matches_openclip() {
    let _rng = crate::rng_lock();
    let Some(dir) = vit_golden("ViT-B-32", &["--model", "ViT-B-32"]) else {
        return;
    };
    run_parity("ViT-B-32", &dir.join("ViT-B-32.safetensors"));
}

/// ViT-L-14 at full size, batch 2 at 224 px (golden ~3.4 GB, ~5 GB of RAM to make).
#[test]
fn vit_l_14_matches_openclip() {
    let _rng = crate::rng_lock();
    let Some(dir) = vit_golden("ViT-L-14", &["--model", "ViT-L-14"]) else {
        return;
    };
    run_parity("ViT-L-14", &dir.join("ViT-L-14.safetensors"));
}

/// `lock_image_tower(n)` leaves exactly the parameters OpenCLIP's leaves trainable, for a ViT
/// (`VisionTransformer.lock` groups) and a ConvNeXt (timm's `group_matcher`), for several `n`.
#[test]
fn lock_image_tower_groups_match_openclip() {
    let _rng = crate::rng_lock();
    let Some(dir) = vit_golden("vit-lock-groups", &["--lock-groups"]) else {
        return;
    };
    let want: HashMap<String, Vec<String>> =
        serde_json::from_str(&std::fs::read_to_string(dir.join("lock_groups.json")).unwrap())
            .unwrap();
    assert_eq!(want.len(), 12);
    for (case, trainable) in &want {
        let (name, n) = case.split_once(':').unwrap();
        let cfg = ClipConfig::load(name).unwrap();
        let vs = nn::VarStore::new(Device::Cpu);
        let model = Clip::new(&vs.root(), &cfg).unwrap();
        model.lock_image_tower(n.parse().unwrap());
        let ours: Vec<String> = model
            .named_parameters()
            .iter()
            .filter(|(_, t)| t.requires_grad())
            .map(|(k, _)| k.clone())
            .collect();
        let mut ours_sorted = ours.clone();
        ours_sorted.sort();
        let mut want_sorted = trainable.clone();
        want_sorted.sort();
        assert_eq!(ours_sorted, want_sorted, "{case}");
    }
}

fn tiny_vit(patch_dropout: f64) -> (nn::VarStore, Clip, Tensor, Tensor) {
    let mut cfg = ClipConfig::load("vit_tiny_test").unwrap();
    cfg.vision.vit_mut().patch_dropout = patch_dropout;
    tch::manual_seed(3);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Clip::new(&vs.root(), &cfg).unwrap();
    let images = Tensor::randn([4, 3, 32, 32], (tch::Kind::Float, Device::Cpu));
    let text = Tensor::randint_low(1, 999, [4, 77], (tch::Kind::Int64, Device::Cpu));
    (vs, model, images, text)
}

fn grads(m: &Clip, images: &Tensor, text: &Tensor, seed: i64) -> Vec<(String, Tensor)> {
    for (_, t) in m.named_parameters() {
        t.shallow_clone().zero_grad();
    }
    tch::manual_seed(seed);
    let (img, txt, s) = m.forward(images, text, true);
    let logits = s * img.matmul(&txt.tr());
    let labels = Tensor::arange(4, (tch::Kind::Int64, Device::Cpu));
    logits.cross_entropy_for_logits(&labels).backward();
    m.named_parameters()
        .iter()
        .map(|(n, t)| (n.clone(), t.grad().copy()))
        .collect()
}

/// Gradient checkpointing recomputes the ViT's blocks in backward: the gradients are those of
/// the plain run, with patch dropout drawing its tokens once, before the blocks.
#[test]
fn vit_grad_checkpointing_gives_identical_gradients() {
    let _rng = crate::rng_lock();
    let (_vs, m, images, text) = tiny_vit(0.5);
    let plain = grads(&m, &images, &text, 7);
    m.set_grad_checkpointing(true);
    let ckpt = grads(&m, &images, &text, 7);
    for ((n, a), (_, b)) in plain.iter().zip(&ckpt) {
        let e = rel_err(b, a);
        assert!(e <= 1e-6, "{n}: {e:e}");
    }
    // Another seed drops other tokens: the gradients depend on the draw.
    m.set_grad_checkpointing(false);
    let other = grads(&m, &images, &text, 8);
    assert!(rel_err(&other[0].1, &plain[0].1) > 1e-4);
}

/// `to_bf16(true)` on a ViT converts what OpenCLIP's `convert_weights_to_lp` converts and keeps
/// the rest (embeddings, LayerNorms, logit_scale) fp32; the model then runs on bf16 images.
#[test]
fn vit_bf16_weights_follow_convert_weights_to_lp() {
    let _rng = crate::rng_lock();
    let (_vs, m, images, text) = tiny_vit(0.0);
    m.to_bf16(true);
    let kind = |k: &str| {
        m.named_parameters()
            .iter()
            .find(|(n, _)| n == k)
            .unwrap_or_else(|| panic!("{k}"))
            .1
            .kind()
    };
    for k in [
        "visual.conv1.weight",
        "visual.proj",
        "visual.transformer.resblocks.0.attn.in_proj_weight",
        "visual.transformer.resblocks.0.attn.out_proj.bias",
        "visual.transformer.resblocks.1.mlp.c_fc.weight",
        "transformer.resblocks.0.mlp.c_proj.bias",
        "text_projection",
    ] {
        assert_eq!(kind(k), tch::Kind::BFloat16, "{k}");
    }
    for k in [
        "visual.class_embedding",
        "visual.positional_embedding",
        "visual.ln_pre.weight",
        "visual.transformer.resblocks.0.ln_1.weight",
        "visual.ln_post.bias",
        "token_embedding.weight",
        "positional_embedding",
        "ln_final.weight",
        "logit_scale",
    ] {
        assert_eq!(kind(k), tch::Kind::Float, "{k}");
    }
    let (img, txt, _) =
        tch::no_grad(|| m.forward(&images.to_kind(tch::Kind::BFloat16), &text, false));
    assert_eq!(
        (img.kind(), txt.kind()),
        (tch::Kind::BFloat16, tch::Kind::BFloat16)
    );
    assert!(img.isfinite().all().int64_value(&[]) == 1);
}

/// `weights::resize_pos_embeds` resizes as OpenCLIP's `resize_pos_embed` (bicubic, antialiased,
/// class token kept; to a square and a non-square grid) and `resize_text_pos_embed` (linear).
#[test]
fn positional_embeddings_resize_as_openclip() {
    let _rng = crate::rng_lock();
    let Some(dir) = vit_golden("vit-resize", &["--resize"]) else {
        return;
    };
    let g: HashMap<String, Tensor> = Tensor::read_safetensors(dir.join("resize.safetensors"))
        .unwrap()
        .into_iter()
        .collect();
    for (name, size) in [("48", (48, 48)), ("24x40", (24, 40))] {
        let mut cfg = ClipConfig::load("vit_tiny_test").unwrap();
        cfg.vision.image_size = size;
        cfg.text.context_length = 32;
        let mut sd = vec![
            (
                "visual.positional_embedding".to_string(),
                g["in.visual"].copy(),
            ),
            ("positional_embedding".to_string(), g["in.text"].copy()),
        ];
        clip_model::weights::resize_pos_embeds(&mut sd, &cfg).unwrap();
        for ((_, t), part) in sd.iter().zip(["visual", "text"]) {
            let want = &g[&format!("{name}.{part}")];
            let e = rel_err(t, want);
            assert!(e <= 1e-6, "{name} {part}: rel err {e:e}");
        }
        // The model built for that size loads them strictly.
        let vs = nn::VarStore::new(Device::Cpu);
        let _m = Clip::new(&vs.root(), &cfg).unwrap();
        let sizes: Vec<Vec<i64>> = sd.iter().map(|(_, t)| t.size()).collect();
        let (gh, gw) = cfg.vision.vit().grid_size(size);
        assert_eq!(sizes, vec![vec![gh * gw + 1, 48], vec![32, 32]]);
    }
}
