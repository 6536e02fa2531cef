//! OpenCLIP's own image tower (`open_clip/transformer.py`: VisionTransformer with the default
//! ResidualAttentionBlock), under `visual.`: `conv1`, `class_embedding`, `positional_embedding`,
//! `ln_pre`, `transformer.resblocks.{l}.…`, `ln_post`, `proj`.

use std::cell::Cell;

use tch::{nn, Device, Kind, Tensor};

use crate::config::{VitConfig, VitPool};
use crate::layers::{layer_norm_cast, Activation, Init, ParamRecorder};
use crate::transformer::{run_blocks, BlockSpec, ResBlock};
use crate::units::BlockHooks;

pub struct VisionTransformer {
    class_embedding: Tensor,
    positional_embedding: Tensor,
    proj: Tensor,
    conv1_w: Tensor,
    ln_pre: Option<(Tensor, Tensor)>,
    resblocks: Vec<ResBlock>,
    ln_post_w: Tensor,
    ln_post_b: Tensor,
    patch_size: i64,
    grid_size: (i64, i64),
    patch_dropout: f64,
    pool_type: VitPool,
    final_ln_after_pool: bool,
    /// Every LayerNorm's eps (`norm_kwargs.eps`).
    ln_eps: f64,
    grad_checkpointing: Cell<bool>,
    pub(crate) hooks: BlockHooks,
}

impl VisionTransformer {
    /// Builds the tower under `p` (OpenCLIP: `visual`) for images of `image_size`, initialised as
    /// OpenCLIP leaves it (its `init_parameters` is empty): `class_embedding`,
    /// `positional_embedding` and `proj` N(0, width^-1), conv1 (no bias) U(±1/√fan_in), the blocks
    /// with PyTorch's module defaults, LayerScale at `ls_init_value`. Variables are created in
    /// state-dict order (the module's own parameters, then its children).
    pub fn new(
        p: &nn::Path,
        r: &ParamRecorder,
        cfg: &VitConfig,
        image_size: (i64, i64),
        embed_dim: i64,
        quick_gelu: bool,
    ) -> Self {
        let w = cfg.width;
        let scale = (w as f64).powf(-0.5);
        let grid_size = cfg.grid_size(image_size);
        let tokens = grid_size.0 * grid_size.1 + 1;
        let class_embedding = r.param(p, "class_embedding", &[w], Init::Normal(scale));
        let positional_embedding =
            r.param(p, "positional_embedding", &[tokens, w], Init::Normal(scale));
        let proj = r.param(p, "proj", &[w, embed_dim], Init::Normal(scale));
        let ps = cfg.patch_size;
        let fan_in = 3 * ps * ps;
        let conv1_w = r.param(
            &(p / "conv1"),
            "weight",
            &[w, 3, ps, ps],
            Init::Uniform(1.0 / (fan_in as f64).sqrt()),
        );
        let ln_pre = (!cfg.no_ln_pre).then(|| {
            let lp = p / "ln_pre";
            (
                r.param(&lp, "weight", &[w], Init::Ones),
                r.param(&lp, "bias", &[w], Init::Zeros),
            )
        });
        let spec = BlockSpec {
            width: w,
            heads: cfg.heads,
            mlp_width: cfg.mlp_width(),
            layers: cfg.layers,
            causal: false,
            act: Activation::new(quick_gelu, &cfg.block),
            ln_eps: cfg.block.ln_eps,
            ls_init_value: cfg.ls_init_value,
            text_init: false,
        };
        let rb = &(p / "transformer") / "resblocks";
        let resblocks = (0..cfg.layers)
            .map(|l| ResBlock::new(&(&rb / l), r, &spec))
            .collect();
        let lp = p / "ln_post";
        let ln_post_w = r.param(&lp, "weight", &[w], Init::Ones);
        let ln_post_b = r.param(&lp, "bias", &[w], Init::Zeros);
        Self {
            class_embedding,
            positional_embedding,
            proj,
            conv1_w,
            ln_pre,
            resblocks,
            ln_post_w,
            ln_post_b,
            patch_size: ps,
            grid_size,
            patch_dropout: cfg.patch_dropout,
            pool_type: cfg.pool_type,
            final_ln_after_pool: cfg.final_ln_after_pool,
            ln_eps: cfg.block.ln_eps,
            grad_checkpointing: Cell::new(false),
            hooks: BlockHooks::default(),
        }
    }

    pub fn set_grad_checkpointing(&self, enable: bool) {
        self.grad_checkpointing.set(enable);
    }

    pub fn output_dim(&self) -> i64 {
        self.proj.size()[1]
    }

    pub(crate) fn blocks(&self) -> usize {
        self.resblocks.len()
    }

    /// OpenCLIP's `VisionTransformer.forward` (pooled features, projected); `train` turns on
    /// patch dropout.
    pub fn forward(&self, images: &Tensor, train: bool) -> Tensor {
        let x = self.embeds(images, train);
        let ckpt = self.grad_checkpointing.get();
        let x = run_blocks(&self.resblocks, x, ckpt, self.hooks.get());
        let ln_post =
            |t: &Tensor| layer_norm_cast(t, &self.ln_post_w, &self.ln_post_b, self.ln_eps);
        let pooled = if self.final_ln_after_pool {
            ln_post(&self.pool(&x))
        } else {
            self.pool(&ln_post(&x))
        };
        pooled.matmul(&self.proj)
    }

    /// `_embeds`: patches → tokens, the class token first, positions added, patch dropout,
    /// `ln_pre`. The embeddings take the activations' dtype (fp32 parameters under bf16 weights).
    fn embeds(&self, images: &Tensor, train: bool) -> Tensor {
        let (b, _, h, w) = images
            .size4()
            .expect("images must be [batch, 3, height, width]");
        let (gh, gw) = self.grid_size;
        assert!(
            h / self.patch_size == gh && w / self.patch_size == gw,
            "images are {h}x{w}; this ViT's positional embedding is for a {gh}x{gw} grid of {}-pixel patches",
            self.patch_size
        );
        let ps = [self.patch_size, self.patch_size];
        let x = images.conv2d(&self.conv1_w, None::<&Tensor>, ps, [0, 0], [1, 1], 1);
        let width = x.size()[1];
        let x = x.reshape([b, width, -1]).permute([0, 2, 1]);
        let cls = self
            .class_embedding
            .to_kind(x.kind())
            .view([1, 1, -1])
            .expand([b, -1, -1], false);
        let x = Tensor::cat(&[cls, x], 1);
        let x = &x + self.positional_embedding.to_kind(x.kind());
        let x = if train && self.patch_dropout > 0.0 {
            patch_dropout(&x, self.patch_dropout)
        } else {
            x
        };
        match &self.ln_pre {
            Some((lw, lb)) => layer_norm_cast(&x, lw, lb, self.ln_eps),
            None => x,
        }
    }

    fn pool(&self, x: &Tensor) -> Tensor {
        match self.pool_type {
            VitPool::Tok => x.select(1, 0),
            VitPool::Avg => x
                .narrow(1, 1, x.size()[1] - 1)
                .mean_dim(1, false, None::<Kind>),
        }
    }
}

/// OpenCLIP's `PatchDropout(prob)` in training: the class token and, per sample,
/// `max(1, int(patches·(1 - prob)))` patch tokens, those with the largest of one N(0, 1) draw
/// each — drawn, as OpenCLIP does, from the CPU generator whatever the device (the step's
/// reseeding fixes them), kept in the draw's descending order.
fn patch_dropout(x: &Tensor, prob: f64) -> Tensor {
    let (b, l, w) = x.size3().unwrap();
    let patches = l - 1;
    let keep = 1.max((patches as f64 * (1.0 - prob)) as i64);
    let rand = Tensor::randn([b, patches], (Kind::Float, Device::Cpu));
    let (_, idx) = rand.topk(keep, -1, true, true);
    let idx = idx
        .to_device(x.device())
        .unsqueeze(-1)
        .expand([b, keep, w], false);
    let kept = x.narrow(1, 1, patches).gather(1, &idx, false);
    Tensor::cat(&[x.narrow(1, 0, 1), kept], 1)
}
