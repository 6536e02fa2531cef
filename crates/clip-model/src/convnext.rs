//! timm's ConvNeXt (`timm/models/convnext.py`, patch stem, LayerNorm, no conv-MLP), as OpenCLIP's
//! TimmModel builds it: variable paths are timm's module paths (`stem.0`, `stages.2.blocks.5.mlp.fc1`,
//! `head.norm`, ...) under the path given (`visual.trunk`).
//!
//! The trunk ends in timm's NormMlpClassifierHead with `num_classes=0`: global average pool →
//! `head.norm` (LayerNorm over channels) → flatten; with a classifier (`num_classes > 0`) also
//! `head.fc`.

use std::cell::Cell;

use tch::{nn, Tensor};

use crate::layers::{drop_path_mask, layer_norm, layer_norm_2d, Init, ParamRecorder};
use crate::units::{run_block, BlockHooks};

/// A ConvNeXt trunk's shape (timm's model-entry arguments).
#[derive(Debug, Clone, PartialEq)]
pub struct ConvNextConfig {
    pub depths: Vec<i64>,
    pub dims: Vec<i64>,
    /// LayerNorm eps everywhere in the trunk (timm: 1e-6; convnext_xxlarge 1e-5).
    pub norm_eps: f64,
    /// Layer-scale (`gamma`) init.
    pub ls_init_value: f64,
    pub kernel_size: i64,
    pub patch_size: i64,
    pub mlp_ratio: f64,
    /// Stochastic depth at the last block; rates rise linearly from 0 over all blocks.
    pub drop_path_rate: f64,
    /// Classes of the trunk's own classifier `head.fc` (0: none, OpenCLIP's usual setting).
    pub num_classes: i64,
}

/// (timm name, depths, dims, norm_eps)
const PRESETS: &[(&str, [i64; 4], [i64; 4], f64)] = &[
    ("convnext_tiny", [3, 3, 9, 3], [96, 192, 384, 768], 1e-6),
    ("convnext_small", [3, 3, 27, 3], [96, 192, 384, 768], 1e-6),
    ("convnext_base", [3, 3, 27, 3], [128, 256, 512, 1024], 1e-6),
    ("convnext_large", [3, 3, 27, 3], [192, 384, 768, 1536], 1e-6),
    (
        "convnext_xlarge",
        [3, 3, 27, 3],
        [256, 512, 1024, 2048],
        1e-6,
    ),
    (
        "convnext_xxlarge",
        [3, 4, 30, 3],
        [384, 768, 1536, 3072],
        1e-5,
    ),
    // Not in timm: the trunk of configs/clip_tiny_test.json (scripts/make-model-goldens.py
    // registers the same model with timm to make the parity goldens).
    ("convnext_test_tiny", [1, 1, 2, 1], [16, 32, 48, 64], 1e-6),
];

impl ConvNextConfig {
    /// A timm ConvNeXt model name's shape, with no drop path and no classifier.
    pub fn preset(name: &str) -> Option<Self> {
        PRESETS
            .iter()
            .find(|p| p.0 == name)
            .map(|&(_, depths, dims, norm_eps)| Self {
                depths: depths.to_vec(),
                dims: dims.to_vec(),
                norm_eps,
                ls_init_value: 1e-6,
                kernel_size: 7,
                patch_size: 4,
                mlp_ratio: 4.0,
                drop_path_rate: 0.0,
                num_classes: 0,
            })
    }

    pub fn preset_names() -> Vec<&'static str> {
        PRESETS.iter().map(|p| p.0).collect()
    }

    /// The per-block drop-path rates, `torch.linspace(0, rate, total)` split by stage.
    pub fn drop_path_rates(&self) -> Vec<Vec<f64>> {
        let total: i64 = self.depths.iter().sum();
        let mut out = Vec::new();
        let mut i = 0;
        for &d in &self.depths {
            let mut stage = Vec::new();
            for _ in 0..d {
                let r = if total > 1 {
                    self.drop_path_rate * i as f64 / (total - 1) as f64
                } else {
                    0.0
                };
                // linspace in fp32, as timm computes it (then .tolist()).
                stage.push(r as f32 as f64);
                i += 1;
            }
            out.push(stage);
        }
        out
    }

    pub fn num_features(&self) -> i64 {
        *self.dims.last().unwrap()
    }
}

/// One ConvNeXt block; its tensors are the VarStore's variables (shallow clones).
struct Block {
    conv_dw_w: Tensor,
    conv_dw_b: Tensor,
    norm_w: Tensor,
    norm_b: Tensor,
    fc1_w: Tensor,
    fc1_b: Tensor,
    fc2_w: Tensor,
    fc2_b: Tensor,
    gamma: Tensor,
    drop_path: f64,
    eps: f64,
    pad: i64,
    channels: i64,
}

impl Block {
    fn new(
        p: &nn::Path,
        r: &ParamRecorder,
        cfg: &ConvNextConfig,
        dim: i64,
        drop_path: f64,
    ) -> Self {
        let k = cfg.kernel_size;
        let hidden = (cfg.mlp_ratio * dim as f64) as i64;
        let tn = Init::TruncNormal(0.02);
        let conv = p / "conv_dw";
        let norm = p / "norm";
        let fc1 = &(p / "mlp") / "fc1";
        let fc2 = &(p / "mlp") / "fc2";
        // Creation order = timm's state-dict order: gamma first (a direct parameter), then children.
        let gamma = r.param(p, "gamma", &[dim], Init::Const(cfg.ls_init_value));
        Self {
            gamma,
            conv_dw_w: r.param(&conv, "weight", &[dim, 1, k, k], tn),
            conv_dw_b: r.param(&conv, "bias", &[dim], Init::Zeros),
            norm_w: r.param(&norm, "weight", &[dim], Init::Ones),
            norm_b: r.param(&norm, "bias", &[dim], Init::Zeros),
            fc1_w: r.param(&fc1, "weight", &[hidden, dim], tn),
            fc1_b: r.param(&fc1, "bias", &[hidden], Init::Zeros),
            fc2_w: r.param(&fc2, "weight", &[dim, hidden], tn),
            fc2_b: r.param(&fc2, "bias", &[dim], Init::Zeros),
            drop_path,
            eps: cfg.norm_eps,
            pad: k / 2,
            channels: dim,
        }
    }

    /// A copy sharing the same variables, to move into a checkpointed closure.
    fn shallow_clone(&self) -> Self {
        Self {
            conv_dw_w: self.conv_dw_w.shallow_clone(),
            conv_dw_b: self.conv_dw_b.shallow_clone(),
            norm_w: self.norm_w.shallow_clone(),
            norm_b: self.norm_b.shallow_clone(),
            fc1_w: self.fc1_w.shallow_clone(),
            fc1_b: self.fc1_b.shallow_clone(),
            fc2_w: self.fc2_w.shallow_clone(),
            fc2_b: self.fc2_b.shallow_clone(),
            gamma: self.gamma.shallow_clone(),
            ..*self
        }
    }

    fn params(&self) -> Vec<Tensor> {
        [
            &self.conv_dw_w,
            &self.conv_dw_b,
            &self.norm_w,
            &self.norm_b,
            &self.fc1_w,
            &self.fc1_b,
            &self.fc2_w,
            &self.fc2_b,
            &self.gamma,
        ]
        .into_iter()
        .map(|t| t.shallow_clone())
        .collect()
    }

    /// `x + drop_path(gamma * mlp(norm(conv_dw(x))))`; `mask` is the drop-path mask, if any.
    fn forward(&self, x: &Tensor, mask: Option<&Tensor>) -> Tensor {
        let h = x.conv2d(
            &self.conv_dw_w,
            Some(&self.conv_dw_b),
            [1, 1],
            [self.pad, self.pad],
            [1, 1],
            self.channels,
        );
        let h = h.permute([0, 2, 3, 1]);
        let h = layer_norm(&h, &self.norm_w, &self.norm_b, self.eps);
        let h = h.linear(&self.fc1_w, Some(&self.fc1_b)).gelu("none");
        let h = h
            .linear(&self.fc2_w, Some(&self.fc2_b))
            .permute([0, 3, 1, 2]);
        let h = h * self.gamma.reshape([1, -1, 1, 1]);
        let h = match mask {
            Some(m) => h * m,
            None => h,
        };
        h + x
    }
}

struct Downsample {
    norm_w: Tensor,
    norm_b: Tensor,
    conv_w: Tensor,
    conv_b: Tensor,
}

struct Stage {
    downsample: Option<Downsample>,
    blocks: Vec<Block>,
}

/// timm ConvNeXt with OpenCLIP's head settings.
pub struct ConvNeXt {
    stem_w: Tensor,
    stem_b: Tensor,
    stem_norm_w: Tensor,
    stem_norm_b: Tensor,
    stages: Vec<Stage>,
    head_norm_w: Tensor,
    head_norm_b: Tensor,
    head_fc: Option<(Tensor, Tensor)>,
    eps: f64,
    patch: i64,
    grad_checkpointing: Cell<bool>,
    channels_last: Cell<bool>,
    num_features: i64,
    pub(crate) hooks: BlockHooks,
}

impl ConvNeXt {
    /// Builds the trunk under `p` (OpenCLIP: `visual.trunk`), initialised as timm does:
    /// conv/linear weights trunc-normal(0.02), biases 0, LayerNorms 1/0, gammas `ls_init_value`.
    pub fn new(p: &nn::Path, r: &ParamRecorder, cfg: &ConvNextConfig) -> Self {
        assert_eq!(cfg.depths.len(), 4, "ConvNeXt has 4 stages");
        assert_eq!(cfg.dims.len(), 4, "ConvNeXt has 4 stages");
        let tn = Init::TruncNormal(0.02);
        let stem = p / "stem";
        let (s0, s1) = (&stem / 0, &stem / 1);
        let d0 = cfg.dims[0];
        let ps = cfg.patch_size;
        let stem_w = r.param(&s0, "weight", &[d0, 3, ps, ps], tn);
        let stem_b = r.param(&s0, "bias", &[d0], Init::Zeros);
        let stem_norm_w = r.param(&s1, "weight", &[d0], Init::Ones);
        let stem_norm_b = r.param(&s1, "bias", &[d0], Init::Zeros);
        let rates = cfg.drop_path_rates();
        let mut stages = Vec::new();
        let mut prev = d0;
        for (i, stage_rates) in rates.iter().enumerate() {
            let sp = &(p / "stages") / i;
            let dim = cfg.dims[i];
            let downsample = if i > 0 {
                let ds = &sp / "downsample";
                let (n, c) = (&ds / 0, &ds / 1);
                Some(Downsample {
                    norm_w: r.param(&n, "weight", &[prev], Init::Ones),
                    norm_b: r.param(&n, "bias", &[prev], Init::Zeros),
                    conv_w: r.param(&c, "weight", &[dim, prev, 2, 2], tn),
                    conv_b: r.param(&c, "bias", &[dim], Init::Zeros),
                })
            } else {
                assert_eq!(prev, dim);
                None
            };
            let blocks = (0..cfg.depths[i] as usize)
                .map(|b| Block::new(&(&(&sp / "blocks") / b), r, cfg, dim, stage_rates[b]))
                .collect();
            stages.push(Stage { downsample, blocks });
            prev = dim;
        }
        let head = p / "head";
        let hn = &head / "norm";
        let nf = cfg.num_features();
        let head_norm_w = r.param(&hn, "weight", &[nf], Init::Ones);
        let head_norm_b = r.param(&hn, "bias", &[nf], Init::Zeros);
        let head_fc = (cfg.num_classes > 0).then(|| {
            let fc = &head / "fc";
            (
                r.param(&fc, "weight", &[cfg.num_classes, nf], tn),
                r.param(&fc, "bias", &[cfg.num_classes], Init::Zeros),
            )
        });
        Self {
            stem_w,
            stem_b,
            stem_norm_w,
            stem_norm_b,
            stages,
            head_norm_w,
            head_norm_b,
            head_fc,
            eps: cfg.norm_eps,
            patch: ps,
            grad_checkpointing: Cell::new(false),
            channels_last: Cell::new(false),
            num_features: nf,
            hooks: BlockHooks::default(),
        }
    }

    /// Width of `forward`'s output.
    pub fn output_dim(&self) -> i64 {
        match &self.head_fc {
            Some((w, _)) => w.size()[0],
            None => self.num_features,
        }
    }

    pub fn set_grad_checkpointing(&self, enable: bool) {
        self.grad_checkpointing.set(enable);
    }

    pub(crate) fn blocks(&self) -> usize {
        self.stages.iter().map(|s| s.blocks.len()).sum()
    }

    pub fn grad_checkpointing(&self) -> bool {
        self.grad_checkpointing.get()
    }

    /// Run the trunk on channels-last (NHWC-strided) activations: the input is converted once,
    /// convolutions keep the layout, and every permute around a LayerNorm / Linear becomes free
    /// (no copies). Off by default (OpenCLIP runs NCHW); the results agree to rounding.
    pub fn set_channels_last(&self, enable: bool) {
        self.channels_last.set(enable);
    }

    /// Stem and stages: [N, 3, H, W] → [N, C, H/32, W/32]. Drop path only when `train`.
    pub fn forward_features(&self, x: &Tensor, train: bool) -> Tensor {
        let x = if self.channels_last.get() {
            x.permute([0, 2, 3, 1]).contiguous().permute([0, 3, 1, 2])
        } else {
            x.shallow_clone()
        };
        let x = x.conv2d(
            &self.stem_w,
            Some(&self.stem_b),
            [self.patch, self.patch],
            [0, 0],
            [1, 1],
            1,
        );
        let mut x = layer_norm_2d(&x, &self.stem_norm_w, &self.stem_norm_b, self.eps);
        let ckpt = self.grad_checkpointing.get();
        let hooks = self.hooks.get();
        let mut unit = hooks.as_ref().map_or(0, |(_, first)| *first);
        for stage in &self.stages {
            if let Some(ds) = &stage.downsample {
                let h = layer_norm_2d(&x, &ds.norm_w, &ds.norm_b, self.eps);
                x = h.conv2d(&ds.conv_w, Some(&ds.conv_b), [2, 2], [0, 0], [1, 1], 1);
            }
            for block in &stage.blocks {
                let n = x.size()[0];
                let mask = if train {
                    drop_path_mask(n, 4, block.drop_path, &x)
                } else {
                    None
                };
                let b = block.shallow_clone();
                let h = hooks.as_ref().map(|(h, _)| (h, unit));
                x = run_block(
                    &x,
                    || block.params(),
                    ckpt,
                    h,
                    move |t| b.forward(t, mask.as_ref()),
                );
                unit += 1;
            }
        }
        x
    }

    /// timm NormMlpClassifierHead: global average pool → head.norm → flatten (→ head.fc).
    pub fn forward_head(&self, x: &Tensor) -> Tensor {
        let pooled = x.mean_dim([2i64, 3].as_slice(), false, None::<tch::Kind>);
        let y = layer_norm(&pooled, &self.head_norm_w, &self.head_norm_b, self.eps);
        match &self.head_fc {
            Some((w, b)) => y.linear(w, Some(b)),
            None => y,
        }
    }

    pub fn forward(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_head(&self.forward_features(x, train))
    }
}
