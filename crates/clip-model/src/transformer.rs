//! OpenCLIP's text tower (`open_clip/transformer.py`: TextTransformer with the default
//! ResidualAttentionBlock), with the parameter names CLIP gives it at the root of its state dict
//! (CustomTextCLIP: under `text.`): `token_embedding.weight`, `positional_embedding`,
//! `transformer.resblocks.{l}.…`, `ln_final`, `text_projection` (`.weight` and `.bias` when it
//! is an nn.Linear, `proj_bias`).

use std::cell::Cell;

use tch::{nn, Kind, Tensor};

use crate::config::{TextConfig, TextPool};
use crate::layers::{layer_norm_cast, Activation, Init, ParamRecorder};
use crate::units::{run_block, BlockHooks, Hooks};

/// One tower's residual attention blocks: OpenCLIP's `Transformer` settings.
pub(crate) struct BlockSpec {
    pub width: i64,
    pub heads: i64,
    pub mlp_width: i64,
    pub layers: i64,
    pub causal: bool,
    pub act: Activation,
    /// Every LayerNorm's eps (`norm_kwargs.eps`).
    pub ln_eps: f64,
    /// LayerScale `ls_1` / `ls_2` with this initial value.
    pub ls_init_value: Option<f64>,
    /// The text tower's `init_parameters` (normal inits scaled by width and depth); otherwise
    /// PyTorch's module defaults, which OpenCLIP's VisionTransformer keeps (its
    /// `init_parameters` is empty).
    pub text_init: bool,
}

/// OpenCLIP's default `ResidualAttentionBlock` (batch first): `x + ls_1(attn(ln_1(x)))`, then
/// `x + ls_2(mlp(ln_2(x)))`.
pub(crate) struct ResBlock {
    ln_1_w: Tensor,
    ln_1_b: Tensor,
    in_proj_w: Tensor,
    in_proj_b: Tensor,
    out_proj_w: Tensor,
    out_proj_b: Tensor,
    ls_1: Option<Tensor>,
    ln_2_w: Tensor,
    ln_2_b: Tensor,
    c_fc_w: Tensor,
    c_fc_b: Tensor,
    c_proj_w: Tensor,
    c_proj_b: Tensor,
    ls_2: Option<Tensor>,
    heads: i64,
    causal: bool,
    act: Activation,
    ln_eps: f64,
}

impl ResBlock {
    /// The block's variables under `p`, in OpenCLIP's registration order. Text init: in_proj
    /// N(0, w^-½), out_proj and c_proj N(0, w^-½·(2L)^-½), c_fc N(0, (2w)^-½), MLP biases
    /// nn.Linear's default. PyTorch defaults: in_proj xavier-uniform, out_proj and the MLP
    /// U(±1/√fan_in) (nn.Linear). Both: attention biases 0 (nn.MultiheadAttention), LayerNorms 1/0.
    pub(crate) fn new(p: &nn::Path, r: &ParamRecorder, spec: &BlockSpec) -> Self {
        let w = spec.width;
        let m = spec.mlp_width;
        let linear = |fan_in: i64| Init::Uniform(1.0 / (fan_in as f64).sqrt());
        let (in_init, out_init, fc_init, proj_init) = if spec.text_init {
            let attn_std = (w as f64).powf(-0.5);
            let proj_std = attn_std * ((2 * spec.layers) as f64).powf(-0.5);
            let fc_std = ((2 * w) as f64).powf(-0.5);
            (
                Init::Normal(attn_std),
                Init::Normal(proj_std),
                Init::Normal(fc_std),
                Init::Normal(proj_std),
            )
        } else {
            // xavier_uniform_ on [3w, w]: bound √(6 / (fan_in + fan_out)) = √(6 / 4w).
            let xavier = Init::Uniform((6.0 / (4 * w) as f64).sqrt());
            (xavier, linear(w), linear(w), linear(m))
        };
        let (ln1, attn, ln2, mlp) = (p / "ln_1", p / "attn", p / "ln_2", p / "mlp");
        let out_proj = &attn / "out_proj";
        let (c_fc, c_proj) = (&mlp / "c_fc", &mlp / "c_proj");
        let ls = |name: &str| {
            spec.ls_init_value
                .map(|v| r.param(&(p / name), "gamma", &[w], Init::Const(v)))
        };
        Self {
            ln_1_w: r.param(&ln1, "weight", &[w], Init::Ones),
            ln_1_b: r.param(&ln1, "bias", &[w], Init::Zeros),
            in_proj_w: r.param(&attn, "in_proj_weight", &[3 * w, w], in_init),
            in_proj_b: r.param(&attn, "in_proj_bias", &[3 * w], Init::Zeros),
            out_proj_w: r.param(&out_proj, "weight", &[w, w], out_init),
            out_proj_b: r.param(&out_proj, "bias", &[w], Init::Zeros),
            ls_1: ls("ls_1"),
            ln_2_w: r.param(&ln2, "weight", &[w], Init::Ones),
            ln_2_b: r.param(&ln2, "bias", &[w], Init::Zeros),
            c_fc_w: r.param(&c_fc, "weight", &[m, w], fc_init),
            c_fc_b: r.param(&c_fc, "bias", &[m], linear(w)),
            c_proj_w: r.param(&c_proj, "weight", &[w, m], proj_init),
            c_proj_b: r.param(&c_proj, "bias", &[w], linear(m)),
            ls_2: ls("ls_2"),
            heads: spec.heads,
            causal: spec.causal,
            act: spec.act,
            ln_eps: spec.ln_eps,
        }
    }

    /// A copy sharing the same variables, to move into a checkpointed closure.
    fn shallow_clone(&self) -> Self {
        Self {
            ln_1_w: self.ln_1_w.shallow_clone(),
            ln_1_b: self.ln_1_b.shallow_clone(),
            in_proj_w: self.in_proj_w.shallow_clone(),
            in_proj_b: self.in_proj_b.shallow_clone(),
            out_proj_w: self.out_proj_w.shallow_clone(),
            out_proj_b: self.out_proj_b.shallow_clone(),
            ls_1: self.ls_1.as_ref().map(Tensor::shallow_clone),
            ln_2_w: self.ln_2_w.shallow_clone(),
            ln_2_b: self.ln_2_b.shallow_clone(),
            c_fc_w: self.c_fc_w.shallow_clone(),
            c_fc_b: self.c_fc_b.shallow_clone(),
            c_proj_w: self.c_proj_w.shallow_clone(),
            c_proj_b: self.c_proj_b.shallow_clone(),
            ls_2: self.ls_2.as_ref().map(Tensor::shallow_clone),
            ..*self
        }
    }

    fn params(&self) -> Vec<Tensor> {
        [
            &self.ln_1_w,
            &self.ln_1_b,
            &self.in_proj_w,
            &self.in_proj_b,
            &self.out_proj_w,
            &self.out_proj_b,
            &self.ln_2_w,
            &self.ln_2_b,
            &self.c_fc_w,
            &self.c_fc_b,
            &self.c_proj_w,
            &self.c_proj_b,
        ]
        .into_iter()
        .chain(self.ls_1.as_ref())
        .chain(self.ls_2.as_ref())
        .map(|t| t.shallow_clone())
        .collect()
    }

    /// nn.MultiheadAttention(batch_first) self-attention (with the causal mask in the text tower),
    /// through the fused scaled_dot_product_attention (is_causal ≡ OpenCLIP's additive -inf upper
    /// triangle).
    fn attention(&self, x: &Tensor) -> Tensor {
        let (b, l, w) = x.size3().unwrap();
        let hd = w / self.heads;
        let qkv = x.linear(&self.in_proj_w, Some(&self.in_proj_b));
        let qkv = qkv.view([b, l, 3, self.heads, hd]).permute([2, 0, 3, 1, 4]);
        let (q, k, v) = (qkv.get(0), qkv.get(1), qkv.get(2));
        let o = Tensor::scaled_dot_product_attention(
            &q,
            &k,
            &v,
            None::<&Tensor>,
            0.0,
            self.causal,
            None,
            false,
        );
        let o = o.transpose(1, 2).reshape([b, l, w]);
        o.linear(&self.out_proj_w, Some(&self.out_proj_b))
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        let eps = self.ln_eps;
        let a = self.attention(&layer_norm_cast(x, &self.ln_1_w, &self.ln_1_b, eps));
        let x = x + layer_scale(a, self.ls_1.as_ref());
        let h = layer_norm_cast(&x, &self.ln_2_w, &self.ln_2_b, eps)
            .linear(&self.c_fc_w, Some(&self.c_fc_b));
        let h = self.act.apply(&h);
        let h = h.linear(&self.c_proj_w, Some(&self.c_proj_b));
        x + layer_scale(h, self.ls_2.as_ref())
    }
}

fn layer_scale(x: Tensor, gamma: Option<&Tensor>) -> Tensor {
    match gamma {
        Some(g) => x * g,
        None => x,
    }
}

/// The blocks in turn (OpenCLIP's `Transformer.forward`); with `checkpointed`, each through
/// `torch_ext::checkpoint`, which keeps only its input and recomputes it in backward; with
/// `hooks`, block i is unit `first + i` (see [`crate::units`]).
pub(crate) fn run_blocks(
    blocks: &[ResBlock],
    x: Tensor,
    checkpointed: bool,
    hooks: Option<(Hooks, usize)>,
) -> Tensor {
    blocks.iter().enumerate().fold(x, |x, (i, block)| {
        let b = block.shallow_clone();
        let unit = hooks.as_ref().map(|(h, first)| (h, first + i));
        run_block(
            &x,
            || block.params(),
            checkpointed,
            unit,
            move |t| b.forward(t),
        )
    })
}

/// The text projection: OpenCLIP's `nn.Parameter` [width, embed_dim] (`x @ text_projection`) or,
/// with `proj_bias`, its `nn.Linear(width, embed_dim)`.
enum TextProjection {
    Matrix(Tensor),
    Linear { weight: Tensor, bias: Tensor },
}

pub struct TextTransformer {
    token_embedding: Tensor,
    positional_embedding: Tensor,
    resblocks: Vec<ResBlock>,
    ln_final_w: Tensor,
    ln_final_b: Tensor,
    text_projection: Option<TextProjection>,
    ln_eps: f64,
    pool: TextPool,
    eos_id: i64,
    grad_checkpointing: Cell<bool>,
    pub(crate) hooks: BlockHooks,
}

impl TextTransformer {
    /// Builds the text tower's parameters under `root` (CLIP's root, or CustomTextCLIP's `text`),
    /// initialised as OpenCLIP's `TextTransformer.init_parameters`: token embedding N(0, 0.02),
    /// positional N(0, 0.01), in_proj N(0, w^-½), out_proj and c_proj N(0, w^-½·(2L)^-½), c_fc
    /// N(0, (2w)^-½), text_projection N(0, w^-½) (an nn.Linear's weight likewise, its bias 0);
    /// attention biases 0, MLP biases nn.Linear's default, LayerNorms 1/0.
    pub fn new(
        root: &nn::Path,
        r: &ParamRecorder,
        cfg: &TextConfig,
        embed_dim: i64,
        quick_gelu: bool,
    ) -> Self {
        let w = cfg.width;
        let token_embedding = r.param(
            &(root / "token_embedding"),
            "weight",
            &[cfg.vocab_size, w],
            Init::Normal(0.02),
        );
        let positional_embedding = r.param(
            root,
            "positional_embedding",
            &[cfg.context_length, w],
            Init::Normal(0.01),
        );
        let spec = BlockSpec {
            width: w,
            heads: cfg.heads,
            mlp_width: cfg.mlp_width(),
            layers: cfg.layers,
            causal: !cfg.no_causal_mask,
            act: Activation::new(quick_gelu, &cfg.block),
            ln_eps: cfg.block.ln_eps,
            ls_init_value: None,
            text_init: true,
        };
        let rb = &(root / "transformer") / "resblocks";
        let resblocks = (0..cfg.layers)
            .map(|l| ResBlock::new(&(&rb / l), r, &spec))
            .collect();
        let lnf = root / "ln_final";
        let ln_final_w = r.param(&lnf, "weight", &[w], Init::Ones);
        let ln_final_b = r.param(&lnf, "bias", &[w], Init::Zeros);
        let std = Init::Normal((w as f64).powf(-0.5));
        let text_projection = cfg.projection.then(|| {
            if cfg.proj_bias {
                let p = root / "text_projection";
                TextProjection::Linear {
                    weight: r.param(&p, "weight", &[embed_dim, w], std),
                    bias: r.param(&p, "bias", &[embed_dim], Init::Zeros),
                }
            } else {
                TextProjection::Matrix(r.param(root, "text_projection", &[w, embed_dim], std))
            }
        });
        Self {
            token_embedding,
            positional_embedding,
            resblocks,
            ln_final_w,
            ln_final_b,
            text_projection,
            ln_eps: cfg.block.ln_eps,
            pool: cfg.pool_type,
            eos_id: cfg.eos_id,
            grad_checkpointing: Cell::new(false),
            hooks: BlockHooks::default(),
        }
    }

    pub fn set_grad_checkpointing(&self, enable: bool) {
        self.grad_checkpointing.set(enable);
    }

    pub fn context_length(&self) -> i64 {
        self.positional_embedding.size()[0]
    }

    pub(crate) fn blocks(&self) -> usize {
        self.resblocks.len()
    }

    pub fn output_dim(&self) -> i64 {
        match &self.text_projection {
            Some(TextProjection::Matrix(p)) => p.size()[1],
            Some(TextProjection::Linear { weight, .. }) => weight.size()[0],
            None => self.ln_final_w.size()[0],
        }
    }

    /// OpenCLIP's `encode_text(tokens, normalize=False)`: tokens [N, L] (int64, L ≤ context length).
    pub fn forward(&self, tokens: &Tensor) -> Tensor {
        let (n, l) = tokens
            .size2()
            .expect("text tokens must be [batch, context_length]");
        assert!(
            l <= self.context_length(),
            "text has {l} tokens, more than the context length {}",
            self.context_length()
        );
        // OpenCLIP casts the embeddings to the blocks' dtype: with `--precision bf16` a ViT model
        // keeps its embeddings fp32 and its linear layers bf16 (`convert_weights_to_lp`).
        let kind = self.resblocks[0].c_fc_w.kind();
        let x = Tensor::embedding(&self.token_embedding, tokens, -1, false, false).to_kind(kind)
            + self.positional_embedding.narrow(0, 0, l).to_kind(kind);
        let ckpt = self.grad_checkpointing.get();
        let x = run_blocks(&self.resblocks, x, ckpt, self.hooks.get());
        let x = layer_norm_cast(&x, &self.ln_final_w, &self.ln_final_b, self.ln_eps);
        let idx = match self.pool {
            TextPool::Argmax => tokens.argmax(-1, false),
            TextPool::First => Tensor::zeros([n], (Kind::Int64, x.device())),
            TextPool::Last => Tensor::full([n], l - 1, (Kind::Int64, x.device())),
            TextPool::Eos => tokens.eq(self.eos_id).to_kind(Kind::Int).argmax(-1, false),
        };
        let rows = Tensor::arange(n, (Kind::Int64, x.device()));
        let pooled = x.index(&[Some(rows), Some(idx)]);
        match &self.text_projection {
            Some(TextProjection::Matrix(p)) => pooled.matmul(p),
            Some(TextProjection::Linear { weight, bias }) => pooled.linear(weight, Some(bias)),
            None => pooled,
        }
    }
}
