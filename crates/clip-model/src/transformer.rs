//! OpenCLIP's text tower (`open_clip/transformer.py`: TextTransformer with the default
//! ResidualAttentionBlock), with the parameter names CLIP gives it at the root of its state dict:
//! `token_embedding.weight`, `positional_embedding`, `transformer.resblocks.{l}.…`, `ln_final`,
//! `text_projection`.

use std::cell::Cell;

use tch::{nn, Kind, Tensor};

use crate::config::{TextConfig, TextPool};
use crate::layers::{layer_norm_cast, Init, ParamRecorder};

/// LayerNorm eps of OpenCLIP's text tower (nn.LayerNorm's default).
const LN_EPS: f64 = 1e-5;

struct ResBlock {
    ln_1_w: Tensor,
    ln_1_b: Tensor,
    in_proj_w: Tensor,
    in_proj_b: Tensor,
    out_proj_w: Tensor,
    out_proj_b: Tensor,
    ln_2_w: Tensor,
    ln_2_b: Tensor,
    c_fc_w: Tensor,
    c_fc_b: Tensor,
    c_proj_w: Tensor,
    c_proj_b: Tensor,
    heads: i64,
    causal: bool,
    quick_gelu: bool,
}

impl ResBlock {
    fn new(p: &nn::Path, r: &ParamRecorder, cfg: &TextConfig, quick_gelu: bool) -> Self {
        let w = cfg.width;
        let m = cfg.mlp_width();
        let attn_std = (w as f64).powf(-0.5);
        let proj_std = attn_std * ((2 * cfg.layers) as f64).powf(-0.5);
        let fc_std = ((2 * w) as f64).powf(-0.5);
        let (ln1, attn, ln2, mlp) = (p / "ln_1", p / "attn", p / "ln_2", p / "mlp");
        let out_proj = &attn / "out_proj";
        let (c_fc, c_proj) = (&mlp / "c_fc", &mlp / "c_proj");
        let linear_bias = |fan_in: i64| Init::Uniform(1.0 / (fan_in as f64).sqrt());
        Self {
            ln_1_w: r.param(&ln1, "weight", &[w], Init::Ones),
            ln_1_b: r.param(&ln1, "bias", &[w], Init::Zeros),
            in_proj_w: r.param(&attn, "in_proj_weight", &[3 * w, w], Init::Normal(attn_std)),
            in_proj_b: r.param(&attn, "in_proj_bias", &[3 * w], Init::Zeros),
            out_proj_w: r.param(&out_proj, "weight", &[w, w], Init::Normal(proj_std)),
            out_proj_b: r.param(&out_proj, "bias", &[w], Init::Zeros),
            ln_2_w: r.param(&ln2, "weight", &[w], Init::Ones),
            ln_2_b: r.param(&ln2, "bias", &[w], Init::Zeros),
            c_fc_w: r.param(&c_fc, "weight", &[m, w], Init::Normal(fc_std)),
            c_fc_b: r.param(&c_fc, "bias", &[m], linear_bias(w)),
            c_proj_w: r.param(&c_proj, "weight", &[w, m], Init::Normal(proj_std)),
            c_proj_b: r.param(&c_proj, "bias", &[w], linear_bias(m)),
            heads: cfg.heads,
            causal: !cfg.no_causal_mask,
            quick_gelu,
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
            ln_2_w: self.ln_2_w.shallow_clone(),
            ln_2_b: self.ln_2_b.shallow_clone(),
            c_fc_w: self.c_fc_w.shallow_clone(),
            c_fc_b: self.c_fc_b.shallow_clone(),
            c_proj_w: self.c_proj_w.shallow_clone(),
            c_proj_b: self.c_proj_b.shallow_clone(),
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
        .map(|t| t.shallow_clone())
        .collect()
    }

    /// nn.MultiheadAttention(batch_first) self-attention with the causal mask, through the fused
    /// scaled_dot_product_attention (is_causal ≡ OpenCLIP's additive -inf upper triangle).
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
        let x = x + self.attention(&layer_norm_cast(x, &self.ln_1_w, &self.ln_1_b, LN_EPS));
        let h = layer_norm_cast(&x, &self.ln_2_w, &self.ln_2_b, LN_EPS)
            .linear(&self.c_fc_w, Some(&self.c_fc_b));
        let h = if self.quick_gelu {
            &h * (&h * 1.702).sigmoid()
        } else {
            h.gelu("none")
        };
        x + h.linear(&self.c_proj_w, Some(&self.c_proj_b))
    }
}

pub struct TextTransformer {
    token_embedding: Tensor,
    positional_embedding: Tensor,
    resblocks: Vec<ResBlock>,
    ln_final_w: Tensor,
    ln_final_b: Tensor,
    text_projection: Option<Tensor>,
    pool: TextPool,
    eos_id: i64,
    grad_checkpointing: Cell<bool>,
}

impl TextTransformer {
    /// Builds the text tower's parameters under `root` (CLIP's root), initialised as OpenCLIP's
    /// `TextTransformer.init_parameters`: token embedding N(0, 0.02), positional N(0, 0.01),
    /// in_proj N(0, w^-½), out_proj and c_proj N(0, w^-½·(2L)^-½), c_fc N(0, (2w)^-½),
    /// text_projection N(0, w^-½); attention biases 0, MLP biases nn.Linear's default, LayerNorms 1/0.
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
        let rb = &(root / "transformer") / "resblocks";
        let resblocks = (0..cfg.layers)
            .map(|l| ResBlock::new(&(&rb / l), r, cfg, quick_gelu))
            .collect();
        let lnf = root / "ln_final";
        let ln_final_w = r.param(&lnf, "weight", &[w], Init::Ones);
        let ln_final_b = r.param(&lnf, "bias", &[w], Init::Zeros);
        let text_projection = cfg.projection.then(|| {
            r.param(
                root,
                "text_projection",
                &[w, embed_dim],
                Init::Normal((w as f64).powf(-0.5)),
            )
        });
        Self {
            token_embedding,
            positional_embedding,
            resblocks,
            ln_final_w,
            ln_final_b,
            text_projection,
            pool: cfg.pool_type,
            eos_id: cfg.eos_id,
            grad_checkpointing: Cell::new(false),
        }
    }

    pub fn set_grad_checkpointing(&self, enable: bool) {
        self.grad_checkpointing.set(enable);
    }

    pub fn context_length(&self) -> i64 {
        self.positional_embedding.size()[0]
    }

    pub fn output_dim(&self) -> i64 {
        match &self.text_projection {
            Some(p) => p.size()[1],
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
        let mut x = Tensor::embedding(&self.token_embedding, tokens, -1, false, false)
            + self.positional_embedding.narrow(0, 0, l);
        let ckpt = self.grad_checkpointing.get();
        for block in &self.resblocks {
            x = if ckpt {
                let b = block.shallow_clone();
                torch_ext::checkpoint(&x, &block.params(), move |t| b.forward(t))
                    .expect("checkpointed text resblock")
            } else {
                block.forward(&x)
            };
        }
        let x = layer_norm_cast(&x, &self.ln_final_w, &self.ln_final_b, LN_EPS);
        let idx = match self.pool {
            TextPool::Argmax => tokens.argmax(-1, false),
            TextPool::First => Tensor::zeros([n], (Kind::Int64, x.device())),
            TextPool::Last => Tensor::full([n], l - 1, (Kind::Int64, x.device())),
            TextPool::Eos => tokens.eq(self.eos_id).to_kind(Kind::Int).argmax(-1, false),
        };
        let rows = Tensor::arange(n, (Kind::Int64, x.device()));
        let pooled = x.index(&[Some(rows), Some(idx)]);
        match &self.text_projection {
            Some(p) => pooled.matmul(p),
            None => pooled,
        }
    }
}
