//! `--opt` and what configures it, read as OpenCLIP reads them into the optimizer it builds:
//! `adamw` (torch AdamW, OpenCLIP 3.3.0's default), `nadamw` (the development branch's torch
//! NAdam with decoupled weight decay), and `timm/NAME` through timm 1.0's
//! `create_optimizer_v2`: its registry's class and defaults, `momentum` 0.9 for the optimizers
//! that take one, `eps` / `betas` dropped for those that take none. `--beta1/--beta2` (both or
//! neither), `--eps` and `--momentum` are passed as OpenCLIP passes them, then `--opt-kwargs`
//! (the development branch's, applied last).
//!
//! Where OpenCLIP 3.3.0 crashes, clip-train takes timm's default instead: it hands timm
//! `eps=None` when `--eps` is not given, which timm's AdamW, NAdamW, Lamb, Adafactor, ADOPT and
//! Muon reject. A timm optimizer without `--lr` (OpenCLIP fails at its first step) is refused.
//! Every refusal here is a [`crate::plan::Usage`] error: exit 2.

use anyhow::{bail, Result};
use clip_data::pyliteral::PyLiteral;
use tch::Kind;
use torch_ext::optim_algos::{Adafactor, AdafactorBv, AdjustLr, Adopt, Lamb, Muon, NAdam};

use crate::params::Params;

/// The update rule and its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Algo {
    /// torch AdamW (`adamw`, `timm/adamw`), through the fused kernel.
    AdamW {
        betas: (f64, f64),
        eps: f64,
    },
    /// torch NAdam (`nadamw`), through foreach ops.
    NAdam(NAdam),
    /// timm NAdamW (`timm/nadamw`).
    TimmNAdamW {
        betas: (f64, f64),
        eps: f64,
    },
    Lamb(Lamb),
    Lion {
        betas: (f64, f64),
    },
    Adafactor {
        h: Adafactor,
        min_dim_size_to_factor: i64,
    },
    AdafactorBv {
        h: AdafactorBv,
        momentum_dtype: Kind,
        min_dim_size_to_factor: i64,
    },
    Adopt(Adopt),
    /// torch SGD (`timm/sgd`: Nesterov; `timm/momentum`: classical), through the fused kernel.
    Sgd {
        momentum: f64,
        nesterov: bool,
    },
    /// timm Muon (`muon`, `adamuon`, `nadamuon`): matrices by Newton–Schulz, the rest (and the
    /// groups `--opt-fallback-list` flags) by AdamW — NAdamW with Nesterov — at the learning
    /// rate times `fallback_lr_scale`, with `betas` and `h.eps`.
    Muon {
        h: Muon,
        betas: (f64, f64),
        fallback_lr_scale: f64,
    },
}

/// The optimizer a run builds.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimSpec {
    /// `--opt` as given, lowercased (OpenCLIP's `args.opt.lower()`).
    pub name: String,
    /// The class OpenCLIP logs (`Created Lamb (timm/lamb) optimizer`).
    pub class: &'static str,
    pub algo: Algo,
    /// `--wd`, for the groups that decay.
    pub weight_decay: f64,
    /// The settings as the log's first lines show them (`key: value`).
    pub summary: Vec<(String, String)>,
}

/// Every `--opt` value clip-train builds (exit 2 names them for any other).
pub const BUILT: &[&str] = &[
    "adamw",
    "nadamw",
    "timm/adamw",
    "timm/nadamw",
    "timm/lamb",
    "timm/lambw",
    "timm/lion",
    "timm/adafactor",
    "timm/adafactorbv",
    "timm/adoptw",
    "timm/sgd",
    "timm/momentum",
    "timm/muon",
    "timm/adamuon",
    "timm/nadamuon",
];

/// What a registry entry takes (timm's OptimInfo `has_eps` / `has_betas` / `has_momentum`).
struct Takes {
    eps: bool,
    betas: bool,
    momentum: bool,
}

/// The keyword arguments the optimizer is built with: OpenCLIP's (betas, eps, momentum) then
/// `--opt-kwargs`, each consumed by the builder that understands it; what is left is refused.
struct Kwargs {
    opt: String,
    items: Vec<(String, PyLiteral)>,
}

impl Kwargs {
    fn take(&mut self, key: &str) -> Option<PyLiteral> {
        let i = self.items.iter().rposition(|(k, _)| k == key)?;
        let value = self.items.remove(i).1;
        self.items.retain(|(k, _)| k != key);
        Some(value)
    }

    fn float(&mut self, key: &str, default: f64) -> Result<f64> {
        match self.take(key) {
            None => Ok(default),
            Some(v) => v.num().ok_or_else(|| {
                anyhow::anyhow!("--opt {}: {key} must be a number, found {v:?}", self.opt)
            }),
        }
    }

    /// A number or None.
    fn optional(&mut self, key: &str, default: Option<f64>) -> Result<Option<f64>> {
        match self.take(key) {
            None => Ok(default),
            Some(PyLiteral::None) => Ok(None),
            Some(v) => v.num().map(Some).ok_or_else(|| {
                anyhow::anyhow!(
                    "--opt {}: {key} must be a number or None, found {v:?}",
                    self.opt
                )
            }),
        }
    }

    fn flag(&mut self, key: &str, default: bool) -> bool {
        self.take(key).map_or(default, |v| v.truthy())
    }

    fn int(&mut self, key: &str, default: i64) -> Result<i64> {
        let v = self.float(key, default as f64)?;
        if v.fract() != 0.0 {
            bail!("--opt {}: {key} must be an integer, found {v}", self.opt);
        }
        Ok(v as i64)
    }

    fn string(&mut self, key: &str, default: Option<&str>) -> Result<Option<String>> {
        match self.take(key) {
            None => Ok(default.map(str::to_owned)),
            Some(PyLiteral::None) => Ok(None),
            Some(PyLiteral::Str(s)) => Ok(Some(s)),
            Some(v) => bail!("--opt {}: {key} must be a string, found {v:?}", self.opt),
        }
    }

    fn betas(&mut self, default: (f64, f64)) -> Result<(f64, f64)> {
        let Some(v) = self.take("betas") else {
            return Ok(default);
        };
        match v
            .items()
            .map(|i| i.iter().map(PyLiteral::num).collect::<Vec<_>>())
        {
            Some(b) if b.len() >= 2 && b.iter().all(Option::is_some) => {
                Ok((b[0].unwrap(), b[1].unwrap()))
            }
            _ => bail!("--opt {}: betas must be two numbers, found {v:?}", self.opt),
        }
    }

    /// Refuses what no builder took.
    fn done(self, supported: &str) -> Result<()> {
        if let Some((k, v)) = self.items.first() {
            bail!(
                "not supported yet: --opt-kwargs {k}={v:?} for --opt {} (supported: {supported})",
                self.opt
            );
        }
        Ok(())
    }
}

/// Reads `--opt` and its settings (see the module comment).
pub fn parse(p: &Params) -> Result<OptimSpec> {
    let name = p.opt.to_lowercase();
    if p.beta1.is_some() != p.beta2.is_some() {
        bail!("--opt {name}: give both --beta1 and --beta2, or neither (OpenCLIP asserts it)");
    }
    for (k, _) in &p.opt_kwargs {
        if k == "lr" || k == "weight_decay" {
            bail!("--opt-kwargs {k}: set by --lr / --wd (OpenCLIP passes both and fails on the repeated keyword)");
        }
    }
    let mut kw = Kwargs {
        opt: name.clone(),
        items: vec![],
    };
    if let (Some(b1), Some(b2)) = (p.beta1, p.beta2) {
        let betas = PyLiteral::Tuple(vec![PyLiteral::Float(b1), PyLiteral::Float(b2)]);
        kw.items.push(("betas".into(), betas));
    }
    if let Some(eps) = p.eps {
        kw.items.push(("eps".into(), PyLiteral::Float(eps)));
    }
    let timm = name.strip_prefix("timm/").map(|_| {
        // OpenCLIP's `opt.split('timm/')[-1]`, then timm's `opt_name = opt.split('_')[-1]`.
        let rest = name.rsplit("timm/").next().unwrap_or("");
        let parts: Vec<&str> = rest.split('_').collect();
        (
            parts.len() > 1 && parts[0] == "lookahead",
            *parts.last().unwrap(),
        )
    });
    if p.momentum.is_some() && timm.is_none() {
        bail!("--momentum applies to timm optimizers only (--opt timm/NAME); OpenCLIP ignores it for --opt {name}");
    }
    if let Some(m) = p.momentum {
        kw.items.push(("momentum".into(), PyLiteral::Float(m)));
    }
    kw.items.extend(p.opt_kwargs.iter().cloned());
    // The development branch's older spelling of --opt-fallback-list, read by the plan.
    kw.take("fallback_list");
    let (class, algo, supported) = match timm {
        None => torch_optimizer(&name, &mut kw)?,
        Some((true, _)) => {
            bail!("not supported yet: --opt {name} (timm's Lookahead wrapper)")
        }
        Some((false, opt)) => {
            if p.lr.is_none() {
                bail!("--opt {name} needs --lr: OpenCLIP 3.3.0 sets no default learning rate for timm optimizers (it fails at the first step)");
            }
            timm_optimizer(&name, opt, &mut kw)?
        }
    };
    kw.done(supported)?;
    Ok(OptimSpec {
        summary: summary(&algo, p),
        name,
        class,
        algo,
        weight_decay: p.wd,
    })
}

fn unknown(name: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "not supported yet: --opt {name} (clip-train builds {})",
        BUILT.join(", ")
    )
}

/// `adamw` and the development branch's `nadamw`: torch's classes, with the model's default
/// betas and eps that the flag parser filled in.
fn torch_optimizer(name: &str, kw: &mut Kwargs) -> Result<(&'static str, Algo, &'static str)> {
    let betas = kw.betas((0.9, 0.999))?;
    match name {
        "adamw" => {
            let eps = kw.float("eps", 1e-8)?;
            Ok(("AdamW", Algo::AdamW { betas, eps }, "betas, eps"))
        }
        "nadamw" => {
            let h = NAdam {
                beta1: betas.0,
                beta2: betas.1,
                eps: kw.float("eps", 1e-8)?,
                momentum_decay: kw.float("momentum_decay", 4e-3)?,
                decoupled_weight_decay: kw.flag("decoupled_weight_decay", true),
            };
            let supported = "betas, eps, momentum_decay, decoupled_weight_decay";
            Ok(("NAdam", Algo::NAdam(h), supported))
        }
        _ => Err(unknown(name)),
    }
}

/// timm's registry entry for `opt`: its class and defaults as `create_optimizer` applies them.
fn timm_optimizer(
    name: &str,
    opt: &str,
    kw: &mut Kwargs,
) -> Result<(&'static str, Algo, &'static str)> {
    let takes = |eps, betas, momentum| Takes {
        eps,
        betas,
        momentum,
    };
    let t = match opt {
        "lion" => takes(false, true, false),
        "adafactorbv" => takes(true, false, true),
        "sgd" | "momentum" => takes(false, false, true),
        "muon" | "adamuon" | "nadamuon" => takes(true, true, true),
        "adamw" | "nadamw" | "lamb" | "lambw" | "adafactor" | "adoptw" => takes(true, true, false),
        _ => return Err(unknown(name)),
    };
    // create_optimizer: momentum defaults to 0.9 where taken; eps and betas dropped where not.
    if t.momentum && !kw.items.iter().any(|(k, _)| k == "momentum") {
        kw.items.push(("momentum".into(), PyLiteral::Float(0.9)));
    }
    if !t.eps {
        kw.take("eps");
    }
    if !t.betas {
        kw.take("betas");
    }
    Ok(match opt {
        "adamw" => {
            let (betas, eps) = (kw.betas((0.9, 0.999))?, kw.float("eps", 1e-8)?);
            ("AdamW", Algo::AdamW { betas, eps }, "betas, eps")
        }
        "nadamw" => {
            let (betas, eps) = (kw.betas((0.9, 0.999))?, kw.float("eps", 1e-8)?);
            ("NAdamW", Algo::TimmNAdamW { betas, eps }, "betas, eps")
        }
        "lamb" | "lambw" => ("Lamb", Algo::Lamb(lamb(kw, opt == "lambw")?), LAMB_KWARGS),
        "lion" => (
            "Lion",
            Algo::Lion {
                betas: kw.betas((0.9, 0.99))?,
            },
            "betas",
        ),
        "adafactor" => adafactor(kw)?,
        "adafactorbv" => adafactor_bv(kw)?,
        "adoptw" => (
            "Adopt",
            Algo::Adopt(adopt(kw)?),
            "betas, eps, clip_exp, decoupled",
        ),
        "sgd" | "momentum" => {
            let momentum = kw.float("momentum", 0.9)?;
            let nesterov = kw.flag("nesterov", opt == "sgd");
            if nesterov && momentum <= 0.0 {
                bail!("--opt {name}: Nesterov momentum needs a momentum above 0 (torch's SGD refuses it)");
            }
            (
                "SGD",
                Algo::Sgd { momentum, nesterov },
                "momentum, nesterov",
            )
        }
        _ => ("Muon", muon(kw, opt)?, MUON_KWARGS),
    })
}

const LAMB_KWARGS: &str =
    "betas, eps, bias_correction, grad_averaging, max_grad_norm, trust_clip, always_adapt, decoupled_decay";

fn lamb(kw: &mut Kwargs, decoupled: bool) -> Result<Lamb> {
    let (beta1, beta2) = kw.betas((0.9, 0.999))?;
    Ok(Lamb {
        beta1,
        beta2,
        eps: kw.float("eps", 1e-6)?,
        max_grad_norm: kw.optional("max_grad_norm", Some(1.0))?,
        bias_correction: kw.flag("bias_correction", true),
        grad_averaging: kw.flag("grad_averaging", true),
        trust_clip: kw.flag("trust_clip", false),
        always_adapt: kw.flag("always_adapt", false),
        decoupled: kw.flag("decoupled_decay", decoupled),
    })
}

fn adafactor(kw: &mut Kwargs) -> Result<(&'static str, Algo, &'static str)> {
    // betas=None (no first moment) unless given; only betas[0] is read.
    let beta1 = match kw.take("betas") {
        None | Some(PyLiteral::None) => None,
        Some(v) => {
            kw.items.push(("betas".into(), v));
            Some(kw.betas((0.0, 0.0))?.0)
        }
    };
    let h = Adafactor {
        eps: kw.float("eps", 1e-30)?,
        clip_threshold: kw.float("clip_threshold", 1.0)?,
        decay_rate: kw.float("decay_rate", -0.8)?,
        beta1,
    };
    let min_dim_size_to_factor = kw.int("min_dim_size_to_factor", 16)?;
    let algo = Algo::Adafactor {
        h,
        min_dim_size_to_factor,
    };
    let supported = "betas, eps, clip_threshold, decay_rate, min_dim_size_to_factor";
    Ok(("Adafactor", algo, supported))
}

fn adafactor_bv(kw: &mut Kwargs) -> Result<(&'static str, Algo, &'static str)> {
    let momentum_dtype = match kw.string("momentum_dtype", Some("bfloat16"))?.as_deref() {
        Some("bfloat16") => Kind::BFloat16,
        Some("float16") => Kind::Half,
        Some("float32") => Kind::Float,
        other => {
            bail!("--opt timm/adafactorbv: momentum_dtype {other:?} (bfloat16, float16 or float32)")
        }
    };
    let h = AdafactorBv {
        decay_rate: kw.float("decay_rate", 0.8)?,
        decay_offset: kw.int("decay_offset", 0)?,
        beta2_cap: kw.float("beta2_cap", 0.999)?,
        momentum: kw.optional("momentum", Some(0.9))?,
        eps: kw.optional("eps", None)?,
        clipping_threshold: kw.optional("clipping_threshold", None)?,
        unscaled_wd: kw.flag("unscaled_wd", false),
    };
    let min_dim_size_to_factor = kw.int("min_dim_size_to_factor", 16)?;
    let algo = Algo::AdafactorBv {
        h,
        momentum_dtype,
        min_dim_size_to_factor,
    };
    let supported = "momentum, eps, min_dim_size_to_factor, decay_rate, decay_offset, beta2_cap, momentum_dtype, clipping_threshold, unscaled_wd";
    Ok(("AdafactorBigVision", algo, supported))
}

fn adopt(kw: &mut Kwargs) -> Result<Adopt> {
    let (beta1, beta2) = kw.betas((0.9, 0.9999))?;
    Ok(Adopt {
        beta1,
        beta2,
        eps: kw.float("eps", 1e-6)?,
        clip_exp: kw.optional("clip_exp", Some(0.333))?,
        decoupled: kw.flag("decoupled", true),
    })
}

const MUON_KWARGS: &str = "betas, eps, momentum, nesterov, ns_steps, ns_coefficients, safety_factor, adjust_lr_fn, conv_mode, normalize_spatial, fallback_lr_scale, scale_eps, algo";

fn muon(kw: &mut Kwargs, opt: &str) -> Result<Algo> {
    let adamuon = opt != "muon";
    let betas = kw.betas((0.9, 0.95))?;
    let algo = kw.string("algo", Some(if adamuon { "adamuon" } else { "muon" }))?;
    let adamuon = match algo.as_deref() {
        Some("muon") => false,
        Some("adamuon") => true,
        other => bail!("--opt timm/{opt}: algo {other:?} (muon or adamuon)"),
    };
    let ns_steps = kw.int("ns_steps", 5)?;
    let coefficients = ns_coefficients(kw, ns_steps)?;
    let adjust_lr = match kw
        .string("adjust_lr_fn", Some("match_rms_adamw"))?
        .as_deref()
    {
        None => AdjustLr::None,
        Some("original") if !adamuon => AdjustLr::Original,
        Some("match_rms_adamw") => AdjustLr::MatchRmsAdamW,
        Some("rms_to_rms") => AdjustLr::RmsToRms,
        Some("rsqrt_in") if adamuon => AdjustLr::RsqrtIn,
        Some(other) => bail!("--opt timm/{opt}: adjust_lr_fn {other:?} is not one of timm's"),
    };
    let batched = match kw.string("conv_mode", Some("flatten"))?.as_deref() {
        Some("flatten") => false,
        Some("batched") => true,
        other => bail!("--opt timm/{opt}: conv_mode {other:?} (flatten or batched)"),
    };
    let h = Muon {
        momentum: kw.float("momentum", 0.95)?,
        nesterov: kw.flag("nesterov", opt == "nadamuon"),
        eps: kw.float("eps", 1e-7)?,
        safety_factor: kw.float("safety_factor", 1.0)?,
        coefficients,
        adjust_lr,
        batched,
        normalize_spatial: kw.flag("normalize_spatial", true),
        scale_eps: kw.flag("scale_eps", false),
        adamuon: adamuon.then_some(betas.1),
    };
    if !(0.0..1.0).contains(&h.momentum) {
        bail!(
            "--opt timm/{opt}: momentum {} must be in [0, 1)",
            h.momentum
        );
    }
    Ok(Algo::Muon {
        h,
        betas,
        fallback_lr_scale: kw.float("fallback_lr_scale", 1.0)?,
    })
}

/// One Newton–Schulz step's (a, b, c).
type Coefficients = (f64, f64, f64);

/// timm's Newton–Schulz coefficient presets (muon.py `_COEFFICIENTS`).
const NS_PRESETS: &[(&str, &[Coefficients])] = &[
    ("original", &[(3.4445, -4.7750, 2.0315)]),
    (
        "quintic",
        &[
            (4.0848, -6.8946, 2.9270),
            (3.9505, -6.3029, 2.6377),
            (3.7418, -5.5913, 2.3037),
            (2.8769, -3.1427, 1.2046),
            (2.8366, -3.0525, 1.2012),
        ],
    ),
    (
        "polar_express",
        &[
            (8.237312490495555, -23.157747414558198, 16.680568411445915),
            (4.082441999064835, -2.893047735332586, 0.5252849256975648),
            (3.9263479922546582, -2.8547468034765298, 0.5318022422894988),
            (3.2982187133085143, -2.424541981026706, 0.48632008358844075),
            (2.2970369434552573, -1.63662558125903, 0.4002628455953627),
            (1.8763805351440397, -1.2347896577722228, 0.35891887501668385),
            (1.8564423485617974, -1.2132449880935525, 0.3568003487825883),
            (1.8749994008682747, -1.2499988017229169, 0.3749994008546422),
        ],
    ),
    (
        "polar_express_safer",
        &[
            (8.156554524902461, -22.48329292557795, 15.878769915207462),
            (4.0429299351667245, -2.808917465908704, 0.5000178451051299),
            (3.8916678022926563, -2.7724841532176825, 0.5060648178503389),
            (3.285753657755658, -2.3681294933425394, 0.46449024233003117),
            (2.3005307116270983, -1.6111665557258408, 0.3833374427545273),
            (1.8631210546382593, -1.2042160621002727, 0.3421879560523383),
            (1.8382572152247512, -1.1779263289537742, 0.3396513038637379),
            (1.8749999923301852, -1.2499999836060613, 0.374999991275876),
        ],
    ),
];

/// `ns_coefficients` (a preset name, one (a, b, c) or a list of them, "quintic" by default)
/// matched to `steps` as timm does: cut to `steps`, or the last repeated.
fn ns_coefficients(kw: &mut Kwargs, steps: i64) -> Result<Vec<(f64, f64, f64)>> {
    let triple = |v: &PyLiteral| -> Option<(f64, f64, f64)> {
        match v
            .items()?
            .iter()
            .map(PyLiteral::num)
            .collect::<Option<Vec<_>>>()?[..]
        {
            [a, b, c] => Some((a, b, c)),
            _ => None,
        }
    };
    let given = kw
        .take("ns_coefficients")
        .unwrap_or(PyLiteral::Str("quintic".into()));
    let mut list: Vec<(f64, f64, f64)> = match &given {
        PyLiteral::Str(s) => match NS_PRESETS.iter().find(|(n, _)| n == s) {
            Some((_, c)) => c.to_vec(),
            None => bail!("--opt-kwargs ns_coefficients={s}: not one of timm's presets (original, quintic, polar_express, polar_express_safer)"),
        },
        v => match triple(v) {
            Some(t) => vec![t],
            None => v
                .items()
                .and_then(|items| items.iter().map(triple).collect::<Option<Vec<_>>>())
                .filter(|l| !l.is_empty())
                .ok_or_else(|| anyhow::anyhow!("--opt-kwargs ns_coefficients={v:?}: a preset name, (a, b, c) or a list of them"))?,
        },
    };
    if steps < 1 {
        bail!("--opt-kwargs ns_steps={steps}: at least 1");
    }
    let last = *list.last().unwrap();
    list.resize(steps as usize, last);
    Ok(list)
}

/// `key: value` pairs for the log, in the spirit of OpenCLIP's `optimizer.defaults` line.
fn summary(algo: &Algo, p: &Params) -> Vec<(String, String)> {
    let f = |x: f64| crate::pyfmt::repr_float(x);
    let opt = |x: Option<f64>| x.map_or("None".to_string(), f);
    let b = |x: bool| (if x { "True" } else { "False" }).to_string();
    let pair = |(x, y): (f64, f64)| format!("({}, {})", f(x), f(y));
    let mut out: Vec<(&str, String)> = vec![("lr", opt(p.lr)), ("weight_decay", f(p.wd))];
    match algo {
        Algo::AdamW { betas, eps } | Algo::TimmNAdamW { betas, eps } => {
            out.extend([("betas", pair(*betas)), ("eps", f(*eps))])
        }
        Algo::NAdam(h) => out.extend([
            ("betas", pair((h.beta1, h.beta2))),
            ("eps", f(h.eps)),
            ("momentum_decay", f(h.momentum_decay)),
            ("decoupled_weight_decay", b(h.decoupled_weight_decay)),
        ]),
        Algo::Lamb(h) => out.extend([
            ("betas", pair((h.beta1, h.beta2))),
            ("eps", f(h.eps)),
            ("bias_correction", b(h.bias_correction)),
            ("grad_averaging", b(h.grad_averaging)),
            ("max_grad_norm", opt(h.max_grad_norm)),
            ("trust_clip", b(h.trust_clip)),
            ("always_adapt", b(h.always_adapt)),
            ("decoupled_decay", b(h.decoupled)),
        ]),
        Algo::Lion { betas } => out.push(("betas", pair(*betas))),
        Algo::Adafactor {
            h,
            min_dim_size_to_factor,
        } => out.extend([
            ("eps", f(h.eps)),
            ("clip_threshold", f(h.clip_threshold)),
            ("decay_rate", f(h.decay_rate)),
            ("beta1", opt(h.beta1)),
            ("min_dim_size_to_factor", min_dim_size_to_factor.to_string()),
        ]),
        Algo::AdafactorBv {
            h,
            momentum_dtype,
            min_dim_size_to_factor,
        } => out.extend([
            ("min_dim_size_to_factor", min_dim_size_to_factor.to_string()),
            ("decay_rate", f(h.decay_rate)),
            ("decay_offset", h.decay_offset.to_string()),
            ("beta2_cap", f(h.beta2_cap)),
            ("momentum", opt(h.momentum)),
            ("momentum_dtype", format!("{momentum_dtype:?}")),
            ("eps", opt(h.eps)),
            ("clipping_threshold", opt(h.clipping_threshold)),
            ("unscaled_wd", b(h.unscaled_wd)),
        ]),
        Algo::Adopt(h) => out.extend([
            ("betas", pair((h.beta1, h.beta2))),
            ("eps", f(h.eps)),
            ("clip_exp", opt(h.clip_exp)),
            ("decoupled", b(h.decoupled)),
        ]),
        Algo::Sgd { momentum, nesterov } => {
            out.extend([("momentum", f(*momentum)), ("nesterov", b(*nesterov))])
        }
        Algo::Muon {
            h,
            betas,
            fallback_lr_scale,
        } => out.extend([
            ("momentum", f(h.momentum)),
            ("nesterov", b(h.nesterov)),
            ("ns_steps", h.coefficients.len().to_string()),
            ("eps", f(h.eps)),
            ("safety_factor", f(h.safety_factor)),
            ("adjust_lr_fn", format!("{:?}", h.adjust_lr)),
            (
                "conv_mode",
                (if h.batched { "batched" } else { "flatten" }).into(),
            ),
            ("normalize_spatial", b(h.normalize_spatial)),
            ("fallback_lr_scale", f(*fallback_lr_scale)),
            ("betas", pair(*betas)),
            (
                "algo",
                (if h.adamuon.is_some() {
                    "adamuon"
                } else {
                    "muon"
                })
                .into(),
            ),
            ("scale_eps", b(h.scale_eps)),
        ]),
    }
    out.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}
