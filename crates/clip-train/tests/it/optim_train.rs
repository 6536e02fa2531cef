//! Every `--opt` clip-train builds, through the trainer (CPU, fp32, synthetic data, the tiny
//! model without drop path, 3 steps): a run resumed from its mid-epoch checkpoint ends bit for
//! bit as the uninterrupted one, the checkpoints carry the optimizer's name and its state under
//! `optimizer.<state>.<param>`, and the same global batch over 2 ranks trains the same model. A
//! resume with another `--opt` is refused before anything is written.
use crate::common::{
    assert_bitwise_equal, cli, logged_losses, no_drop_path_config, ok, resume_latest, run,
    stopped_copy, tempdir, weights,
};
use crate::distributed::run_world_ok;
use clip_model::{Clip, ClipConfig};
use clip_train::optimizer::Optimizer;
use std::path::Path;
use tch::{nn::VarStore, Device, Kind, Tensor};

/// Every `--opt` value clip-train builds.
const OPTS: &[&str] = clip_train::optim_spec::BUILT;

fn args(logs: &Path, model: &str, name: &str, opt: &str, batch: usize) -> Vec<String> {
    let batch = batch.to_string();
    cli(
        "--dataset-type synthetic --train-num-samples 6 --epochs 1 --lr 1e-3 --warmup 1 \
         --grad-clip-norm 1.0 --save-every-n-steps 2 --log-every-n-steps 1 --seed 3 \
         --local-loss --gather-with-grad",
        name,
        logs,
        &["--model", model, "--opt", opt, "--batch-size", &batch],
    )
}

/// The fraction of the elements of the model's tensors whose updates (from `init`) in `a` and
/// `b` differ by more than `tol` of the tensor's largest update, and the tensor where most do.
fn disagreeing(init: &Path, a: &Path, b: &Path, tol: f64) -> (f64, String) {
    let model = |p: &Path| -> Vec<(String, tch::Tensor)> {
        let mut w = weights(p);
        w.retain(|(k, _)| !k.starts_with("optimizer."));
        w
    };
    let (w0, wa, wb) = (model(init), model(a), model(b));
    let (mut off, mut total, mut worst) = (0i64, 0i64, (0.0, String::new()));
    for ((k, t0), ((_, ta), (_, tb))) in w0.iter().zip(wa.iter().zip(&wb)) {
        let (da, db) = (ta - t0, tb - t0);
        let scale = da.abs().max().double_value(&[]).max(1e-12);
        let n = (&da - &db)
            .abs()
            .gt(tol * scale)
            .sum(tch::Kind::Int64)
            .int64_value(&[]);
        let frac = n as f64 / ta.numel() as f64;
        if frac > worst.0 {
            worst = (frac, k.clone());
        }
        (off, total) = (off + n, total + ta.numel() as i64);
    }
    (off as f64 / total as f64, worst.1)
}

#[test]
fn every_optimizer_resumes_exactly_and_trains_alike_on_two_ranks() {
    let logs = tempdir("optim-train");
    let model = no_drop_path_config(&logs);
    let init = {
        ok(&args(&logs, &model, "init", "adamw", 2)
            .into_iter()
            .chain(["--lr".into(), "0".into()])
            .collect::<Vec<_>>());
        logs.join("init/checkpoints/epoch_1.safetensors")
    };
    for opt in OPTS {
        let tag = opt.replace('/', "-");
        let full = logs.join(&tag);
        ok(&args(&logs, &model, &tag, opt, 2));
        let last = full.join("checkpoints/epoch_1.safetensors");
        let state = clip_train::checkpoint::peek_state(&last).unwrap();
        assert_eq!(state.optimizer.as_deref(), Some(*opt));
        let saved = weights(&full.join("checkpoints/step_2.safetensors"));
        assert!(
            saved
                .iter()
                .any(|(k, _)| k.starts_with("optimizer.") && k.ends_with(".text_projection")),
            "{opt}: no optimizer state for text_projection"
        );
        // Mid-epoch: step 2 of 3.
        let stopped = format!("{tag}-stop2");
        stopped_copy(&full, &logs.join(&stopped), 2);
        ok(&resume_latest(&args(&logs, &model, &stopped, opt, 2)));
        assert_bitwise_equal(
            &logs.join(&stopped).join("checkpoints/epoch_1.safetensors"),
            &last,
        );
        // The same 2 samples a step over 2 ranks of 1.
        let two = format!("{tag}-w2");
        run_world_ok(2, &|_| args(&logs, &model, &two, opt, 1));
        let (l1, l2) = (logged_losses(&full), logged_losses(&logs.join(&two)));
        assert_eq!(l1.len(), 3);
        // Muon orthogonalises in bf16, and AdaMuon then divides each element by its own size
        // (a sign at the first step): gradients that differ by round-off (reduced in another
        // order on 2 ranks) move Muon's updates by bf16's resolution and flip some of AdaMuon's
        // near-zero ones, as Lion's near-zero ones. What may differ, per optimizer: the losses
        // (relative), and the share of updates off by more than a fraction of their tensor's
        // largest (measured: under 0.1 % but Muon's 0.3 %, AdaMuon's 0.8–1 %). Lion's flipped
        // signs moved step 2's loss by 3.7e-4 (relative) on one machine, 0 on another.
        let (loss_tol, update_tol, share) = match *opt {
            "timm/muon" => (1e-3, 0.1, 0.01),
            "timm/lion" => (1e-3, 1e-3, 0.01),
            "timm/adamuon" | "timm/nadamuon" => (1e-2, 0.5, 0.03),
            _ => (1e-4, 1e-3, 0.01),
        };
        for (a, b) in l1.iter().zip(&l2) {
            assert!(
                (a - b).abs() <= loss_tol * a,
                "{opt}: losses {l1:?} on 1 rank, {l2:?} on 2"
            );
        }
        let (frac, k) = disagreeing(
            &init,
            &last,
            &logs.join(&two).join("checkpoints/epoch_1.safetensors"),
            update_tol,
        );
        eprintln!(
            "{opt}: {:.3}% of the updates differ between 1 and 2 ranks (most in {k})",
            100.0 * frac
        );
        assert!(
            frac <= share,
            "{opt}: {frac} of the updates differ (most in {k})"
        );
    }
    // Resuming with another optimizer is refused: its state is not this one's.
    let out = run(&resume_latest(&args(
        &logs,
        &model,
        "timm-lamb",
        "timm/lion",
        4,
    )));
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("optimizer state is --opt timm/lamb's, this run's is --opt timm/lion"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&logs);
}

/// `--lock-image` / `--lock-text` with their unlocked groups and every optimizer: the optimizer
/// holds (and steps, with state) exactly the unlocked parameters, the locked ones do not move.
/// Two steps along a random direction, through the library (the trainer builds its optimizer from
/// the same trainable tensors); one run through the trainer with Muon, whose routing is by shape.
#[test]
fn locked_towers_stay_put_with_every_optimizer() {
    let vs = VarStore::new(Device::Cpu);
    let model = Clip::new(&vs.root(), &ClipConfig::load("clip_tiny_test").unwrap()).unwrap();
    model.lock_image_tower(1);
    model.lock_text_tower(2);
    let trainable: Vec<String> = model
        .named_parameters()
        .iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(k, _)| k.clone())
        .collect();
    // Unlocked: the trunk's last group and the projection head, the text tower's last block with
    // ln_final and its projection, logit_scale.
    assert!(trainable
        .iter()
        .any(|k| k.starts_with("visual.trunk.head.")));
    assert!(trainable.iter().any(|k| k.starts_with("visual.head.")));
    assert!(trainable
        .iter()
        .any(|k| k.starts_with("transformer.resblocks.1.")));
    assert!(!trainable
        .iter()
        .any(|k| k.starts_with("transformer.resblocks.0.")));
    assert!(!trainable
        .iter()
        .any(|k| k.starts_with("visual.trunk.stem.")));
    let before: Vec<Tensor> = model
        .named_parameters()
        .iter()
        .map(|(_, t)| t.copy())
        .collect();
    for opt in OPTS {
        let flags = ["--opt", opt, "--lr", "1e-2"].map(String::from);
        let (mut o, _) = crate::optim_golden::optimizer_for(&flags, &model, 2);
        let names: Vec<&String> = o.params.iter().map(|p| &p.name).collect();
        assert_eq!(names, trainable.iter().collect::<Vec<_>>(), "{opt}");
        // One random direction for both steps: a gradient whose sign flips between the steps
        // can bring a sign-based update (Lion) back to where it started.
        let dirs: Vec<Tensor> = o.params.iter().map(|p| p.tensor.randn_like()).collect();
        for _ in 0..2 {
            o.zero_grad().unwrap();
            let loss = o
                .params
                .iter()
                .zip(&dirs)
                .map(|(p, d)| (&p.tensor * d).sum(Kind::Float))
                .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
            loss.backward();
            o.step(1e-2, None).unwrap();
        }
        for ((k, t), b) in model.named_parameters().iter().zip(&before) {
            let moved = !t.equal(b);
            assert_eq!(moved, trainable.contains(k), "{opt}: {k} moved: {moved}");
        }
        // Back to the start for the next optimizer.
        tch::no_grad(|| {
            for ((_, t), b) in model.named_parameters().iter().zip(&before) {
                t.shallow_clone().copy_(b);
            }
        });
    }
    let logs = tempdir("optim-lock");
    let locked = |name: &str, lr: &str| {
        let mut a = args(&logs, &no_drop_path_config(&logs), name, "timm/muon", 2);
        a.extend(
            [
                "--lock-image",
                "--lock-image-unlocked-groups",
                "1",
                "--lock-text",
            ]
            .into_iter()
            .chain(["--lock-text-unlocked-layers", "2", "--lr", lr])
            .map(String::from),
        );
        ok(&a);
        weights(&logs.join(name).join("checkpoints/epoch_1.safetensors"))
    };
    let (start, end) = (locked("start", "0"), locked("muon", "1e-3"));
    for ((k, a), (_, b)) in start.iter().zip(&end) {
        if !k.starts_with("optimizer.") {
            assert_eq!(!a.equal(b), trainable.contains(k), "--opt timm/muon: {k}");
        }
    }
    let _ = std::fs::remove_dir_all(&logs);
}

/// `--precision pure_bf16`'s bf16 weights with every optimizer: states in timm's dtypes (bf16
/// like the weights; Adafactor's f32; Adafactor Big Vision's momentum bf16), two steps along a
/// random direction that move every weight and leave them finite.
#[test]
fn every_optimizer_steps_bf16_weights() {
    let vs = VarStore::new(Device::Cpu);
    let model = Clip::new(&vs.root(), &ClipConfig::load("clip_tiny_test").unwrap()).unwrap();
    model.to_bf16(false);
    for opt in OPTS {
        let flags = ["--opt", opt, "--lr", "0.1"].map(String::from);
        let (mut o, _) = crate::optim_golden::optimizer_for(&flags, &model, 2);
        for p in &o.params {
            for (k, t) in &p.state {
                let want = match (*opt, *k) {
                    ("timm/adafactor", _) => Kind::Float,
                    _ => Kind::BFloat16,
                };
                assert_eq!(t.kind(), want, "{opt}: {k} of {}", p.name);
            }
        }
        let before: Vec<Tensor> = o.params.iter().map(|p| p.tensor.copy()).collect();
        // One random direction for both steps, as in locked_towers_stay_put_with_every_optimizer.
        let dirs: Vec<Tensor> = o
            .params
            .iter()
            .map(|p| p.tensor.randn_like().to_kind(Kind::Float))
            .collect();
        for _ in 0..2 {
            // Large enough to move bf16 weights (logit_scale ≈ 2.7 has steps of 1/64).
            step_along(&mut o, &dirs, 0.1, None);
        }
        for (p, b) in o.params.iter().zip(&before) {
            assert_eq!(p.tensor.kind(), Kind::BFloat16);
            assert!(!p.tensor.equal(b), "{opt}: {} did not move", p.name);
            let finite = p.tensor.isfinite().all().int64_value(&[]) == 1;
            assert!(finite, "{opt}: {} is not finite", p.name);
        }
    }
}

/// One step of `o` at `lr` with the gradient `dirs` (f32; d/dp Σ p·d = d, cast to p's dtype).
fn step_along(o: &mut Optimizer, dirs: &[Tensor], lr: f64, found_inf: Option<&Tensor>) {
    o.zero_grad().unwrap();
    let loss = o
        .params
        .iter()
        .zip(dirs)
        .map(|(p, d)| (&p.tensor.to_kind(Kind::Float) * d).sum(Kind::Float))
        .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
    loss.backward();
    o.step(lr, found_inf).unwrap();
}

/// SGD on bf16 weights on the CPU (torch 2.11's fused kernel leaves bf16 parameters of a vector's
/// length or more unchanged, so clip-train runs torch's foreach ops there): two steps on the tiny
/// model in bf16 end within bf16 rounding of the same steps on an f32 copy (the fused kernel the
/// golden checks), for `timm/sgd` (Nesterov) and `timm/momentum`, weight decay included; a step
/// with `found_inf` = 1 leaves weights and buffers as they were, one with 0 steps.
#[test]
fn sgd_steps_bf16_weights_as_f32() {
    let load = || {
        let vs = VarStore::new(Device::Cpu);
        let model = Clip::new(&vs.root(), &ClipConfig::load("clip_tiny_test").unwrap()).unwrap();
        (vs, model)
    };
    let ((_v16, m16), (_v32, m32)) = (load(), load());
    m16.to_bf16(false);
    let start: Vec<Tensor> = m16
        .named_parameters()
        .iter()
        .map(|(_, t)| t.copy())
        .collect();
    let reset = || {
        tch::no_grad(|| {
            for (((_, a), (_, b)), s) in m16
                .named_parameters()
                .iter()
                .zip(m32.named_parameters())
                .zip(&start)
            {
                a.shallow_clone().copy_(s);
                b.shallow_clone().copy_(s);
            }
        })
    };
    for opt in ["timm/sgd", "timm/momentum"] {
        reset();
        let flags = ["--opt", opt, "--lr", "0.1"].map(String::from);
        let (mut o16, _) = crate::optim_golden::optimizer_for(&flags, &m16, 2);
        let (mut o32, _) = crate::optim_golden::optimizer_for(&flags, &m32, 2);
        assert!(o16.groups.iter().any(|g| g.weight_decay > 0.0), "{opt}");
        let dirs: Vec<Tensor> = o16
            .params
            .iter()
            .map(|p| p.tensor.randn_like().to_kind(Kind::Float))
            .collect();
        for _ in 0..2 {
            step_along(&mut o16, &dirs, 0.1, None);
            step_along(&mut o32, &dirs, 0.1, None);
        }
        for ((a, b), s) in o16.params.iter().zip(&o32.params).zip(&start) {
            let (a, b) = (a.tensor.to_kind(Kind::Float), &b.tensor);
            let scale = b.abs().max().double_value(&[]);
            let off = (&a - b).abs().max().double_value(&[]) / scale;
            // bf16 keeps 8 significant bits; a few roundings per step.
            assert!(off <= 1.0 / 64.0, "{opt}: {off} off");
            assert!(!a.equal(&s.to_kind(Kind::Float)), "{opt}: did not move");
        }
        let snapshot = |o: &Optimizer| -> Vec<Tensor> {
            o.params
                .iter()
                .flat_map(|p| std::iter::once(&p.tensor).chain(p.state.iter().map(|(_, t)| t)))
                .map(|t| t.copy())
                .collect()
        };
        let before = snapshot(&o16);
        assert!(
            before.len() > o16.params.len(),
            "{opt}: no momentum buffers"
        );
        let flag = |v: f64| Tensor::full([], v, (Kind::Float, Device::Cpu));
        step_along(&mut o16, &dirs, 0.1, Some(&flag(1.0)));
        for (a, b) in snapshot(&o16).iter().zip(&before) {
            assert!(a.equal(b), "{opt}: a skipped step changed a tensor");
        }
        step_along(&mut o16, &dirs, 0.1, Some(&flag(0.0)));
        let after = snapshot(&o16);
        for (p, (a, b)) in o16.params.iter().zip(after.iter().zip(&before).step_by(2)) {
            assert!(
                !a.equal(b),
                "{opt}: {} did not move with found_inf 0",
                p.name
            );
        }
    }
}
