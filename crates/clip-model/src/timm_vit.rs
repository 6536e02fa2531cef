//! timm's `VisionTransformer` (`timm/models/vision_transformer.py`, timm 1.0) as an OpenCLIP
//! TimmModel trunk, under `visual.trunk.`: `cls_token`, `reg_token`, `pos_embed`,
//! `patch_embed.proj`, `norm_pre`, `blocks.{i}.{norm1,attn.qkv,attn.proj,ls1,norm2,mlp.fc1,mlp.fc2,ls2}`,
//! `norm`, `attn_pool.{latent,q,kv,proj,norm,mlp}`, `fc_norm`, `head` — the SigLIP / SigLIP 2
//! image towers and every other timm model of that architecture.
//!
//! Which timm names build, and with which options, is timm's own registry read off the models it
//! constructs (`configs/timm_vit_presets.json`, written by `scripts/make-timm-vit-presets.py`);
//! [`TimmVitConfig::resolve`] then applies what OpenCLIP's TimmModel passes timm (`global_pool`,
//! `num_classes`, `drop_path_rate`) the way timm applies it.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::OnceLock;

use anyhow::{anyhow, bail, Result};
use serde::Deserialize;
use tch::{nn, Kind, Tensor};

use crate::layers::{drop_path_mask, layer_norm, Activation, Init, ParamRecorder};
use crate::units::{run_block, BlockHooks};

/// One entry of `configs/timm_vit_presets.json`: the model timm builds for a name with its
/// defaults (see the script for how each field is read).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
struct Preset {
    img_size: [i64; 2],
    patch_size: [i64; 2],
    embed_dim: i64,
    depth: i64,
    num_heads: i64,
    mlp_hidden: i64,
    qkv_bias: bool,
    init_values: Option<f64>,
    class_token: bool,
    reg_tokens: i64,
    no_embed_class: bool,
    pre_norm: bool,
    final_norm: bool,
    /// The constructor's `fc_norm` argument (None: decided by the pool).
    fc_norm: Option<bool>,
    global_pool: String,
    dynamic_img_size: bool,
    act: Activation,
    norm_eps: f64,
    num_classes: i64,
}

#[derive(Deserialize)]
struct PresetTable {
    timm_version: String,
    models: BTreeMap<String, Preset>,
    refused: BTreeMap<String, String>,
}

fn presets() -> &'static PresetTable {
    static TABLE: OnceLock<PresetTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        serde_json::from_str(include_str!("../../../configs/timm_vit_presets.json"))
            .expect("configs/timm_vit_presets.json is valid")
    })
}

/// The timm version the preset table was read from.
pub fn timm_version() -> &'static str {
    &presets().timm_version
}

/// Whether timm has a ViT-family model of this name (built or refused).
pub fn is_timm_vit_name(name: &str) -> bool {
    let t = presets();
    t.models.contains_key(name) || t.refused.contains_key(name)
}

/// How the trunk pools its tokens (timm's `global_pool`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GlobalPool {
    /// The class token.
    Token,
    /// The mean of the patch tokens (prefix tokens left out).
    Avg,
    Max,
    /// ½(max + mean).
    AvgMax,
    /// `attn_pool`: multi-head attention pooling with a learned latent query (SigLIP's MAP head).
    Map,
}

impl GlobalPool {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "token" => GlobalPool::Token,
            "avg" => GlobalPool::Avg,
            "max" => GlobalPool::Max,
            "avgmax" => GlobalPool::AvgMax,
            "map" => GlobalPool::Map,
            _ => return None,
        })
    }

    /// timm's `use_fc_norm` default: the final norm goes after the pool for the reductions.
    fn norm_after_pool(self) -> bool {
        matches!(self, GlobalPool::Avg | GlobalPool::Max | GlobalPool::AvgMax)
    }
}

/// The trunk as built: a preset with OpenCLIP's arguments applied.
#[derive(Debug, Clone, PartialEq)]
pub struct TimmVitConfig {
    /// The size the position embedding is laid out for (timm's `img_size`; `--force-image-size`
    /// changes it, as OpenCLIP's `set_input_size`).
    pub img_size: (i64, i64),
    pub patch_size: (i64, i64),
    pub embed_dim: i64,
    pub depth: i64,
    pub num_heads: i64,
    pub mlp_hidden: i64,
    pub qkv_bias: bool,
    /// LayerScale (`ls1`, `ls2`) initialised to this.
    pub init_values: Option<f64>,
    pub class_token: bool,
    pub reg_tokens: i64,
    /// Position embeddings over the patches only; the prefix tokens are concatenated after.
    pub no_embed_class: bool,
    /// `norm_pre` after the embeddings (and a bias-free patch projection).
    pub pre_norm: bool,
    /// `norm` over every token before pooling.
    pub norm: bool,
    /// `fc_norm` after pooling.
    pub fc_norm: bool,
    pub global_pool: GlobalPool,
    pub act: Activation,
    pub norm_eps: f64,
    /// `head`: Linear(embed_dim, num_classes) when > 0.
    pub num_classes: i64,
    pub drop_path_rate: f64,
}

/// What OpenCLIP's TimmModel asks of timm: the pooling and classifier of `timm.create_model`
/// (no extra head: `timm_proj` "none" or "") or of `reset_classifier` after a default build
/// (an extra `linear` / `mlp` head).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrunkHead<'a> {
    /// `create_model(name, num_classes=n, global_pool=pool)`.
    Create { pool: &'a str, num_classes: i64 },
    /// `create_model(name)` then `reset_classifier(0, global_pool=pool if pool else default)`.
    Reset { pool: &'a str },
}

impl TimmVitConfig {
    /// The trunk `timm_model_name` is, as OpenCLIP's TimmModel builds it; `Err` names what does
    /// not build (an unknown name, an architecture outside this family, a pooling timm refuses).
    pub fn resolve(name: &str, head: TrunkHead, drop_path_rate: f64) -> Result<Self> {
        let table = presets();
        let p = match (table.models.get(name), table.refused.get(name)) {
            (Some(p), _) => p,
            (None, Some(why)) => bail!("timm model {name} is not built by clip-model: {why}"),
            (None, None) => bail!(
                "{name} is not a timm VisionTransformer (timm {})",
                table.timm_version
            ),
        };
        let default_pool = GlobalPool::parse(&p.global_pool);
        let parse = |s: &str| {
            GlobalPool::parse(s).ok_or_else(|| {
                anyhow!(
                    "timm_pool {s:?} leaves {name}'s tokens unpooled (or is not a timm pool); supported: token, avg, max, avgmax, map"
                )
            })
        };
        let (global_pool, built_pool, num_classes) = match head {
            TrunkHead::Create { pool, num_classes } => {
                let g = parse(pool)?;
                (g, Some(g), num_classes)
            }
            TrunkHead::Reset { pool } => {
                let built = default_pool;
                let g = if pool.is_empty() {
                    built.ok_or_else(|| anyhow!("{name} has no default pooling; set timm_pool"))?
                } else {
                    parse(pool)?
                };
                // timm's reset_classifier can drop the attention pool, never add or change one.
                if g == GlobalPool::Map && built != Some(GlobalPool::Map) {
                    bail!("timm cannot add attention pooling to {name} in reset_classifier (timm_pool \"map\" needs timm_proj \"none\" or \"\")");
                }
                (g, built, 0)
            }
        };
        if p.dynamic_img_size {
            bail!("{name} resamples its position embedding to every input's size (dynamic_img_size), which clip-model does not build");
        }
        if global_pool == GlobalPool::Token && !p.class_token {
            bail!("{name} has no class token to pool (timm_pool \"token\")");
        }
        // timm places the final norm when it constructs the model, by the pool it was given.
        let use_fc_norm = p
            .fc_norm
            .unwrap_or_else(|| built_pool.is_some_and(GlobalPool::norm_after_pool));
        Ok(Self {
            img_size: (p.img_size[0], p.img_size[1]),
            patch_size: (p.patch_size[0], p.patch_size[1]),
            embed_dim: p.embed_dim,
            depth: p.depth,
            num_heads: p.num_heads,
            mlp_hidden: p.mlp_hidden,
            qkv_bias: p.qkv_bias,
            init_values: p.init_values,
            class_token: p.class_token,
            reg_tokens: p.reg_tokens,
            no_embed_class: p.no_embed_class,
            pre_norm: p.pre_norm,
            norm: p.final_norm && !use_fc_norm,
            fc_norm: p.final_norm && use_fc_norm,
            global_pool,
            act: p.act,
            norm_eps: p.norm_eps,
            num_classes,
            drop_path_rate,
        })
    }

    /// The class and register tokens before the patches.
    pub fn num_prefix_tokens(&self) -> i64 {
        self.class_token as i64 + self.reg_tokens
    }

    pub fn grid_size(&self) -> (i64, i64) {
        (
            self.img_size.0 / self.patch_size.0,
            self.img_size.1 / self.patch_size.1,
        )
    }

    /// Rows of `pos_embed`: the patches, plus the prefix tokens unless `no_embed_class`.
    pub fn pos_embed_len(&self) -> i64 {
        let (gh, gw) = self.grid_size();
        gh * gw
            + if self.no_embed_class {
                0
            } else {
                self.num_prefix_tokens()
            }
    }

    /// The trunk's output width: the classifier's, else the embedding's.
    pub fn output_dim(&self) -> i64 {
        if self.num_classes > 0 {
            self.num_classes
        } else {
            self.embed_dim
        }
    }

    /// timm's `calculate_drop_path_rates(rate, depth)`: linspace(0, rate, depth) in fp32.
    fn drop_path_rates(&self) -> Vec<f64> {
        (0..self.depth)
            .map(|i| {
                let r = if self.depth > 1 {
                    self.drop_path_rate * i as f64 / (self.depth - 1) as f64
                } else {
                    0.0
                };
                r as f32 as f64
            })
            .collect()
    }
}

/// A LayerNorm's weight and bias.
struct Norm {
    w: Tensor,
    b: Tensor,
}

impl Norm {
    fn new(p: &nn::Path, r: &ParamRecorder, dim: i64) -> Self {
        Self {
            w: r.param(p, "weight", &[dim], Init::Ones),
            b: r.param(p, "bias", &[dim], Init::Zeros),
        }
    }

    fn forward(&self, x: &Tensor, eps: f64) -> Tensor {
        layer_norm(x, &self.w, &self.b, eps)
    }

    fn shallow_clone(&self) -> Self {
        Self {
            w: self.w.shallow_clone(),
            b: self.b.shallow_clone(),
        }
    }
}

/// An nn.Linear with timm's ViT init (trunc_normal std 0.02, bias 0).
struct Linear {
    w: Tensor,
    b: Option<Tensor>,
}

impl Linear {
    fn new(p: &nn::Path, r: &ParamRecorder, out: i64, inp: i64, bias: bool) -> Self {
        Self {
            w: r.param(p, "weight", &[out, inp], Init::TruncNormal(0.02)),
            b: bias.then(|| r.param(p, "bias", &[out], Init::Zeros)),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        x.linear(&self.w, self.b.as_ref())
    }

    fn shallow_clone(&self) -> Self {
        Self {
            w: self.w.shallow_clone(),
            b: self.b.as_ref().map(Tensor::shallow_clone),
        }
    }

    fn params(&self) -> impl Iterator<Item = &Tensor> {
        std::iter::once(&self.w).chain(self.b.as_ref())
    }
}

/// timm's Mlp: fc1 → act → fc2.
struct Mlp {
    fc1: Linear,
    fc2: Linear,
}

impl Mlp {
    fn new(p: &nn::Path, r: &ParamRecorder, dim: i64, hidden: i64) -> Self {
        Self {
            fc1: Linear::new(&(p / "fc1"), r, hidden, dim, true),
            fc2: Linear::new(&(p / "fc2"), r, dim, hidden, true),
        }
    }

    fn forward(&self, x: &Tensor, act: Activation) -> Tensor {
        self.fc2.forward(&act.apply(&self.fc1.forward(x)))
    }

    fn shallow_clone(&self) -> Self {
        Self {
            fc1: self.fc1.shallow_clone(),
            fc2: self.fc2.shallow_clone(),
        }
    }
}

/// Multi-head attention of `q` [B, Lq, C] over `kv_in` [B, L, C], heads split from the last
/// dimension, through the fused scaled_dot_product_attention (timm's `fused_attn` path).
fn attend(q: &Tensor, k: &Tensor, v: &Tensor, heads: i64) -> Tensor {
    let split = |t: &Tensor| {
        let (b, l, c) = t.size3().unwrap();
        t.view([b, l, heads, c / heads]).transpose(1, 2)
    };
    let (b, lq, c) = q.size3().unwrap();
    let o = Tensor::scaled_dot_product_attention(
        &split(q),
        &split(k),
        &split(v),
        None::<&Tensor>,
        0.0,
        false,
        None,
        false,
    );
    o.transpose(1, 2).reshape([b, lq, c])
}

/// timm's `Block`: `x + drop_path(ls1(attn(norm1(x))))`, then `x + drop_path(ls2(mlp(norm2(x))))`.
struct Block {
    norm1: Norm,
    qkv: Linear,
    proj: Linear,
    ls1: Option<Tensor>,
    norm2: Norm,
    mlp: Mlp,
    ls2: Option<Tensor>,
    heads: i64,
    eps: f64,
    act: Activation,
    drop_path: f64,
}

impl Block {
    fn new(p: &nn::Path, r: &ParamRecorder, cfg: &TimmVitConfig, drop_path: f64) -> Self {
        let d = cfg.embed_dim;
        let ls = |name: &str| {
            cfg.init_values
                .map(|v| r.param(&(p / name), "gamma", &[d], Init::Const(v)))
        };
        let attn = p / "attn";
        Self {
            norm1: Norm::new(&(p / "norm1"), r, d),
            qkv: Linear::new(&(&attn / "qkv"), r, 3 * d, d, cfg.qkv_bias),
            proj: Linear::new(&(&attn / "proj"), r, d, d, true),
            ls1: ls("ls1"),
            norm2: Norm::new(&(p / "norm2"), r, d),
            mlp: Mlp::new(&(p / "mlp"), r, d, cfg.mlp_hidden),
            ls2: ls("ls2"),
            heads: cfg.num_heads,
            eps: cfg.norm_eps,
            act: cfg.act,
            drop_path,
        }
    }

    fn shallow_clone(&self) -> Self {
        Self {
            norm1: self.norm1.shallow_clone(),
            qkv: self.qkv.shallow_clone(),
            proj: self.proj.shallow_clone(),
            ls1: self.ls1.as_ref().map(Tensor::shallow_clone),
            norm2: self.norm2.shallow_clone(),
            mlp: self.mlp.shallow_clone(),
            ls2: self.ls2.as_ref().map(Tensor::shallow_clone),
            ..*self
        }
    }

    fn params(&self) -> Vec<Tensor> {
        [&self.norm1.w, &self.norm1.b]
            .into_iter()
            .chain(self.qkv.params())
            .chain(self.proj.params())
            .chain(self.ls1.as_ref())
            .chain([&self.norm2.w, &self.norm2.b])
            .chain(self.mlp.fc1.params())
            .chain(self.mlp.fc2.params())
            .chain(self.ls2.as_ref())
            .map(Tensor::shallow_clone)
            .collect()
    }

    /// `masks`: the two drop-path masks (drawn outside, so a checkpointed recompute reuses them).
    fn forward(&self, x: &Tensor, masks: &Option<(Tensor, Tensor)>) -> Tensor {
        let branch = |y: Tensor, gamma: &Option<Tensor>, mask: Option<&Tensor>| {
            let y = match gamma {
                Some(g) => y * g,
                None => y,
            };
            match mask {
                Some(m) => y * m,
                None => y,
            }
        };
        let h = self.norm1.forward(x, self.eps);
        let qkv = self.qkv.forward(&h).chunk(3, -1);
        let a = self
            .proj
            .forward(&attend(&qkv[0], &qkv[1], &qkv[2], self.heads));
        let x = x + branch(a, &self.ls1, masks.as_ref().map(|m| &m.0));
        let m = self
            .mlp
            .forward(&self.norm2.forward(&x, self.eps), self.act);
        &x + branch(m, &self.ls2, masks.as_ref().map(|m| &m.1))
    }
}

/// timm's `AttentionPoolLatent` as VisionTransformer builds it for `global_pool='map'`: one
/// learned latent query attends over the tokens, then `proj`, then `x + mlp(norm(x))`.
struct AttnPool {
    latent: Tensor,
    q: Linear,
    kv: Linear,
    proj: Linear,
    norm: Norm,
    mlp: Mlp,
}

impl AttnPool {
    fn new(p: &nn::Path, r: &ParamRecorder, cfg: &TimmVitConfig) -> Self {
        let d = cfg.embed_dim;
        Self {
            latent: r.param(
                p,
                "latent",
                &[1, 1, d],
                Init::TruncNormalTf((d as f64).powf(-0.5)),
            ),
            q: Linear::new(&(p / "q"), r, d, d, true),
            kv: Linear::new(&(p / "kv"), r, 2 * d, d, true),
            proj: Linear::new(&(p / "proj"), r, d, d, true),
            norm: Norm::new(&(p / "norm"), r, d),
            mlp: Mlp::new(&(p / "mlp"), r, d, cfg.mlp_hidden),
        }
    }

    fn forward(&self, x: &Tensor, cfg: &TimmVitConfig) -> Tensor {
        let b = x.size()[0];
        let latent = self.latent.to_kind(x.kind()).expand([b, -1, -1], false);
        let q = self.q.forward(&latent);
        let kv = self.kv.forward(x).chunk(2, -1);
        let o = self
            .proj
            .forward(&attend(&q, &kv[0], &kv[1], cfg.num_heads));
        let o = &o
            + self
                .mlp
                .forward(&self.norm.forward(&o, cfg.norm_eps), cfg.act);
        o.select(1, 0)
    }
}

pub struct TimmVit {
    cls_token: Option<Tensor>,
    reg_token: Option<Tensor>,
    pos_embed: Tensor,
    patch_w: Tensor,
    patch_b: Option<Tensor>,
    norm_pre: Option<Norm>,
    blocks: Vec<Block>,
    norm: Option<Norm>,
    attn_pool: Option<AttnPool>,
    fc_norm: Option<Norm>,
    head: Option<Linear>,
    cfg: TimmVitConfig,
    grad_checkpointing: Cell<bool>,
    pub(crate) hooks: BlockHooks,
}

impl TimmVit {
    /// Builds the trunk under `p` (OpenCLIP: `visual.trunk`), initialised as timm's
    /// `init_weights` (mode ''): linear layers trunc_normal(0.02) with zero biases, `pos_embed`
    /// trunc_normal(0.02), `cls_token` / `reg_token` N(0, 1e-6), the attention pool's latent
    /// trunc_normal_tf(dim^-½), the patch convolution PyTorch's default, LayerScale at
    /// `init_values`, norms 1/0. Variables are created in state-dict order.
    pub fn new(p: &nn::Path, r: &ParamRecorder, cfg: &TimmVitConfig) -> Self {
        let d = cfg.embed_dim;
        let cls_token = cfg
            .class_token
            .then(|| r.param(p, "cls_token", &[1, 1, d], Init::Normal(1e-6)));
        let reg_token = (cfg.reg_tokens > 0)
            .then(|| r.param(p, "reg_token", &[1, cfg.reg_tokens, d], Init::Normal(1e-6)));
        let pos_embed = r.param(
            p,
            "pos_embed",
            &[1, cfg.pos_embed_len(), d],
            Init::TruncNormal(0.02),
        );
        let (ph, pw) = cfg.patch_size;
        let bound = Init::Uniform(1.0 / ((3 * ph * pw) as f64).sqrt());
        let pe = &(p / "patch_embed") / "proj";
        let patch_w = r.param(&pe, "weight", &[d, 3, ph, pw], bound);
        let patch_b = (!cfg.pre_norm).then(|| r.param(&pe, "bias", &[d], bound));
        let norm_pre = cfg.pre_norm.then(|| Norm::new(&(p / "norm_pre"), r, d));
        let bp = p / "blocks";
        let blocks = cfg
            .drop_path_rates()
            .into_iter()
            .enumerate()
            .map(|(i, rate)| Block::new(&(&bp / i), r, cfg, rate))
            .collect();
        let norm = cfg.norm.then(|| Norm::new(&(p / "norm"), r, d));
        let attn_pool =
            (cfg.global_pool == GlobalPool::Map).then(|| AttnPool::new(&(p / "attn_pool"), r, cfg));
        let fc_norm = cfg.fc_norm.then(|| Norm::new(&(p / "fc_norm"), r, d));
        let head =
            (cfg.num_classes > 0).then(|| Linear::new(&(p / "head"), r, cfg.num_classes, d, true));
        Self {
            cls_token,
            reg_token,
            pos_embed,
            patch_w,
            patch_b,
            norm_pre,
            blocks,
            norm,
            attn_pool,
            fc_norm,
            head,
            cfg: cfg.clone(),
            grad_checkpointing: Cell::new(false),
            hooks: BlockHooks::default(),
        }
    }

    pub fn config(&self) -> &TimmVitConfig {
        &self.cfg
    }

    pub fn set_grad_checkpointing(&self, enable: bool) {
        self.grad_checkpointing.set(enable);
    }

    pub(crate) fn blocks(&self) -> usize {
        self.blocks.len()
    }

    pub fn output_dim(&self) -> i64 {
        self.cfg.output_dim()
    }

    /// `patch_embed` and `_pos_embed`: patches → tokens with the prefix tokens and positions, then
    /// `norm_pre`. The embeddings take the activations' dtype.
    fn embed(&self, images: &Tensor) -> Tensor {
        let (b, _, h, w) = images
            .size4()
            .expect("images must be [batch, 3, height, width]");
        let (ph, pw) = self.cfg.patch_size;
        let grid = (h / ph, w / pw);
        let x = images.conv2d(
            &self.patch_w,
            self.patch_b.as_ref(),
            [ph, pw],
            [0, 0],
            [1, 1],
            1,
        );
        let d = self.cfg.embed_dim;
        let x = x.flatten(2, -1).transpose(1, 2);
        assert!(
            grid == self.cfg.grid_size(),
            "images are {h}x{w}; this timm ViT's position embedding is for {}x{} (use --force-image-size)",
            self.cfg.img_size.0,
            self.cfg.img_size.1
        );
        let pos = self.pos_embed.to_kind(x.kind());
        let prefix: Vec<Tensor> = [&self.cls_token, &self.reg_token]
            .into_iter()
            .flatten()
            .map(|t| t.to_kind(x.kind()).expand([b, -1, d], false))
            .collect();
        let with_prefix = |x: Tensor| {
            if prefix.is_empty() {
                x
            } else {
                let mut all: Vec<Tensor> = prefix.iter().map(Tensor::shallow_clone).collect();
                all.push(x);
                Tensor::cat(&all, 1)
            }
        };
        let x = if self.cfg.no_embed_class {
            with_prefix(x + pos)
        } else {
            with_prefix(x) + pos
        };
        match &self.norm_pre {
            Some(n) => n.forward(&x, self.cfg.norm_eps),
            None => x,
        }
    }

    /// timm's `forward_features` then `forward_head`: the pooled (and classified) features.
    /// `train`: drop path.
    pub fn forward(&self, images: &Tensor, train: bool) -> Tensor {
        let mut x = self.embed(images);
        let ckpt = self.grad_checkpointing.get();
        let hooks = self.hooks.get();
        for (i, block) in self.blocks.iter().enumerate() {
            let n = x.size()[0];
            let masks = if train {
                drop_path_mask(n, 3, block.drop_path, &x)
                    .map(|m1| (m1, drop_path_mask(n, 3, block.drop_path, &x).unwrap()))
            } else {
                None
            };
            let b = block.shallow_clone();
            let unit = hooks.as_ref().map(|(h, first)| (h, first + i));
            x = run_block(
                &x,
                || block.params(),
                ckpt,
                unit,
                move |t| b.forward(t, &masks),
            );
        }
        let eps = self.cfg.norm_eps;
        if let Some(n) = &self.norm {
            x = n.forward(&x, eps);
        }
        let prefix = self.cfg.num_prefix_tokens();
        let patches = || x.narrow(1, prefix, x.size()[1] - prefix);
        let pooled = match (&self.attn_pool, self.cfg.global_pool) {
            (Some(pool), _) => pool.forward(&patches(), &self.cfg),
            (None, GlobalPool::Token) => x.select(1, 0),
            (None, GlobalPool::Avg) => patches().mean_dim(1, false, None::<Kind>),
            (None, GlobalPool::Max) => patches().amax(1, false),
            (None, GlobalPool::AvgMax) => {
                let p = patches();
                (p.amax(1, false) + p.mean_dim(1, false, None::<Kind>)) * 0.5
            }
            (None, GlobalPool::Map) => unreachable!("a map-pooled trunk has its attn_pool"),
        };
        let pooled = match &self.fc_norm {
            Some(n) => n.forward(&pooled, eps),
            None => pooled,
        };
        match &self.head {
            Some(h) => h.forward(&pooled),
            None => pooled,
        }
    }
}

/// timm's `resample_abs_pos_embed`: `pos` [1, prefix + gh·gw, C] laid out for grid `old`,
/// the patch rows resampled to `new` (bicubic, antialiased, in fp32), the prefix rows kept.
pub fn resample_abs_pos_embed(
    pos: &Tensor,
    new: (i64, i64),
    old: (i64, i64),
    prefix: i64,
) -> Tensor {
    let (_, l, c) = pos.size3().expect("pos_embed is [1, tokens, width]");
    let kind = pos.kind();
    let grid = pos
        .narrow(1, prefix, l - prefix)
        .to_kind(Kind::Float)
        .reshape([1, old.0, old.1, c])
        .permute([0, 3, 1, 2])
        .internal_upsample_bicubic2d_aa([new.0, new.1], false, None, None)
        .permute([0, 2, 3, 1])
        .reshape([1, new.0 * new.1, c])
        .to_kind(kind);
    if prefix == 0 {
        grid
    } else {
        Tensor::cat(&[pos.narrow(1, 0, prefix), grid], 1)
    }
}
