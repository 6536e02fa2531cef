//! Small building blocks shared by the towers: parameter creation with OpenCLIP/timm init,
//! an ordered record of the parameters (a VarStore is a HashMap), fused-op helpers.

use std::cell::RefCell;

use serde::Deserialize;
use tch::{nn, Kind, Tensor};

/// An MLP's activation (`act_layer`): OpenCLIP's towers and timm's ViT use the same three.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Activation {
    /// nn.GELU (erf).
    Gelu,
    /// nn.GELU(approximate='tanh').
    GeluTanh,
    /// x·σ(1.702x).
    QuickGelu,
}

impl Activation {
    /// OpenCLIP's own towers: QuickGELU under `quick_gelu`, else nn.GELU with `act_kwargs`'
    /// approximation.
    pub(crate) fn new(quick_gelu: bool, opts: &crate::config::BlockOptions) -> Self {
        match (quick_gelu, opts.gelu_approx) {
            (true, _) => Activation::QuickGelu,
            (false, Some(crate::config::GeluApprox::Tanh)) => Activation::GeluTanh,
            (false, _) => Activation::Gelu,
        }
    }

    pub fn apply(self, x: &Tensor) -> Tensor {
        match self {
            Activation::Gelu => x.gelu("none"),
            Activation::GeluTanh => x.gelu("tanh"),
            Activation::QuickGelu => x * (x * 1.702).sigmoid(),
        }
    }
}

/// Records every parameter created, with its full state-dict name, in creation order.
#[derive(Default)]
pub struct ParamRecorder {
    params: RefCell<Vec<(String, Tensor)>>,
    /// Allocate only: the caller loads every value next.
    uninitialised: bool,
}

/// How a fresh parameter is initialised.
#[derive(Debug, Clone, Copy)]
pub enum Init {
    Zeros,
    Ones,
    Const(f64),
    /// N(0, std²).
    Normal(f64),
    /// timm's `trunc_normal_(std=std, a=-2, b=2)` (bounds absolute, as timm passes them).
    TruncNormal(f64),
    /// timm's `trunc_normal_tf_(std=std)`: N(0, 1) cut at ±2, then scaled by std.
    TruncNormalTf(f64),
    /// U(-b, b): PyTorch's nn.Linear / nn.Conv default for both weight and bias is
    /// b = 1/sqrt(fan_in) (kaiming_uniform with a=√5 gives the same bound for the weight).
    Uniform(f64),
}

impl ParamRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A recorder whose parameters are allocated, not initialised (no random draws, no fill).
    pub fn uninitialised() -> Self {
        Self {
            uninitialised: true,
            ..Self::default()
        }
    }

    /// Creates the trainable variable `p/name` on `p`'s device, initialised by `init`.
    pub fn param(&self, p: &nn::Path, name: &str, dims: &[i64], init: Init) -> Tensor {
        let t = tch::no_grad(|| match self.uninitialised {
            true => Tensor::empty(dims, (Kind::Float, p.device())),
            false => make(dims, init, p.device()),
        });
        let full = p.path(name);
        let t = p.add(name, t, true);
        self.params.borrow_mut().push((full, t.shallow_clone()));
        t
    }

    pub fn into_vec(self) -> Vec<(String, Tensor)> {
        self.params.into_inner()
    }
}

fn make(dims: &[i64], init: Init, device: tch::Device) -> Tensor {
    let opts = (Kind::Float, device);
    match init {
        Init::Zeros => Tensor::zeros(dims, opts),
        Init::Ones => Tensor::ones(dims, opts),
        Init::Const(c) => Tensor::full(dims, c, opts),
        Init::Normal(std) => Tensor::randn(dims, opts) * std,
        Init::TruncNormal(std) => trunc_normal(dims, std, -2.0, 2.0, device),
        Init::TruncNormalTf(std) => trunc_normal(dims, 1.0, -2.0, 2.0, device) * std,
        Init::Uniform(b) => Tensor::empty(dims, opts).uniform_(-b, b),
    }
}

/// timm / PyTorch `trunc_normal_` (inverse-CDF method), mean 0.
fn trunc_normal(dims: &[i64], std: f64, a: f64, b: f64, device: tch::Device) -> Tensor {
    let norm_cdf = |x: f64| (1.0 + erf(x / std::f64::consts::SQRT_2)) / 2.0;
    let l = norm_cdf(a / std);
    let u = norm_cdf(b / std);
    let mut t = Tensor::empty(dims, (Kind::Float, device));
    let _ = t.uniform_(2.0 * l - 1.0, 2.0 * u - 1.0);
    let _ = t.erfinv_();
    let _ = t.g_mul_scalar_(std * std::f64::consts::SQRT_2);
    t.clamp_(a, b)
}

/// erf for the init bounds (Abramowitz–Stegun 7.1.26 is too coarse near ±1; use a series/continued
/// fraction pair good to ~1e-15, enough since timm's own bound is only used to pick a range).
fn erf(x: f64) -> f64 {
    if x.abs() > 6.0 {
        return x.signum();
    }
    if x.abs() < 2.5 {
        // Maclaurin series.
        let mut sum = x;
        let mut term = x;
        let x2 = x * x;
        for n in 1..200 {
            term *= -x2 / n as f64;
            let add = term / (2 * n + 1) as f64;
            sum += add;
            if add.abs() < 1e-17 {
                break;
            }
        }
        return sum * 2.0 / std::f64::consts::PI.sqrt();
    }
    // erfc continued fraction for large |x|.
    let ax = x.abs();
    let mut f = 0.0;
    for k in (1..60).rev() {
        f = (k as f64 / 2.0) / (ax + f);
    }
    let erfc = (-ax * ax).exp() / std::f64::consts::PI.sqrt() / (ax + f);
    x.signum() * (1.0 - erfc)
}

/// LayerNorm over the channels of an NCHW tensor (timm LayerNorm2d): a permute to NHWC, the fused
/// layer_norm, and a permute back; on a channels-last tensor both permutes are free.
pub fn layer_norm_2d(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
    let c = w.size()[0];
    x.permute([0, 2, 3, 1])
        .layer_norm([c], Some(w), Some(b), eps, true)
        .permute([0, 3, 1, 2])
}

/// LayerNorm over the last dimension.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
    let c = w.size()[0];
    x.layer_norm([c], Some(w), Some(b), eps, true)
}

/// OpenCLIP's text-tower `LayerNorm` / `LayerNormFp32`: normalise in the weights' dtype and return
/// the input's. With `--precision bf16` the text norms keep fp32 weights while activations are
/// bf16 (LayerNormFp32); everywhere else the two dtypes agree and this is [`layer_norm`] (under
/// autocast the cast back to bf16 changes nothing: the consumers are matmuls autocast casts anyway).
pub fn layer_norm_cast(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> Tensor {
    if x.kind() == w.kind() {
        return layer_norm(x, w, b, eps);
    }
    layer_norm(&x.to_kind(w.kind()), w, b, eps).to_kind(x.kind())
}

/// timm's per-sample drop-path mask for a batch of `n`: Bernoulli(1 - rate) / (1 - rate), shaped
/// [n, 1, ..., 1] for a tensor of `ndim` dimensions. None when the path is never dropped.
pub fn drop_path_mask(n: i64, ndim: usize, rate: f64, like: &Tensor) -> Option<Tensor> {
    if rate <= 0.0 {
        return None;
    }
    let keep = 1.0 - rate;
    let mut shape = vec![1i64; ndim];
    shape[0] = n;
    let mut m = Tensor::empty(shape.as_slice(), (like.kind(), like.device()));
    let _ = m.bernoulli_float_(keep);
    if keep > 0.0 {
        let _ = m.g_div_scalar_(keep);
    }
    Some(m)
}

/// `F.normalize(x, dim=-1)`: x / max(‖x‖₂, 1e-12).
pub fn l2_normalize(x: &Tensor) -> Tensor {
    x / x.norm_scalaropt_dim(2, [-1], true).clamp_min(1e-12)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erf_matches_known_values() {
        assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-13);
        assert!((erf(-1.0) + 0.842_700_792_949_714_9).abs() < 1e-13);
        assert!((erf(3.0) - 0.999_977_909_503_001_4).abs() < 1e-13);
        assert_eq!(erf(100.0), 1.0);
    }

    #[test]
    fn trunc_normal_has_the_right_spread() {
        tch::manual_seed(0);
        let t = trunc_normal(&[200_000], 0.02, -2.0, 2.0, tch::Device::Cpu);
        let std = t.std(true).double_value(&[]);
        assert!((std - 0.02).abs() < 5e-4, "{std}");
        let t = trunc_normal(&[100_000], 1.0, -2.0, 2.0, tch::Device::Cpu);
        assert!(t.abs().max().double_value(&[]) <= 2.0);
        let std = t.std(true).double_value(&[]);
        assert!((std - 0.8796).abs() < 0.01, "{std}");
    }
}
