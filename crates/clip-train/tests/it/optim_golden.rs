//! Every `--opt timm/NAME` clip-train builds against OpenCLIP 3.3.0's own trainer
//! (scripts/make-optim-goldens.py): three steps of the tiny ConvNeXt CLIP from the same weights,
//! the optimizer and its groups built from the same flags by `plan::optimizer_plan`, stepping on
//! the gradients OpenCLIP's trainer computed from the same batches: each step's weights within
//! 1e-5 (relative to each tensor's largest value) of OpenCLIP's, the state tensors after the last
//! within 1e-5 too. The gradients are OpenCLIP's because ours differ from them by float round-off
//! (step.rs holds the forward and backward to OpenCLIP's), which sign-based (Lion) and bf16
//! Newton–Schulz (Muon) updates turn into whole-step differences on elements near a boundary:
//! what is compared here is the optimizer. For each optimizer too: a step with `found_inf` set
//! leaves everything bit for bit as it was and is not counted, and an optimizer restored from
//! the state it checkpoints takes the next step bit for bit as the one that never stopped. One
//! golden run (about 2 minutes) makes them all; the test takes a few seconds.
use std::collections::{BTreeMap, HashMap};

use crate::common::{get, succeeds};
use crate::golden::{root, run_python, script_inputs};

use clip_model::{weights, Clip, ClipConfig};
use clip_train::optimizer::Optimizer;
use clip_train::scheduler::LrSchedule;
use tch::{nn::VarStore, Device, Kind, Tensor};

const MODEL: &str = "clip_tiny_test";
const STEPS: i64 = 3;

/// The golden's tensors and, per case, the flags clip-train runs it with (None after a loud
/// skip).
fn golden() -> Option<(Gold, BTreeMap<String, Vec<String>>)> {
    let weights = root().join("tests/golden/model/clip_tiny_test.safetensors");
    let mut inputs = script_inputs("make-optim-goldens.py");
    inputs.push(weights.clone());
    let args = [MODEL, weights.to_str().unwrap()];
    let dir = crate::golden::golden("optim-timm", &inputs, &args, |out| {
        run_python([
            inputs[0].as_os_str(),
            out.as_os_str(),
            args[0].as_ref(),
            args[1].as_ref(),
        ]);
    })?;
    let cases = std::fs::read_to_string(dir.join("cases.json")).unwrap();
    Some((
        read(&dir.join("optim.safetensors")),
        serde_json::from_str(&cases).unwrap(),
    ))
}

/// A golden's tensors by name.
type Gold = HashMap<String, Tensor>;

fn read(path: &std::path::Path) -> Gold {
    Tensor::read_safetensors(path)
        .unwrap()
        .into_iter()
        .collect()
}

/// Golden tensor `key`.
fn at(gold: &Gold, key: &str) -> Tensor {
    gold.get(key)
        .unwrap_or_else(|| panic!("no {key}"))
        .shallow_clone()
}

/// The tiny model (its weights set by [`reset`]).
fn model() -> (VarStore, Clip) {
    let vs = VarStore::new(Device::Cpu);
    let model = Clip::new(&vs.root(), &ClipConfig::load(MODEL).unwrap()).unwrap();
    (vs, model)
}

/// Sets `model`'s weights (in `vs`) to `weights`' copies.
fn reset(vs: &VarStore, model: &Clip, weights: &[(String, Tensor)]) {
    let sd = model
        .named_parameters()
        .iter()
        .map(|(k, _)| (k.clone(), get(weights, k).copy()))
        .collect();
    weights::load_state_dict(vs, sd).unwrap();
}

/// The optimizer `flags` make (through the plan, as a run builds it) over `model`, and the
/// run's schedule.
pub fn optimizer_for(flags: &[String], model: &Clip, steps: i64) -> (Optimizer, LrSchedule) {
    let name = model.config().name.clone();
    let argv = ["clip-train".to_string(), "--model".into(), name];
    let p = clip_train::params::parse(argv.iter().chain(flags)).unwrap();
    let (lr, plan) = clip_train::plan::optimizer_plan(&p).unwrap();
    let layout = clip_train::trainer::model_layout(model);
    let opt = Optimizer::build(model.named_parameters(), &plan.spec, &plan.rules, &layout).unwrap();
    let schedule = LrSchedule::new(&p.lr_scheduler, lr, p.warmup, steps, None).unwrap();
    (opt, schedule)
}

/// Sets every parameter's gradient to OpenCLIP's of step `i` (exactly: d/dp Σ p·g = g).
fn golden_grads(opt: &Optimizer, gold: &Gold, case: &str, i: i64) {
    opt.zero_grad().unwrap();
    let loss = opt
        .params
        .iter()
        .map(|p| (&p.tensor * at(gold, &format!("{case}.grad{i}.{}", p.name))).sum(Kind::Float))
        .fold(Tensor::zeros([], (Kind::Float, Device::Cpu)), |a, b| a + b);
    loss.backward();
}

/// `max |a − b| / max |b|` over the elements not in `skip`.
fn relative(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1e-30);
    (a - b).abs().max().double_value(&[]) / scale
}

#[test]
fn timm_optimizers_match_openclip_trainer() {
    let Some((gold, cases)) = golden() else {
        return;
    };
    assert_eq!(cases.len(), 13, "{:?}", cases.keys());
    let init =
        Tensor::read_safetensors(root().join("tests/golden/model/clip_tiny_test.safetensors"))
            .unwrap();
    // One model and its twin for every case (building one costs more than the case).
    let ((vs, model), twin) = (model(), model());
    let mut failed = vec![];
    for (case, flags) in &cases {
        reset(&vs, &model, &init);
        let (mut opt, schedule) = optimizer_for(flags, &model, STEPS);
        let mut worst: f64 = 0.0;
        for i in 0..STEPS {
            golden_grads(&opt, &gold, case, i + 1);
            opt.step(schedule.lr(i), None).unwrap();
            for p in &opt.params {
                let want = at(&gold, &format!("{case}.step{}.{}", i + 1, p.name));
                let err = relative(&p.tensor, &want);
                if err > 1e-5 {
                    failed.push(format!(
                        "{case} step {}: {} relative error {err:e}",
                        i + 1,
                        p.name
                    ));
                }
                worst = worst.max(err);
            }
            model.clamp_logit_scale();
        }
        let mut state_worst: f64 = 0.0;
        let mut compared = 0;
        // (The golden keeps states of more than 0 dimensions: not logit_scale's.)
        for p in opt.params.iter().filter(|p| p.tensor.dim() > 0) {
            for (k, t) in &p.state {
                let key = format!("{case}.state.{k}.{}", p.name);
                let err = relative(
                    &t.to_kind(Kind::Float),
                    &at(&gold, &key).to_kind(Kind::Float),
                );
                if err > 1e-5 {
                    failed.push(format!("{key}: relative error {err:e}"));
                }
                state_worst = state_worst.max(err);
                compared += 1;
            }
        }
        // Every state tensor OpenCLIP's optimizer holds is one of ours.
        let prefix = format!("{case}.state.");
        let theirs = gold.iter().filter(|(k, _)| k.starts_with(&prefix)).count();
        assert_eq!(compared, theirs, "{case}: state tensors");
        eprintln!("{case}: worst weight error {worst:e}, state {state_worst:e} ({compared} state tensors)");
        skipped_and_resumed_steps_are_exact(case, (&model, &twin), opt, flags, &gold);
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// A step with `found_inf` leaves `opt` and the weights untouched (and uncounted); an optimizer
/// restored from `opt`'s checkpointed state then takes the next step exactly as `opt` does.
fn skipped_and_resumed_steps_are_exact(
    case: &str,
    (model, (twin_vs, twin)): (&Clip, &(VarStore, Clip)),
    mut opt: Optimizer,
    flags: &[String],
    gold: &Gold,
) {
    let snapshot = |opt: &Optimizer| -> Vec<Tensor> {
        let mut t: Vec<Tensor> = opt.params.iter().map(|p| p.tensor.copy()).collect();
        t.extend(opt.state_tensors().iter().map(|(_, s)| s.copy()));
        t
    };
    let before = snapshot(&opt);
    golden_grads(&opt, gold, case, 1);
    for p in &opt.params {
        let _ = p.tensor.grad().fill_(f64::NAN);
    }
    let inf = Tensor::ones([], (Kind::Float, Device::Cpu));
    opt.step(1e-3, Some(&inf)).unwrap();
    assert_eq!(
        opt.steps_taken(),
        STEPS,
        "{case}: a skipped step is not counted"
    );
    for (a, b) in snapshot(&opt).iter().zip(&before) {
        assert!(a.equal(b), "{case}: a skipped step changed the state");
    }
    let saved = opt.state_tensors();
    let now: Vec<(String, Tensor)> = model
        .named_parameters()
        .iter()
        .map(|(k, t)| (k.clone(), t.shallow_clone()))
        .collect();
    reset(twin_vs, twin, &now);
    let (mut resumed, _) = optimizer_for(flags, twin, STEPS);
    resumed.load_state(&saved, opt.steps_taken()).unwrap();
    for o in [&mut opt, &mut resumed] {
        golden_grads(o, gold, case, 2);
        o.step(5e-4, Some(&inf.zeros_like())).unwrap();
    }
    assert_eq!(resumed.steps_taken(), STEPS + 1);
    for (a, b) in snapshot(&opt).iter().zip(&snapshot(&resumed)) {
        assert!(a.equal(b), "{case}: the resumed optimizer's step differs");
    }
}

/// OpenCLIP's development branch (scripts/make-optim-dev-goldens.py, from its source tarball):
/// tensors and, per case, the model and the flags clip-train runs it with.
fn dev_golden() -> Option<(Gold, BTreeMap<String, DevCase>)> {
    // The branch's source, beside the checkout (`../shared/reference/`, see HELPERS.md).
    let tarball = std::env::var_os("CLIP_OPENCLIP_DEV_SOURCE")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root().join("../shared/reference/open_clip-dev-89fb801-src.tar.gz"));
    if !tarball.is_file() {
        crate::skip::skip(&format!(
            "no OpenCLIP development-branch source at {} (CLIP_OPENCLIP_DEV_SOURCE)",
            tarball.display()
        ));
        return None;
    }
    let mut inputs = script_inputs("make-optim-dev-goldens.py");
    inputs.push(tarball.clone());
    let dir = crate::golden::golden("optim-dev", &inputs, &[], |out| {
        run_python([inputs[0].as_os_str(), out.as_os_str(), tarball.as_os_str()]);
    })?;
    let cases = std::fs::read_to_string(dir.join("cases.json")).unwrap();
    Some((
        read(&dir.join("dev.safetensors")),
        serde_json::from_str(&cases).unwrap(),
    ))
}

#[derive(serde::Deserialize)]
struct DevCase {
    model: String,
    flags: Vec<String>,
    /// The branch's parse of the flags: its optimizer flags by dest.
    parsed: serde_json::Map<String, serde_json::Value>,
}

/// `clip-train FLAGS --print-params` has the branch's values for its optimizer flags.
fn parses_as_the_branch(case: &str, c: &DevCase) {
    let out = succeeds(
        std::process::Command::new(env!("CARGO_BIN_EXE_clip-train"))
            .args(&c.flags)
            .args(["--model", &c.model, "--print-params"]),
    );
    let ours: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for (k, want) in &c.parsed {
        let got = &ours[k];
        let same = match (got.as_f64(), want.as_f64()) {
            (Some(a), Some(b)) => a == b,
            _ => got == want,
        };
        assert!(same, "{case}: {k} parsed as {got}, the branch's {want}");
    }
}

/// The development branch's flags (layer-wise LR decay per tower, `--wd-exclude`, `--opt
/// nadamw`, `--opt-kwargs`, `--opt-fallback-list`) on the tiny ConvNeXt and ViT CLIPs: every
/// parameter's learning-rate scale, weight decay and Muon fallback flag equal the branch's
/// `create_optimizer` groups, and two steps on the same gradients (at the scaled learning rates
/// its scheduler assigns) match its optimizer's to 1e-5.
#[test]
fn dev_branch_groups_and_steps_match() {
    let Some((gold, cases)) = dev_golden() else {
        return;
    };
    for (case, c) in &cases {
        parses_as_the_branch(case, c);
        let vs = VarStore::new(Device::Cpu);
        let model = Clip::new(&vs.root(), &ClipConfig::load(&c.model).unwrap()).unwrap();
        let sd = model
            .named_parameters()
            .iter()
            .map(|(k, _)| (k.clone(), at(&gold, &format!("{case}.init.{k}"))))
            .collect();
        weights::load_state_dict(&vs, sd).unwrap();
        let flags: Vec<String> = ["--lr", "1e-3", "--wd", "0.1"]
            .iter()
            .map(|s| s.to_string())
            .chain(c.flags.iter().cloned())
            .collect();
        let (mut opt, _) = optimizer_for(&flags, &model, 2);
        let value =
            |what: &str, k: &str| at(&gold, &format!("{case}.{what}.{k}")).double_value(&[]);
        for p in &opt.params {
            let g = &opt.groups[p.group];
            assert!(
                (g.lr_scale - value("lr_scale", &p.name)).abs() <= 1e-12,
                "{case} {}: lr_scale {} vs {}",
                p.name,
                g.lr_scale,
                value("lr_scale", &p.name)
            );
            assert_eq!(
                g.weight_decay,
                value("weight_decay", &p.name),
                "{case} {}: weight decay",
                p.name
            );
            assert_eq!(
                g.fallback,
                value("fallback", &p.name) == 1.0,
                "{case} {}: fallback",
                p.name
            );
        }
        let prefix = format!("{case}.lr_scale.");
        assert_eq!(
            opt.params.len(),
            gold.iter().filter(|(k, _)| k.starts_with(&prefix)).count()
        );
        let mut worst: f64 = 0.0;
        for (i, lr) in [(1, 1e-3), (2, 5e-4)] {
            golden_grads(&opt, &gold, case, i);
            opt.step(lr, None).unwrap();
            for p in &opt.params {
                let err = relative(&p.tensor, &at(&gold, &format!("{case}.step{i}.{}", p.name)));
                assert!(
                    err <= 1e-5,
                    "{case} step {i}: {} relative error {err:e}",
                    p.name
                );
                worst = worst.max(err);
            }
        }
        let scales: std::collections::BTreeSet<String> = opt
            .groups
            .iter()
            .map(|g| format!("{}", g.lr_scale))
            .collect();
        eprintln!(
            "{case}: {} groups, lr scales {scales:?}, worst weight error {worst:e}",
            opt.groups.len()
        );
    }
}
