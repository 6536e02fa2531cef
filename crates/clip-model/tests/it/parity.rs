//! Parity with OpenCLIP 3.3.0 itself: goldens written by scripts/make-model-goldens.py hold the
//! random-init weights (state-dict keys), inputs, encode_image / encode_text outputs and the gradient
//! of ClipLoss for every parameter (SigLipLoss's for a model with `logit_bias`), in fp32 on CPU
//! (eval mode). This test loads the weights into the Rust model, runs the same forward and loss
//! backward, and compares.
//!
//! - tiny config (`clip_tiny_test`, batch 4): tests/golden/model/clip_tiny_test.safetensors, committed.
//! - `convnext_large_d_320` (batch 2, 320 px, ~2.8 GB): `scripts/make-model-goldens.py DIR
//!   --only-large`, cached under `.deps/golden/` (see `golden`).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use crate::golden::{golden, run_python, script_inputs};

use clip_model::{l2_normalize, Clip, ClipConfig};
use tch::{nn, Device, Kind, Tensor};

const TOL: f64 = 1e-4;
const NON_PARAM_KEYS: &[&str] = &["image", "text", "image_features", "text_features", "loss"];

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/golden/model")
}

/// The safetensors header's `__metadata__` (tch does not expose it).
pub(crate) fn safetensors_metadata(path: &Path) -> HashMap<String, String> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).unwrap();
    let mut len = [0u8; 8];
    f.read_exact(&mut len).unwrap();
    let mut header = vec![0u8; u64::from_le_bytes(len) as usize];
    f.read_exact(&mut header).unwrap();
    let v: serde_json::Value = serde_json::from_slice(&header).unwrap();
    v.get("__metadata__")
        .and_then(|m| m.as_object())
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// max|a - b| / max|ref|.
pub(crate) fn rel_err(a: &Tensor, reference: &Tensor) -> f64 {
    assert_eq!(a.size(), reference.size());
    let a = a.to_kind(Kind::Double);
    let r = reference.to_kind(Kind::Double);
    let diff = (&a - &r).abs().max().double_value(&[]);
    let scale = r.abs().max().double_value(&[]);
    if scale == 0.0 {
        diff
    } else {
        diff / scale
    }
}

/// OpenCLIP's ClipLoss for a world of one (the same formula as clip-train's `clip_loss`).
fn clip_loss(img: &Tensor, txt: &Tensor, scale: &Tensor) -> Tensor {
    let n = img.size()[0];
    let labels = Tensor::arange(n, (Kind::Int64, img.device()));
    let per_image = (scale * img).matmul(&txt.tr());
    let per_text = (scale * txt).matmul(&img.tr());
    (per_image.cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Mean, -100, 0.0)
        + per_text.cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Mean, -100, 0.0))
        / 2.0
}

/// OpenCLIP's SigLipLoss for a world of one: −Σ log σ(y ⊙ (s·I·Tᵀ + b)) / N, y = 2·eye − 1
/// (clip-train's `siglip.rs` computes it too; this crate's tests cannot depend on clip-train).
fn siglip_loss(img: &Tensor, txt: &Tensor, scale: &Tensor, bias: &Tensor) -> Tensor {
    let n = img.size()[0];
    let logits = (scale * img).matmul(&txt.tr()) + bias;
    let labels = Tensor::eye(n, (Kind::Float, img.device())) * 2.0 - 1.0;
    -(labels * logits).log_sigmoid().sum(Kind::Float) / n as f64
}

/// Copies the golden weights into the model's variables by name; the key sets must be equal.
pub(crate) fn load_weights(model: &Clip, golden: &HashMap<String, Tensor>) {
    let golden_params: HashSet<&str> = golden
        .keys()
        .map(|k| k.as_str())
        .filter(|k| !k.starts_with("grad.") && !NON_PARAM_KEYS.contains(k))
        .collect();
    let ours: HashSet<&str> = model
        .named_parameters()
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    let missing: Vec<_> = golden_params.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&golden_params).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "key sets differ: missing in Rust {missing:?}, extra in Rust {extra:?}"
    );
    tch::no_grad(|| {
        for (name, t) in model.named_parameters() {
            let src = &golden[name];
            assert_eq!(t.size(), src.size(), "shape of {name}");
            t.shallow_clone().copy_(src);
        }
    });
}

pub(crate) struct Report {
    pub image: f64,
    pub text: f64,
    pub loss: f64,
    pub worst_grad: (String, f64),
}

pub(crate) fn run_parity(cfg_name: &str, golden_path: &Path) -> Report {
    run_parity_with(&ClipConfig::load(cfg_name).unwrap(), golden_path, TOL)
}

/// Loads the golden's weights into a model of `cfg`, runs the same forward and loss backward
/// (SigLipLoss when the model has `logit_bias`, else ClipLoss), and checks the state-dict order,
/// the features, the loss and every gradient within `tol` of OpenCLIP's.
pub(crate) fn run_parity_with(cfg: &ClipConfig, golden_path: &Path, tol: f64) -> Report {
    let t0 = std::time::Instant::now();
    let cfg_name = cfg.name.as_str();
    let golden: HashMap<String, Tensor> = Tensor::read_safetensors(golden_path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", golden_path.display()))
        .into_iter()
        .collect();
    let meta = safetensors_metadata(golden_path);
    let vs = nn::VarStore::new(Device::Cpu);
    let model = Clip::new_uninitialised(&vs.root(), cfg).unwrap();
    load_weights(&model, &golden);
    // The ordered parameter list is OpenCLIP's state-dict order.
    let order: Vec<String> = serde_json::from_str(&meta["param_order"]).unwrap();
    let ours: Vec<String> = model
        .named_parameters()
        .iter()
        .map(|(n, _)| n.clone())
        .collect();
    assert_eq!(ours, order, "state-dict order");
    assert_eq!(model.parameter_count().to_string(), meta["param_count"]);
    eprintln!("{cfg_name}: loaded in {:.1}s", t0.elapsed().as_secs_f64());

    let t1 = std::time::Instant::now();
    let img = model.encode_image(&golden["image"], false);
    let txt = model.encode_text(&golden["text"]);
    let image = rel_err(&img, &golden["image_features"]);
    let text = rel_err(&txt, &golden["text_features"]);
    let (img_n, txt_n, scale) = (
        l2_normalize(&img),
        l2_normalize(&txt),
        model.logit_scale.exp(),
    );
    let loss_t = match &model.logit_bias {
        Some(bias) => siglip_loss(&img_n, &txt_n, &scale, bias),
        None => clip_loss(&img_n, &txt_n, &scale),
    };
    let loss = rel_err(&loss_t.reshape([1]), &golden["loss"]);
    loss_t.backward();
    eprintln!(
        "{cfg_name}: forward+backward in {:.1}s",
        t1.elapsed().as_secs_f64()
    );

    let mut worst = (String::new(), 0.0);
    let mut failures = Vec::new();
    for (name, t) in model.named_parameters() {
        let g = t.grad();
        assert!(g.defined(), "no gradient for {name}");
        let e = rel_err(&g, &golden[&format!("grad.{name}")]);
        if e > worst.1 {
            worst = (name.clone(), e);
        }
        if e.is_nan() || e > tol {
            failures.push(format!("{name}: {e:.3e}"));
        }
    }
    eprintln!(
        "{cfg_name}: rel err image_features {image:.3e}, text_features {text:.3e}, loss {loss:.3e}, \
         worst grad {} {:.3e} ({} params)",
        worst.0,
        worst.1,
        model.named_parameters().len()
    );
    assert!(image <= tol, "image_features rel err {image:.3e}");
    assert!(text <= tol, "text_features rel err {text:.3e}");
    assert!(loss <= tol, "loss rel err {loss:.3e}");
    assert!(
        failures.is_empty(),
        "gradients over tolerance: {}",
        failures.join(", ")
    );
    Report {
        image,
        text,
        loss,
        worst_grad: worst,
    }
}

#[test]
fn tiny_config_matches_openclip() {
    let _rng = crate::rng_lock();
    let r = run_parity(
        "clip_tiny_test",
        &golden_dir().join("clip_tiny_test.safetensors"),
    );
    assert!(
        r.image.is_finite()
            && r.text.is_finite()
            && r.loss.is_finite()
            && r.worst_grad.1.is_finite()
    );
}

/// `convnext_large_d_320`'s golden (~2.8 GB) is made once by make-model-goldens.py (about 45 s
/// and 5 GB of RAM on 2 cores) and cached like the others.
#[test]
fn convnext_large_d_320_matches_openclip() {
    let _rng = crate::rng_lock();
    let inputs = script_inputs("make-model-goldens.py");
    let Some(dir) = golden("convnext_large_d_320", &inputs, &["--only-large"], |out| {
        run_python([
            inputs[0].as_os_str(),
            out.as_os_str(),
            OsStr::new("--only-large"),
        ]);
    }) else {
        return;
    };
    run_parity(
        "convnext_large_d_320",
        &dir.join("convnext_large_d_320.safetensors"),
    );
}
