//! AdamW through libtorch's fused kernel and clipping through its foreach ops, against
//! `torch.optim.AdamW(fused=True)` with OpenCLIP's groups and `clip_grad_norm_`
//! (scripts/make-adamw-goldens.py, on the tiny model's parameters) and against the per-tensor
//! loop it replaced ([`AdamW::step_loop`]).
use crate::common::get;
use crate::golden::{run_python, script_inputs};

use clip_train::optimizer::{clip_grad_norm, AdamW, AdamWConfig};
use tch::{Kind, Tensor};

/// The golden script's optimizer and clipping.
const ADAMW: AdamWConfig = AdamWConfig {
    beta1: 0.9,
    beta2: 0.98,
    eps: 1e-6,
    weight_decay: 0.2,
};
const CLIP: f64 = 1.0;
const STEPS: usize = 10;

/// `max |a − b| / max |b|`.
fn relative(a: &Tensor, b: &Tensor) -> f64 {
    let scale = b.abs().max().double_value(&[]).max(1e-30);
    (a - b).abs().max().double_value(&[]) / scale
}

/// Sets every parameter's gradient to `g[i]` (exactly: d/dp Σ p·g = g).
fn set_grads(opt: &AdamW, grads: &[Tensor]) {
    opt.zero_grad().unwrap();
    let loss = opt
        .params
        .iter()
        .zip(grads)
        .map(|(p, g)| (&p.tensor * g).sum(Kind::Float))
        .fold(
            Tensor::zeros([], (Kind::Float, tch::Device::Cpu)),
            |a, b| a + b,
        );
    loss.backward();
}

#[test]
fn ten_fused_steps_equal_torch_fused_adamw_and_the_loop() {
    let inputs = script_inputs("make-adamw-goldens.py");
    let Some(dir) = crate::golden::golden("adamw", &inputs, &[], |out| {
        let out = out.join("adamw.safetensors");
        run_python([inputs[0].as_os_str(), out.as_os_str()]);
    }) else {
        return;
    };
    let gold = Tensor::read_safetensors(dir.join("adamw.safetensors")).unwrap();
    let names: Vec<String> = gold
        .iter()
        .filter_map(|(k, _)| k.strip_prefix("init.").map(str::to_string))
        .collect();
    let fresh = || -> Vec<(String, Tensor)> {
        let init = |n: &String| {
            get(&gold, &format!("init.{n}"))
                .copy()
                .set_requires_grad(true)
        };
        names.iter().map(|n| (n.clone(), init(n))).collect()
    };
    let (fused_params, loop_params) = (fresh(), fresh());
    let mut fused = AdamW::new(&fused_params, ADAMW);
    let mut looped = AdamW::new(&loop_params, ADAMW);
    // Both groups are used (OpenCLIP's rule puts the tiny model's weights in one, its biases,
    // norms and logit_scale in the other).
    let decay = |p: &clip_train::optimizer::Param| fused.groups[p.group].weight_decay;
    assert!(fused.params.iter().any(|p| decay(p) > 0.0));
    assert!(fused.params.iter().any(|p| decay(p) == 0.0));
    let lrs = get(&gold, "lr");
    let mut clipped = 0;
    for i in 1..=STEPS {
        let grads = get_grads(&gold, &fused, i);
        let lr = lrs.double_value(&[i as i64 - 1]);
        set_grads(&fused, &grads);
        set_grads(&looped, &grads);
        let norm = clip_grad_norm(&fused.params, CLIP).unwrap();
        let loop_norm = clip_grad_norm(&looped.params, CLIP).unwrap();
        let want = get(&gold, &format!("grad_norm{i}")).double_value(&[0]);
        let norm = norm.double_value(&[]);
        assert!(
            (norm - want).abs() <= 1e-6 * want,
            "step {i} norm {norm} vs {want}"
        );
        assert_eq!(norm, loop_norm.double_value(&[]), "step {i}");
        clipped += usize::from(want > CLIP);
        fused.step(lr, None).unwrap();
        looped.step_loop(lr);
    }
    assert!((1..STEPS).contains(&clipped), "{clipped} steps clipped");
    assert_eq!(fused.steps_taken(), STEPS as i64);
    assert_eq!(looped.steps_taken(), STEPS as i64);
    let mut worst: (f64, f64) = (0.0, 0.0);
    let state: Vec<(String, Tensor)> = fused.state_tensors();
    for (p, q) in fused.params.iter().zip(&looped.params) {
        let want = get(&gold, &format!("final.{}", p.name));
        let (to_torch, to_loop) = (relative(&p.tensor, &want), relative(&p.tensor, &q.tensor));
        assert!(
            to_torch <= 1e-6,
            "{}: {to_torch} from torch's fused AdamW",
            p.name
        );
        assert!(to_loop <= 1e-6, "{}: {to_loop} from the loop", p.name);
        worst = (worst.0.max(to_torch), worst.1.max(to_loop));
        for moment in ["exp_avg", "exp_avg_sq"] {
            let key = format!("{moment}.{}", p.name);
            let ours = get(&state, &key);
            let err = relative(&ours, &get(&gold, &key));
            assert!(err <= 1e-6, "{key}: {err} from torch's fused AdamW");
        }
    }
    eprintln!(
        "AdamW after {STEPS} steps: worst relative error {:e} from torch's fused, {:e} from the loop",
        worst.0, worst.1
    );
    // The checkpointed state (moments, step count) resumes exactly: a fresh optimizer loaded
    // with it takes the next step bit for bit as the one that never stopped.
    let resumed_params: Vec<(String, Tensor)> = fused_params
        .iter()
        .map(|(n, t)| (n.clone(), t.detach().copy().set_requires_grad(true)))
        .collect();
    let mut resumed = AdamW::new(&resumed_params, ADAMW);
    resumed.load_state(&state, fused.steps_taken()).unwrap();
    let grads = get_grads(&gold, &fused, 1);
    for opt in [&mut fused, &mut resumed] {
        set_grads(opt, &grads);
        opt.step(1e-3, None).unwrap();
    }
    for (p, q) in fused.params.iter().zip(&resumed.params) {
        assert!(p.tensor.equal(&q.tensor), "{} after resuming", p.name);
    }
}

/// Step `i`'s golden gradients in `opt`'s parameter order.
fn get_grads(gold: &[(String, Tensor)], opt: &AdamW, i: usize) -> Vec<Tensor> {
    opt.params
        .iter()
        .map(|p| get(gold, &format!("grad{i}.{}", p.name)))
        .collect()
}

/// The loss scaler's `found_inf` skips the fused step on the device: weights and moments stay as
/// they were and the step is not counted.
#[test]
fn found_inf_skips_the_step_without_a_host_decision() {
    let named: Vec<(String, Tensor)> = ["a.weight", "a.bias"]
        .iter()
        .map(|n| {
            let t = Tensor::randn([4, 3], (Kind::Float, tch::Device::Cpu));
            (n.to_string(), t.set_requires_grad(true))
        })
        .collect();
    let mut opt = AdamW::new(&named, ADAMW);
    let grads: Vec<Tensor> = named.iter().map(|(_, t)| t.randn_like()).collect();
    set_grads(&opt, &grads);
    let before: Vec<Tensor> = named.iter().map(|(_, t)| t.copy()).collect();
    let inf = Tensor::ones([], (Kind::Float, tch::Device::Cpu));
    opt.step(1e-2, Some(&inf)).unwrap();
    assert_eq!(opt.steps_taken(), 0);
    for ((n, t), b) in named.iter().zip(&before) {
        assert!(t.equal(b), "{n} moved on a skipped step");
    }
    opt.step(1e-2, Some(&inf.zeros_like())).unwrap();
    assert_eq!(opt.steps_taken(), 1);
    assert!(named.iter().zip(&before).all(|((_, t), b)| !t.equal(b)));
}
