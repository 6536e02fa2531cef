//! OpenCLIP's `CLIP` (`open_clip/model.py`) with a timm ConvNeXt image tower.

use anyhow::{bail, Result};
use tch::{nn, Kind, Tensor};

use crate::config::ClipConfig;
use crate::layers::{l2_normalize, Init, ParamRecorder};
use crate::timm_model::TimmModel;
use crate::transformer::TextTransformer;

/// `ln(1/0.07)`, OpenCLIP's initial logit scale.
pub const INIT_LOGIT_SCALE: f64 = 2.659_260_036_932_778_4;

pub struct Clip {
    pub visual: TimmModel,
    pub text: TextTransformer,
    /// The scalar parameter `logit_scale` (its exp multiplies the logits).
    pub logit_scale: Tensor,
    /// SigLIP's scalar `logit_bias` (added to the logits), when the config's `init_logit_bias`
    /// is set.
    pub logit_bias: Option<Tensor>,
    params: Vec<(String, Tensor)>,
    cfg: ClipConfig,
}

/// Where a state-dict key sits in OpenCLIP's `CLIP.state_dict()`: CLIP's own parameters
/// (`positional_embedding`, `text_projection`, `logit_scale`, `logit_bias`) first, then its
/// children in registration order (`visual`, `transformer`, `token_embedding`, `ln_final`).
fn state_dict_rank(name: &str) -> usize {
    let first = name.split('.').next().unwrap_or("");
    match first {
        "positional_embedding" => 0,
        "text_projection" => 1,
        "logit_scale" => 2,
        "logit_bias" => 3,
        "visual" => 4,
        "transformer" => 5,
        "token_embedding" => 6,
        "ln_final" => 7,
        _ => 8,
    }
}

impl Clip {
    /// Builds the model's variables under `path` (normally a VarStore's root, so that variable
    /// names are OpenCLIP's state-dict keys), freshly initialised as OpenCLIP initialises them.
    pub fn new(path: &nn::Path, cfg: &ClipConfig) -> Result<Clip> {
        validate(cfg)?;
        let r = ParamRecorder::new();
        let visual = TimmModel::new(&(path / "visual"), &r, &cfg.vision, cfg.embed_dim);
        let text = TextTransformer::new(path, &r, &cfg.text, cfg.embed_dim, cfg.quick_gelu);
        let logit_scale = r.param(path, "logit_scale", &[], Init::Const(cfg.init_logit_scale));
        let logit_bias = cfg
            .init_logit_bias
            .map(|b| r.param(path, "logit_bias", &[], Init::Const(b)));
        let prefix_len = {
            let c: Vec<&str> = path.components().collect();
            if c.is_empty() {
                0
            } else {
                c.join(".").len() + 1
            }
        };
        let mut params = r.into_vec();
        params.sort_by_key(|(n, _)| state_dict_rank(&n[prefix_len..]));
        Ok(Clip {
            visual,
            text,
            logit_scale,
            logit_bias,
            params,
            cfg: cfg.clone(),
        })
    }

    pub fn config(&self) -> &ClipConfig {
        &self.cfg
    }

    /// `(name, tensor)` for every parameter, in OpenCLIP's state-dict order. The tensors share
    /// storage with the VarStore's variables.
    pub fn named_parameters(&self) -> &[(String, Tensor)] {
        &self.params
    }

    /// The number of scalar parameters.
    pub fn parameter_count(&self) -> i64 {
        self.params.iter().map(|(_, t)| t.numel() as i64).sum()
    }

    /// OpenCLIP's `lock_image_tower()` (LiT) with no unlocked groups: the timm trunk's parameters
    /// stop requiring gradients; the projection head stays trainable.
    pub fn lock_image_tower(&self) {
        self.freeze(|k| k.starts_with("visual.trunk."));
    }

    /// OpenCLIP's `lock_text_tower(unlocked_layers)`: the text tower's parameters stop requiring
    /// gradients except the last `unlocked_layers` of its groups, which are, in order: the
    /// embeddings, each residual block but the last, the last block with `ln_final`, and
    /// `text_projection`.
    pub fn lock_text_tower(&self, unlocked_layers: usize) {
        let layers = self.cfg.text.layers as usize;
        let group = |k: &str| -> Option<usize> {
            if k == "token_embedding.weight" || k == "positional_embedding" {
                return Some(0);
            }
            if let Some(rest) = k.strip_prefix("transformer.resblocks.") {
                let i: usize = rest.split('.').next()?.parse().ok()?;
                return Some(1 + i.min(layers - 1));
            }
            if k.starts_with("ln_final.") {
                return Some(layers);
            }
            (k == "text_projection").then_some(layers + 1)
        };
        let groups = layers + 2 - usize::from(!self.cfg.text.projection);
        let first_unlocked = groups.saturating_sub(unlocked_layers);
        self.freeze(|k| group(k).is_some_and(|g| g < first_unlocked));
    }

    /// OpenCLIP's low-precision models (`create_model(precision=…)`): every parameter becomes
    /// bf16 in place (`pure_bf16`), or every one but the text tower's LayerNorms, which OpenCLIP
    /// builds as `LayerNormFp32` and casts back to fp32 (`bf16`).
    pub fn to_bf16(&self, keep_text_norms_fp32: bool) {
        let text_norm = |k: &str| {
            k.starts_with("ln_final.")
                || (k.starts_with("transformer.resblocks.")
                    && (k.contains(".ln_1.") || k.contains(".ln_2.")))
        };
        tch::no_grad(|| {
            for (k, t) in &self.params {
                let kind = if keep_text_norms_fp32 && text_norm(k) {
                    Kind::Float
                } else {
                    Kind::BFloat16
                };
                let mut v = t.shallow_clone();
                v.set_data(&t.to_kind(kind));
            }
        });
    }

    fn freeze(&self, which: impl Fn(&str) -> bool) {
        for (k, t) in &self.params {
            if which(k) {
                let _ = t.shallow_clone().set_requires_grad(false);
            }
        }
    }

    /// Per-block gradient checkpointing in both towers (OpenCLIP's `set_grad_checkpointing`).
    pub fn set_grad_checkpointing(&self, enable: bool) {
        self.visual.trunk.set_grad_checkpointing(enable);
        self.text.set_grad_checkpointing(enable);
    }

    /// Channels-last activations in the image trunk (faster on GPUs; see `ConvNeXt::set_channels_last`).
    pub fn set_channels_last(&self, enable: bool) {
        self.visual.trunk.set_channels_last(enable);
    }

    /// OpenCLIP's `encode_image(images, normalize=False)`; `train` turns on drop path / dropout.
    pub fn encode_image(&self, images: &Tensor, train: bool) -> Tensor {
        self.visual.forward(images, train)
    }

    /// OpenCLIP's `encode_text(tokens, normalize=False)` (the text tower has no dropout).
    pub fn encode_text(&self, tokens: &Tensor) -> Tensor {
        self.text.forward(tokens)
    }

    /// `(normalize(encode_image), normalize(encode_text), logit_scale.exp())`, the inputs of ClipLoss.
    pub fn forward(
        &self,
        images: &Tensor,
        tokens: &Tensor,
        train: bool,
    ) -> (Tensor, Tensor, Tensor) {
        let img = l2_normalize(&self.encode_image(images, train));
        let txt = l2_normalize(&self.encode_text(tokens));
        (img, txt, self.logit_scale.exp())
    }

    /// Clamps `logit_scale` to [0, ln 100] in place, as OpenCLIP does after every optimizer step.
    pub fn clamp_logit_scale(&self) {
        tch::no_grad(|| {
            let mut s = self.logit_scale.shallow_clone();
            let _ = s.clamp_(0.0, 100f64.ln());
        });
    }
}

/// Checks what `ClipConfig`'s parser checks, for configs built or edited in code.
fn validate(cfg: &ClipConfig) -> Result<()> {
    let t = &cfg.text;
    let v = &cfg.vision.trunk;
    if cfg.embed_dim <= 0 {
        bail!(
            "{}: embed_dim must be positive, found {}",
            cfg.name,
            cfg.embed_dim
        );
    }
    if t.width <= 0 || t.heads <= 0 || t.layers <= 0 || t.context_length <= 0 || t.vocab_size <= 0 {
        bail!(
            "{}: text width, heads, layers, context_length and vocab_size must be positive",
            cfg.name
        );
    }
    if t.width % t.heads != 0 {
        bail!(
            "{}: text width {} is not a multiple of heads {}",
            cfg.name,
            t.width,
            t.heads
        );
    }
    if v.depths.len() != 4 || v.dims.len() != 4 || v.dims.iter().chain(&v.depths).any(|&d| d <= 0) {
        bail!(
            "{}: a ConvNeXt trunk needs 4 positive depths and dims, found {:?} / {:?}",
            cfg.name,
            v.depths,
            v.dims
        );
    }
    if !(0.0..1.0).contains(&v.drop_path_rate) {
        bail!(
            "{}: drop_path_rate must be in [0, 1), found {}",
            cfg.name,
            v.drop_path_rate
        );
    }
    Ok(())
}
