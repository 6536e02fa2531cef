//! One training step (`step::forward_backward` → ClipLoss → backward → clip_grad_norm → AdamW with
//! OpenCLIP's groups → logit-scale clamp), twice, against OpenCLIP's on the same weights and batch
//! (CPU; fp32, and the bf16 / pure_bf16 low-precision models; fp32 with `--siglip`'s model and
//! SigLipLoss), on the tiny ConvNeXt CLIP and the tiny ViT CLIP, and with `--siglip` on the whole
//! ViT-B-16-SigLIP2 (timm trunk with the MAP head, SigLIP text tower under `text.`).
use crate::common::get;
use crate::golden::{root, run_python, script_inputs};
use std::ffi::OsStr;
use std::path::PathBuf;

use clip_model::{weights, Clip, ClipConfig};
use clip_train::loss::LocalOnly;
use clip_train::optimizer::{clip_grad_norm, AdamW, AdamWConfig};
use clip_train::scaler::{GradScaler, ScalerState};
use clip_train::siglip::SigLipDist;
use clip_train::step::{forward_backward, LossKind, StepOptions};
use tch::{nn::VarStore, Device, Tensor};

const VIT: &str = "vit_tiny_test";
const SIGLIP2: &str = "ViT-B-16-SigLIP2";

/// A model's initial weights and batch: `clip_tiny_test`'s committed golden, `vit_tiny_test`'s
/// from scripts/make-vit-goldens.py, or ViT-B-16-SigLIP2's from scripts/make-timm-vit-goldens.py
/// (cached; `None` after a loud skip).
fn tiny_weights(model: &str) -> Option<PathBuf> {
    if model == SIGLIP2 {
        let mut inputs = script_inputs("make-timm-vit-goldens.py");
        inputs.push(root().join("scripts/make-model-goldens.py"));
        let dir = crate::golden::golden("timm-vit-siglip2", &inputs, &[SIGLIP2], |out| {
            run_python([inputs[0].as_os_str(), out.as_os_str(), OsStr::new(SIGLIP2)]);
        })?;
        return Some(dir.join(format!("{SIGLIP2}.safetensors")));
    }
    if model != VIT {
        return Some(root().join("tests/golden/model/clip_tiny_test.safetensors"));
    }
    let mut inputs = script_inputs("make-vit-goldens.py");
    inputs.push(root().join("scripts/make-model-goldens.py"));
    let dir = crate::golden::golden("vit-tiny", &inputs, &[], |out| {
        run_python([inputs[0].as_os_str(), out.as_os_str()]);
    })?;
    Some(dir.join("vit_tiny_test.safetensors"))
}

/// OpenCLIP's steps on `model` at this `--precision` (scripts/make-step-goldens.py, cached);
/// `None` after a loud skip where it is not cached and there is no Python.
fn golden(precision: &str, model: &str) -> Option<Vec<(String, Tensor)>> {
    golden_of(precision, false, model)
}

/// [`golden`], with `--siglip`'s model and loss when `siglip`.
fn golden_of(precision: &str, siglip: bool, model: &str) -> Option<Vec<(String, Tensor)>> {
    let weights = tiny_weights(model)?;
    let mut inputs = script_inputs("make-step-goldens.py");
    inputs.push(weights.clone());
    let mut args = vec![precision];
    let mut name = format!("step-{precision}");
    if siglip {
        args.push("siglip");
        name.push_str("-siglip");
    }
    if model == VIT || model == SIGLIP2 {
        args.extend([model, weights.to_str().unwrap()]);
        let tag = if model == VIT { "vit" } else { model };
        name = name.replacen("step-", &format!("step-{tag}-"), 1);
    }
    let dir = crate::golden::golden(&name, &inputs, &args, |out| {
        let out = out.join("steps.safetensors");
        let mut a = vec![inputs[0].as_os_str(), out.as_os_str()];
        a.extend(args.iter().map(OsStr::new));
        run_python(a);
    })?;
    Some(Tensor::read_safetensors(dir.join("steps.safetensors")).unwrap())
}

/// How the golden's model starts.
#[derive(Clone, Copy, PartialEq)]
enum Start {
    /// The golden's weights.
    Golden,
    /// `logit_scale` set to 5 (above ln 100, as the golden script sets it for fp32 and bf16).
    RaisedScale,
    /// `--siglip`'s model: logit_scale ln 10 and logit_bias −10 (their initial values, as
    /// OpenCLIP's main.py has the factory set them), the rest the golden's.
    SigLip,
}

/// The tiny `model` started as `start` says, and the golden batch.
fn model_and_batch(model: &str, start: Start) -> (VarStore, Clip, Tensor, Tensor) {
    let init = Tensor::read_safetensors(tiny_weights(model).unwrap()).unwrap();
    let vs = VarStore::new(Device::Cpu);
    let mut cfg = ClipConfig::load(model).unwrap();
    if start == Start::SigLip {
        (cfg.init_logit_scale, cfg.init_logit_bias) = (10f64.ln(), Some(-10.0));
    }
    let model = Clip::new(&vs.root(), &cfg).unwrap();
    let sd: Vec<(String, Tensor)> = model
        .named_parameters()
        .iter()
        .map(|(k, t)| {
            let v = match (start, k.as_str()) {
                (Start::RaisedScale, "logit_scale") => Tensor::from(5.0f32),
                (Start::SigLip, "logit_scale" | "logit_bias") => t.copy(),
                _ => get(&init, k),
            };
            (k.clone(), v)
        })
        .collect();
    weights::load_state_dict(&vs, sd).unwrap();
    let (image, text) = (get(&init, "image"), get(&init, "text"));
    (vs, model, image, text)
}

/// The golden script's optimizer.
const ADAMW: AdamWConfig = AdamWConfig {
    beta1: 0.9,
    beta2: 0.98,
    eps: 1e-6,
    weight_decay: 0.2,
};

/// One step as the trainer takes it with this loss (eval-mode forward: the golden turns drop
/// path off), with OpenCLIP's clipping at 0.5; returns (loss, grad norm).
fn step_with(
    loss: LossKind,
    model: &Clip,
    opt: &mut AdamW,
    image: &Tensor,
    text: &Tensor,
    lr: f64,
) -> (f64, f64) {
    opt.zero_grad().unwrap();
    let opts = StepOptions {
        autocast: None,
        loss_scale: None,
        train: false,
        loss,
    };
    let batch = [(image.shallow_clone(), text.shallow_clone())];
    let loss = forward_backward(model, &batch, &LocalOnly, &opts, &|_| 0).unwrap();
    let norm = clip_grad_norm(&opt.params, 0.5).unwrap();
    opt.step(lr, None).unwrap();
    model.clamp_logit_scale();
    (loss.double_value(&[]), norm.double_value(&[]))
}

/// [`step_with`] ClipLoss.
fn step(model: &Clip, opt: &mut AdamW, image: &Tensor, text: &Tensor, lr: f64) -> (f64, f64) {
    step_with(LossKind::default(), model, opt, image, text, lr)
}

#[test]
fn two_steps_match_openclip() {
    two_steps_match("clip_tiny_test", Start::RaisedScale, LossKind::default());
}

#[test]
fn two_vit_steps_match_openclip() {
    two_steps_match(VIT, Start::RaisedScale, LossKind::default());
}

/// `--siglip`: OpenCLIP's SigLIP model (logit_bias in the state dict and in AdamW's no-decay
/// group) and SigLipLoss, two fp32 steps at the same bounds as ClipLoss's.
#[test]
fn siglip_steps_match_openclip() {
    let sig = LossKind::SigLip(SigLipDist::Bidir);
    let gold = two_steps_match("clip_tiny_test", Start::SigLip, sig);
    assert!(gold.is_none_or(|g| g.iter().any(|(k, _)| k == "step1.logit_bias")));
}

/// Two fine-tune steps of the whole ViT-B-16-SigLIP2 with `--siglip` (its own logit_bias −10 and
/// scale ln 10), as OpenCLIP's trainer takes them: every updated parameter within 1e-5 after the
/// first step (1e-4 after the second).
#[test]
fn siglip2_fine_tune_steps_match_openclip() {
    let sig = LossKind::SigLip(SigLipDist::Bidir);
    let gold = two_steps_match(SIGLIP2, Start::SigLip, sig);
    assert!(gold.is_none_or(|g| g
        .iter()
        .any(|(k, _)| k == "step1.visual.trunk.attn_pool.latent")));
}

/// Two fp32 steps of `model_name` from `start` with `loss_kind`, each compared with OpenCLIP's:
/// loss, grad norm, every parameter. Returns the golden (None after a loud skip).
fn two_steps_match(
    model_name: &str,
    start: Start,
    loss_kind: LossKind,
) -> Option<Vec<(String, Tensor)>> {
    let siglip = start == Start::SigLip;
    let gold = golden_of("fp32", siglip, model_name)?;
    let (_vs, model, image, text) = model_and_batch(model_name, start);
    let mut opt = AdamW::new(model.named_parameters(), ADAMW);
    for (i, lr) in [(1, 1e-2), (2, 5e-3)] {
        let mut worst: f64 = 0.0;
        let (loss, norm) = step_with(loss_kind, &model, &mut opt, &image, &text, lr);
        if i == 1 && start == Start::RaisedScale {
            let s = get(model.named_parameters(), "logit_scale").double_value(&[]);
            assert!((s - 100f64.ln()).abs() < 1e-6, "clamped to ln 100: {s}");
        }
        let want_loss = get(&gold, &format!("loss{i}")).double_value(&[0]);
        let want_norm = get(&gold, &format!("grad_norm{i}")).double_value(&[0]);
        assert!(
            (loss - want_loss).abs() <= 1e-5 * want_loss.abs(),
            "loss {i}: {loss} vs {want_loss}"
        );
        assert!(
            (norm - want_norm).abs() <= 1e-5 * want_norm,
            "grad norm {i}: {norm} vs {want_norm}"
        );
        for (k, t) in model.named_parameters() {
            let want = get(&gold, &format!("step{i}.{k}"));
            // The first step is held to 1e-5. The second checks that the moments carry over; its
            // inputs already differ by step one's round-off, which Adam's normalisation amplifies
            // (OpenCLIP against itself with 1 vs 2 threads: 1.8e-4 after two steps).
            let tol = if i == 1 { 1e-5 } else { 1e-4 };
            // Elements whose gradient is mathematically zero (the attention key bias: softmax
            // ignores a constant shift) carry only float round-off, which AdamW's g/√v
            // normalisation turns into an update of up to ~lr in a direction no two
            // implementations agree on: compared against that bound. The rest at `tol`, plus
            // what AdamW makes of the gradients' own round-off: its first update lr·g/(|g| + eps)
            // has slope lr·eps/(|g| + eps)², large for gradients a few eps from zero, times 1e-6
            // of the tensor's largest gradient (the bound the gradient parity tests meet).
            let g = t.grad().abs();
            let gmax = g.max().double_value(&[]);
            let noise = g.le(gmax * 1e-6);
            let scale = want.abs().max().double_value(&[]).max(1e-30);
            let slack = (&g + ADAMW.eps).pow_tensor_scalar(-2.0) * (lr * ADAMW.eps * gmax * 1e-6);
            let diff = (t - &want).abs();
            let err = (&diff - slack)
                .clamp_min(0.0)
                .masked_fill(&noise, 0.0)
                .max()
                .double_value(&[])
                / scale;
            assert!(err <= tol, "step {i} {k}: relative error {err}");
            worst = worst.max(err);
            let noisy = diff.masked_select(&noise);
            if noisy.numel() > 0 {
                let moved = noisy.max().double_value(&[]);
                assert!(
                    moved <= 2.0 * lr,
                    "step {i} {k}: near-zero-gradient elements moved {moved}"
                );
            }
        }
        eprintln!(
            "step {i}: loss {loss} vs {want_loss}, grad norm {norm} vs {want_norm}, worst parameter relative error {worst:e}"
        );
    }
    Some(gold)
}

/// `--precision bf16` / `pure_bf16`: the same parameter dtypes as OpenCLIP's low-precision model
/// (all bf16, the text LayerNorms fp32 for `bf16`), the same loss, and the same first update.
/// Every op rounds to bf16 (8 bits of mantissa), in a different order here and there, so values
/// are compared at that precision: losses and norms to 2 %, the update direction by cosine.
#[test]
fn bf16_steps_match_openclip() {
    bf16_steps_match("clip_tiny_test");
}

/// The same on the tiny ViT, whose `bf16` model keeps its embeddings, LayerNorms and
/// logit_scale fp32 (`convert_weights_to_lp`).
#[test]
fn bf16_vit_steps_match_openclip() {
    bf16_steps_match(VIT);
}

fn bf16_steps_match(model_name: &str) {
    for (precision, keep_norms) in [("bf16", true), ("pure_bf16", false)] {
        let Some(gold) = golden(precision, model_name) else {
            return;
        };
        let (_vs, model, image, text) = model_and_batch(model_name, Start::RaisedScale);
        model.to_bf16(keep_norms);
        let image = image.to_kind(tch::Kind::BFloat16);
        let before: Vec<Tensor> = model
            .named_parameters()
            .iter()
            .map(|(_, t)| t.to_kind(tch::Kind::Float))
            .collect();
        let mut opt = AdamW::new(model.named_parameters(), ADAMW);
        for (i, lr) in [(1, 1e-2), (2, 5e-3)] {
            let (loss, norm) = step(&model, &mut opt, &image, &text, lr);
            let want_loss = get(&gold, &format!("loss{i}")).double_value(&[0]);
            let want_norm = get(&gold, &format!("grad_norm{i}")).double_value(&[0]);
            let tol = if i == 1 { 0.02 } else { 0.05 };
            assert!(
                (loss - want_loss).abs() <= tol * want_loss,
                "{precision} loss {i}: {loss} vs {want_loss}"
            );
            assert!(
                (norm - want_norm).abs() <= tol * want_norm,
                "{precision} grad norm {i}: {norm} vs {want_norm}"
            );
            if i > 1 {
                continue;
            }
            let (mut dot, mut n_ours, mut n_theirs) = (0.0, 0.0, 0.0);
            for ((k, t), t0) in model.named_parameters().iter().zip(&before) {
                let want = get(&gold, &format!("step1.{k}"));
                assert_eq!(t.kind(), want.kind(), "{precision}: dtype of {k}");
                let ours = t.to_kind(tch::Kind::Double) - t0.to_kind(tch::Kind::Double);
                let theirs = want.to_kind(tch::Kind::Double) - t0.to_kind(tch::Kind::Double);
                dot += (&ours * &theirs).sum(tch::Kind::Double).double_value(&[]);
                n_ours += (&ours * &ours).sum(tch::Kind::Double).double_value(&[]);
                n_theirs += (&theirs * &theirs).sum(tch::Kind::Double).double_value(&[]);
            }
            let cosine = dot / (n_ours.sqrt() * n_theirs.sqrt());
            assert!(cosine > 0.99, "{precision}: first update cosine {cosine}");
            eprintln!("{precision}: loss {loss} vs {want_loss}, update cosine {cosine}");
        }
    }
}

/// `--accum-freq K`: K micro-batches through the feature cache give the gradient of one K× batch
/// (every parameter, logit_scale included) and its loss.
#[test]
fn accum_freq_gradient_equals_one_k_times_batch() {
    tch::manual_seed(11);
    let vs = VarStore::new(Device::Cpu);
    let cfg = ClipConfig::load("clip_tiny_test").unwrap();
    let model = Clip::new(&vs.root(), &cfg).unwrap();
    let (h, w) = cfg.vision.image_size;
    let images = Tensor::randn([8, 3, h, w], (tch::Kind::Float, Device::Cpu));
    let tokens = Tensor::randint_low(
        1,
        cfg.text.vocab_size,
        [8, cfg.text.context_length],
        (tch::Kind::Int64, Device::Cpu),
    );
    let opts = StepOptions {
        autocast: None,
        loss_scale: None,
        train: false,
        loss: LossKind::default(),
    };
    let grads = |k: i64| -> (f64, Vec<Tensor>) {
        for (_, p) in model.named_parameters() {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
        let b = 8 / k;
        let micro: Vec<(Tensor, Tensor)> = (0..k)
            .map(|j| (images.narrow(0, j * b, b), tokens.narrow(0, j * b, b)))
            .collect();
        let loss = forward_backward(&model, &micro, &LocalOnly, &opts, &|_| 0).unwrap();
        let g = model
            .named_parameters()
            .iter()
            .map(|(_, p)| p.grad().copy())
            .collect();
        (loss.double_value(&[]), g)
    };
    let (want_loss, want) = grads(1);
    for k in [2, 4] {
        let (loss, got) = grads(k);
        assert!(
            (loss - want_loss).abs() <= 1e-6 * want_loss,
            "K={k} loss {loss} vs {want_loss}"
        );
        for ((name, _), (g, w)) in model.named_parameters().iter().zip(got.iter().zip(&want)) {
            let scale = w.abs().max().double_value(&[]);
            let err = (g - w).abs().max().double_value(&[]) / scale.max(1e-30);
            assert!(scale > 0.0, "{name} has no gradient");
            assert!(err <= 1e-5, "K={k} {name}: relative error {err}");
        }
    }
}

/// `--precision amp`: fp16 autocast and OpenCLIP's GradScaler on the tiny model, six steps. The
/// scale starts at 2^16, which overflows this model's fp16 backward: the same steps are skipped
/// (weights untouched, scale halved) and the same scale reached as OpenCLIP's; the losses agree
/// at fp16 precision and the real updates point the same way.
#[test]
fn amp_steps_with_the_loss_scaler_match_openclip() {
    let Some(gold) = golden("amp", "clip_tiny_test") else {
        return;
    };
    let (_vs, model, image, text) = model_and_batch("clip_tiny_test", Start::Golden);
    let before: Vec<Tensor> = model
        .named_parameters()
        .iter()
        .map(|(_, t)| t.copy())
        .collect();
    let mut opt = AdamW::new(model.named_parameters(), ADAMW);
    let mut scaler = GradScaler::new(ScalerState::default(), Device::Cpu);
    let mut skipped = 0;
    for i in 1..=6 {
        let lr = if i <= 4 { 1e-2 } else { 5e-3 };
        opt.zero_grad().unwrap();
        let opts = StepOptions {
            autocast: Some((Device::Cpu, tch::Kind::Half)),
            loss_scale: Some(scaler.scale().shallow_clone()),
            train: false,
            loss: LossKind::default(),
        };
        let batch = [(image.shallow_clone(), text.shallow_clone())];
        let loss = forward_backward(&model, &batch, &LocalOnly, &opts, &|_| 0).unwrap();
        // The skip is decided on the device: found_inf goes to AdamW and the scaler unread.
        let found_inf = scaler.unscale(&opt.params).unwrap();
        let norm = clip_grad_norm(&opt.params, 0.5).unwrap().double_value(&[]);
        opt.step(lr, Some(&found_inf)).unwrap();
        scaler.update(&found_inf);
        let finite = found_inf.double_value(&[]) == 0.0;
        model.clamp_logit_scale();
        let want_norm = get(&gold, &format!("grad_norm{i}")).double_value(&[0]);
        assert_eq!(
            finite,
            want_norm.is_finite(),
            "step {i}: skipped by one side only"
        );
        skipped += usize::from(!finite);
        assert_eq!(
            scaler.state().scale,
            get(&gold, &format!("scale{i}")).double_value(&[0]),
            "step {i}"
        );
        let loss = loss.double_value(&[]);
        let want_loss = get(&gold, &format!("loss{i}")).double_value(&[0]);
        assert!(
            (loss - want_loss).abs() <= 0.01 * want_loss,
            "step {i} loss {loss} vs {want_loss}"
        );
        if finite {
            assert!(
                (norm - want_norm).abs() <= 0.01 * want_norm,
                "step {i} norm {norm} vs {want_norm}"
            );
        }
    }
    assert!((1..6).contains(&skipped), "{skipped} steps skipped");
    assert_eq!(
        opt.steps_taken(),
        6 - skipped as i64,
        "skipped steps are not counted"
    );
    let (mut dot, mut n_ours, mut n_theirs) = (0.0, 0.0, 0.0);
    for ((k, t), t0) in model.named_parameters().iter().zip(&before) {
        let ours = (t - t0).to_kind(tch::Kind::Double);
        let theirs = (get(&gold, &format!("step6.{k}")) - t0).to_kind(tch::Kind::Double);
        dot += (&ours * &theirs).sum(tch::Kind::Double).double_value(&[]);
        n_ours += (&ours * &ours).sum(tch::Kind::Double).double_value(&[]);
        n_theirs += (&theirs * &theirs).sum(tch::Kind::Double).double_value(&[]);
    }
    let cosine = dot / (n_ours.sqrt() * n_theirs.sqrt());
    eprintln!("amp: {skipped} steps skipped, update cosine after 6 steps {cosine}");
    assert!(cosine > 0.99, "update cosine {cosine}");
}
