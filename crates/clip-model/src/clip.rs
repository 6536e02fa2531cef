//! OpenCLIP's `CLIP` and `CustomTextCLIP` (`open_clip/model.py`) with a timm (ConvNeXt or ViT)
//! or an OpenCLIP ViT image tower.

use anyhow::{bail, Result};
use tch::{nn, Kind, Tensor};

use crate::config::{ClipConfig, TimmTrunk, VisionTower};
use crate::layers::{l2_normalize, Init, ParamRecorder};
use crate::timm_model::{TimmModel, Trunk};
use crate::transformer::TextTransformer;
use crate::units::{run_root, unit_of, Hooks, Unit};
use crate::vit::VisionTransformer;

/// The image tower `visual`.
pub enum Visual {
    Timm(TimmModel),
    Vit(VisionTransformer),
}

/// One of the two towers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tower {
    Image,
    Text,
}

/// A tower's parameters by layer group (see [`Clip::layer_groups`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LayerGroups {
    /// The number of groups; the last is the head.
    pub count: usize,
    /// `(state-dict key, group)` for each of the tower's parameters.
    pub groups: Vec<(String, usize)>,
}

impl LayerGroups {
    /// The group of parameter `key` (None: not in this tower).
    pub fn of(&self, key: &str) -> Option<usize> {
        self.groups.iter().find(|(k, _)| k == key).map(|(_, g)| *g)
    }
}

/// `ln(1/0.07)`, OpenCLIP's initial logit scale.
pub const INIT_LOGIT_SCALE: f64 = 2.659_260_036_932_778_4;

pub struct Clip {
    pub visual: Visual,
    pub text: TextTransformer,
    /// The scalar parameter `logit_scale` (its exp multiplies the logits).
    pub logit_scale: Tensor,
    /// SigLIP's scalar `logit_bias` (added to the logits), when the config's `init_logit_bias`
    /// is set.
    pub logit_bias: Option<Tensor>,
    params: Vec<(String, Tensor)>,
    cfg: ClipConfig,
    /// The unit hooks of the towers' roots (`set_unit_hooks`).
    hooks: std::cell::RefCell<Option<Hooks>>,
}

/// Where a state-dict key sits in OpenCLIP's `state_dict()` (sorted by this, stably: within a
/// rank the creation order holds). `CLIP`: its own parameters (`positional_embedding`,
/// `text_projection`, `logit_scale`, `logit_bias`) first, then its children in registration order
/// (`visual`, `transformer`, `token_embedding`, `ln_final`, an nn.Linear `text_projection`).
/// `CustomTextCLIP`: `logit_scale`, `logit_bias`, `visual`, then `text`, a TextTransformer in its
/// own order: `positional_embedding`, `text_projection`, then `token_embedding`, `transformer`,
/// `ln_final`, an nn.Linear `text_projection`.
fn state_dict_rank(name: &str, custom_text: bool) -> (usize, usize) {
    let first = |k: &str| k.split('.').next().unwrap_or("").to_string();
    if custom_text {
        return match name.strip_prefix("text.") {
            Some("text_projection") => (3, 1),
            Some(k) => match first(k).as_str() {
                "positional_embedding" => (3, 0),
                "token_embedding" => (3, 2),
                "transformer" => (3, 3),
                "ln_final" => (3, 4),
                _ => (3, 5),
            },
            None => match name {
                "logit_scale" => (0, 0),
                "logit_bias" => (1, 0),
                _ => (2, 0),
            },
        };
    }
    let rank = match (name, first(name).as_str()) {
        (_, "positional_embedding") => 0,
        ("text_projection", _) => 1,
        ("logit_scale", _) => 2,
        ("logit_bias", _) => 3,
        (_, "visual") => 4,
        (_, "transformer") => 5,
        (_, "token_embedding") => 6,
        (_, "ln_final") => 7,
        _ => 8,
    };
    (rank, 0)
}

/// The text tower's own name for the model's key `k` (CustomTextCLIP's `text.` taken off); None
/// for a key outside the text tower.
fn text_key(k: &str, custom_text: bool) -> Option<&str> {
    if custom_text {
        k.strip_prefix("text.")
    } else if k.starts_with("visual.") || k == "logit_scale" || k == "logit_bias" {
        None
    } else {
        Some(k)
    }
}

impl Clip {
    /// Builds the model's variables under `path` (normally a VarStore's root, so that variable
    /// names are OpenCLIP's state-dict keys), freshly initialised as OpenCLIP initialises them.
    pub fn new(path: &nn::Path, cfg: &ClipConfig) -> Result<Clip> {
        Self::build(path, cfg, ParamRecorder::new())
    }

    /// [`Clip::new`] with the variables allocated but not initialised: for a model whose every
    /// weight is loaded next (a checkpoint, a golden), or whose values are never read (shapes and
    /// keys alone) — what OpenCLIP does building on the meta device.
    pub fn new_uninitialised(path: &nn::Path, cfg: &ClipConfig) -> Result<Clip> {
        Self::build(path, cfg, ParamRecorder::uninitialised())
    }

    fn build(path: &nn::Path, cfg: &ClipConfig, r: ParamRecorder) -> Result<Clip> {
        validate(cfg)?;
        let vp = path / "visual";
        let visual = match &cfg.vision.tower {
            VisionTower::Timm(t) => Visual::Timm(TimmModel::new(&vp, &r, t, cfg.embed_dim)),
            VisionTower::Vit(v) => Visual::Vit(VisionTransformer::new(
                &vp,
                &r,
                v,
                cfg.vision.image_size,
                cfg.embed_dim,
                cfg.quick_gelu,
            )),
        };
        let text_root = if cfg.custom_text {
            path / "text"
        } else {
            path.clone()
        };
        let text = TextTransformer::new(&text_root, &r, &cfg.text, cfg.embed_dim, cfg.quick_gelu);
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
        params.sort_by_key(|(n, _)| state_dict_rank(&n[prefix_len..], cfg.custom_text));
        Ok(Clip {
            visual,
            text,
            logit_scale,
            logit_bias,
            params,
            cfg: cfg.clone(),
            hooks: Default::default(),
        })
    }

    /// The image tower's blocks (units 1..=n).
    fn visual_blocks(&self) -> usize {
        match &self.visual {
            Visual::Timm(t) => t.trunk.blocks(),
            Visual::Vit(v) => v.blocks(),
        }
    }

    /// The text tower's root unit (its blocks follow it).
    fn text_root(&self) -> usize {
        1 + self.visual_blocks()
    }

    /// The model's units in forward order (see [`crate::units`]): unit `i` is `units()[i]`.
    /// `logit_scale` and `logit_bias` are in none.
    pub fn units(&self) -> Vec<Unit> {
        let depths = match &self.cfg.vision.tower {
            VisionTower::Timm(t) => match &t.trunk {
                TimmTrunk::ConvNext(c) => c.depths.clone(),
                TimmTrunk::Vit(_) => vec![],
            },
            VisionTower::Vit(_) => vec![],
        };
        let (nv, nt) = (self.visual_blocks(), self.text.blocks());
        let mut units: Vec<Unit> = (0..2 + nv + nt)
            .map(|i| Unit {
                name: match i {
                    0 => "visual".to_string(),
                    i if i <= nv => format!("visual block {}", i - 1),
                    i if i == nv + 1 => "text".to_string(),
                    i => format!("text block {}", i - nv - 2),
                },
                params: vec![],
            })
            .collect();
        for (k, t) in &self.params {
            let id = match unit_of(k, &depths) {
                None => continue,
                Some((0, None)) => 0,
                Some((0, Some(b))) => 1 + b,
                Some((_, None)) => nv + 1,
                Some((_, Some(b))) => nv + 2 + b,
            };
            units[id].params.push((k.clone(), t.shallow_clone()));
        }
        units
    }

    /// Installs (or, `None`, removes) the hooks called around every unit's forward.
    pub fn set_unit_hooks(&self, hooks: Option<Hooks>) {
        let blocks = |first: usize| hooks.as_ref().map(|h| (h.clone(), first));
        match &self.visual {
            Visual::Timm(t) => t.trunk.hooks().set(blocks(1)),
            Visual::Vit(v) => v.hooks.set(blocks(1)),
        }
        self.text.hooks.set(blocks(self.text_root() + 1));
        *self.hooks.borrow_mut() = hooks;
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

    /// OpenCLIP's `lock_image_tower(unlocked_groups)` (LiT): the image tower's parameters stop
    /// requiring gradients except those of its last `unlocked_groups` groups. A timm tower locks
    /// only its trunk (the projection head stays trainable), grouped as timm's `group_matcher`
    /// does; a ViT locks everything, grouped as OpenCLIP's `VisionTransformer.lock`.
    pub fn lock_image_tower(&self, unlocked_groups: usize) {
        let groups: Vec<(String, usize)> = match &self.cfg.vision.tower {
            VisionTower::Timm(_) => timm_trunk_groups(&self.params),
            VisionTower::Vit(v) => self
                .params
                .iter()
                .filter_map(|(k, _)| vit_group(k, v.layers as usize).map(|g| (k.clone(), g)))
                .collect(),
        };
        let count = groups.iter().map(|(_, g)| g + 1).max().unwrap_or(0);
        let first_unlocked = count.saturating_sub(unlocked_groups);
        self.freeze(|k| groups.iter().any(|(n, g)| n == k && *g < first_unlocked));
    }

    /// OpenCLIP's `lock_text_tower(unlocked_layers)` (CustomTextCLIP's calls its text tower's
    /// `lock`, the same function on the same groups): the text tower's parameters stop requiring
    /// gradients except the last `unlocked_layers` of its groups, which are, in order: the
    /// embeddings, each residual block but the last, the last block with `ln_final`, and
    /// `text_projection` (both tensors of an nn.Linear one).
    pub fn lock_text_tower(&self, unlocked_layers: usize) {
        let groups = self.layer_groups(Tower::Text);
        let first_unlocked = groups.count.saturating_sub(unlocked_layers);
        self.freeze(|k| groups.of(k).is_some_and(|g| g < first_unlocked));
    }

    /// A tower's parameters in OpenCLIP's ordered layer groups (the development branch's
    /// `layer_groups()`, which layer-wise learning-rate decay reads; its last group is the head).
    /// Image, ViT: the embeddings (`conv1`, `class_embedding`, `positional_embedding`,
    /// `ln_pre`), each block (the last with `ln_post`), `proj`. Image, timm: the trunk's groups as
    /// timm's `group_matcher` makes them (stem; each block, a stage's downsample with its block 0;
    /// the trunk's head), then the projection head `visual.head` when it has parameters. Text:
    /// the embeddings (`token_embedding`, `positional_embedding`), each block (the last with
    /// `ln_final`), `text_projection`.
    pub fn layer_groups(&self, tower: Tower) -> LayerGroups {
        let groups: Vec<(String, usize)> = match (tower, &self.cfg.vision.tower) {
            (Tower::Image, VisionTower::Timm(_)) => {
                let mut g = timm_trunk_groups(&self.params);
                let head = g.iter().map(|(_, i)| i + 1).max().unwrap_or(0);
                g.extend(
                    self.params
                        .iter()
                        .filter(|(k, _)| k.starts_with("visual.head."))
                        .map(|(k, _)| (k.clone(), head)),
                );
                g
            }
            (Tower::Image, VisionTower::Vit(v)) => self
                .params
                .iter()
                .filter_map(|(k, _)| vit_group(k, v.layers as usize).map(|g| (k.clone(), g)))
                .collect(),
            (Tower::Text, _) => self
                .params
                .iter()
                .filter_map(|(k, _)| {
                    let t = text_key(k, self.cfg.custom_text)?;
                    text_group(t, self.cfg.text.layers as usize).map(|g| (k.clone(), g))
                })
                .collect(),
        };
        LayerGroups {
            count: groups.iter().map(|(_, g)| g + 1).max().unwrap_or(0),
            groups,
        }
    }

    /// OpenCLIP's `CLIP.no_weight_decay()` (`CustomTextCLIP`'s: the text tower's under `text.`):
    /// the names timm's optimizers (and the development branch's weight-decay rule) exempt from
    /// decay beyond the 1-D ones — the positional embeddings and a ViT's class embedding.
    pub fn no_weight_decay(&self) -> Vec<String> {
        let text = if self.cfg.custom_text { "text." } else { "" };
        let mut out = vec![format!("{text}positional_embedding")];
        if let Visual::Vit(_) = self.visual {
            out.extend(["visual.positional_embedding", "visual.class_embedding"].map(String::from));
        }
        out
    }

    /// OpenCLIP's low-precision models (`create_model(precision=…)`): every parameter becomes
    /// bf16 in place (`pure_bf16`); with `mixed` (`bf16`), a timm-tower model becomes bf16 but
    /// for the text tower's LayerNorms, which OpenCLIP builds as `LayerNormFp32` and casts back to
    /// fp32, and a ViT model converts only what `convert_weights_to_lp` does (convolutions,
    /// linear layers — an nn.Linear `text_projection` too —, attention projections, a matrix
    /// `text_projection`, `visual.proj`). (OpenCLIP 3.3.0's `convert_weights_to_lp` converts an
    /// nn.Linear `text_projection` and then fails on it: clip-train refuses `bf16` there.)
    pub fn to_bf16(&self, mixed: bool) {
        let custom = self.cfg.custom_text;
        let text_norm = |k: &str| {
            text_key(k, custom).is_some_and(|t| {
                t.starts_with("ln_final.")
                    || (t.starts_with("transformer.resblocks.")
                        && (t.contains(".ln_1.") || t.contains(".ln_2.")))
            })
        };
        let lp_converted = |k: &str| {
            [".in_proj_weight", ".in_proj_bias"]
                .iter()
                .any(|s| k.ends_with(s))
                || [".out_proj.", ".mlp.c_fc.", ".mlp.c_proj."]
                    .iter()
                    .any(|s| k.contains(s))
                || ["visual.proj", "visual.conv1.weight"].contains(&k)
                || text_key(k, custom)
                    .is_some_and(|t| t.split('.').next() == Some("text_projection"))
        };
        let vit = matches!(self.visual, Visual::Vit(_));
        let keep_fp32 = |k: &str| mixed && if vit { !lp_converted(k) } else { text_norm(k) };
        tch::no_grad(|| {
            for (k, t) in &self.params {
                let kind = if keep_fp32(k) {
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
        match &self.visual {
            Visual::Timm(t) => t.trunk.set_grad_checkpointing(enable),
            Visual::Vit(v) => v.set_grad_checkpointing(enable),
        }
        self.text.set_grad_checkpointing(enable);
    }

    /// Channels-last activations in a ConvNeXt trunk (faster on GPUs; see
    /// `ConvNeXt::set_channels_last`); a ViT's activations are tokens, not feature maps.
    pub fn set_channels_last(&self, enable: bool) {
        if let Visual::Timm(TimmModel {
            trunk: Trunk::ConvNext(c),
            ..
        }) = &self.visual
        {
            c.set_channels_last(enable);
        }
    }

    /// OpenCLIP's `encode_image(images, normalize=False)`; `train` turns on drop path / dropout /
    /// patch dropout.
    pub fn encode_image(&self, images: &Tensor, train: bool) -> Tensor {
        let hooks = self.hooks.borrow().clone();
        run_root(hooks.as_ref(), 0, || match &self.visual {
            Visual::Timm(t) => t.forward(images, train),
            Visual::Vit(v) => v.forward(images, train),
        })
    }

    /// OpenCLIP's `encode_text(tokens, normalize=False)` (the text tower has no dropout).
    pub fn encode_text(&self, tokens: &Tensor) -> Tensor {
        let hooks = self.hooks.borrow().clone();
        run_root(hooks.as_ref(), self.text_root(), || {
            self.text.forward(tokens)
        })
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

/// timm's `group_parameters(trunk, trunk.group_matcher())`. ConvNeXt: the stem; each block (a
/// stage's downsample joins its block 0); everything unmatched (the trunk's head) last.
/// VisionTransformer: the embeddings (`cls_token`, `reg_token`, `pos_embed`, `patch_embed`,
/// `norm_pre`); each block; `norm`; everything unmatched (`attn_pool`, `fc_norm`, `head`) last.
/// `(key, group)` for every `visual.trunk.` parameter.
fn timm_trunk_groups(params: &[(String, Tensor)]) -> Vec<(String, usize)> {
    let ordinal = |k: &str| -> (u64, u64, u64) {
        let parts: Vec<&str> = k.split('.').collect();
        match parts.as_slice() {
            ["stem", ..] => (0, 0, 0),
            ["cls_token" | "reg_token" | "pos_embed" | "patch_embed" | "norm_pre", ..] => (0, 0, 0),
            ["stages", n, "downsample", ..] => (1, n.parse().unwrap_or(0), 0),
            ["stages", n, "blocks", m, ..] => (1, n.parse().unwrap_or(0), m.parse().unwrap_or(0)),
            ["blocks", n, ..] => (1, n.parse().unwrap_or(0), 0),
            // timm's `(r'^norm', (99999,))`: after every block.
            ["norm", ..] => (1, 99_999, 0),
            _ => (u64::MAX, 0, 0),
        }
    };
    let trunk: Vec<(&String, (u64, u64, u64))> = params
        .iter()
        .filter_map(|(k, _)| Some((k, ordinal(k.strip_prefix("visual.trunk.")?))))
        .collect();
    let mut keys: Vec<(u64, u64, u64)> = trunk.iter().map(|(_, o)| *o).collect();
    keys.sort_unstable();
    keys.dedup();
    trunk
        .into_iter()
        .map(|(k, o)| (k.clone(), keys.binary_search(&o).unwrap()))
        .collect()
}

/// OpenCLIP's `VisionTransformer.lock` groups: the embeddings (`conv1`, `class_embedding`,
/// `positional_embedding`, `ln_pre`), each block but the last, the last block with `ln_post`,
/// `proj`.
fn vit_group(k: &str, layers: usize) -> Option<usize> {
    let k = k.strip_prefix("visual.")?;
    if let Some(rest) = k.strip_prefix("transformer.resblocks.") {
        let i: usize = rest.split('.').next()?.parse().ok()?;
        return Some(1 + i.min(layers - 1));
    }
    match k.split('.').next()? {
        "conv1" | "class_embedding" | "positional_embedding" | "ln_pre" => Some(0),
        "ln_post" => Some(layers),
        "proj" => Some(layers + 1),
        _ => None,
    }
}

/// The text tower's groups (OpenCLIP's `lock_text_tower` and the development branch's
/// `_text_layer_groups`): the embeddings, each block, `ln_final` with the last, `text_projection`.
/// `k`: the tower's own key (see [`text_key`]).
fn text_group(k: &str, layers: usize) -> Option<usize> {
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
    (k.split('.').next() == Some("text_projection")).then_some(layers + 1)
}

/// Checks what `ClipConfig`'s parser checks, for configs built or edited in code.
fn validate(cfg: &ClipConfig) -> Result<()> {
    let t = &cfg.text;
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
    if let Some(section) = cfg.act_kwargs_with_quick_gelu() {
        bail!(
            "{}: {section}.act_kwargs with quick_gelu: OpenCLIP's QuickGELU takes no arguments",
            cfg.name
        );
    }
    match &cfg.vision.tower {
        VisionTower::Timm(timm) => match &timm.trunk {
            TimmTrunk::ConvNext(c) => validate_convnext(&cfg.name, c),
            TimmTrunk::Vit(v) => validate_timm_vit(&cfg.name, v),
        },
        VisionTower::Vit(v) => validate_vit(&cfg.name, v, cfg.vision.image_size),
    }
}

fn validate_convnext(name: &str, v: &crate::convnext::ConvNextConfig) -> Result<()> {
    if v.depths.len() != 4 || v.dims.len() != 4 || v.dims.iter().chain(&v.depths).any(|&d| d <= 0) {
        bail!(
            "{name}: a ConvNeXt trunk needs 4 positive depths and dims, found {:?} / {:?}",
            v.depths,
            v.dims
        );
    }
    if !(0.0..1.0).contains(&v.drop_path_rate) {
        bail!(
            "{name}: drop_path_rate must be in [0, 1), found {}",
            v.drop_path_rate
        );
    }
    Ok(())
}

fn validate_timm_vit(name: &str, v: &crate::timm_vit::TimmVitConfig) -> Result<()> {
    let (gh, gw) = v.grid_size();
    if gh <= 0 || gw <= 0 {
        bail!(
            "{name}: image size {:?} is smaller than one {:?}-pixel patch",
            v.img_size,
            v.patch_size
        );
    }
    if !(0.0..1.0).contains(&v.drop_path_rate) {
        bail!(
            "{name}: drop_path_rate must be in [0, 1), found {}",
            v.drop_path_rate
        );
    }
    Ok(())
}

fn validate_vit(name: &str, v: &crate::config::VitConfig, image_size: (i64, i64)) -> Result<()> {
    if v.width <= 0 || v.heads <= 0 || v.layers <= 0 || v.patch_size <= 0 || v.mlp_width() <= 0 {
        bail!("{name}: ViT width, heads, layers, patch_size and mlp width must be positive");
    }
    if v.width % v.heads != 0 {
        bail!(
            "{name}: ViT width {} is not a multiple of heads {}",
            v.width,
            v.heads
        );
    }
    let (gh, gw) = v.grid_size(image_size);
    if gh <= 0 || gw <= 0 {
        bail!(
            "{name}: image size {image_size:?} is smaller than one {}-pixel patch",
            v.patch_size
        );
    }
    if !(0.0..1.0).contains(&v.patch_dropout) {
        bail!(
            "{name}: patch_dropout must be in [0, 1), found {}",
            v.patch_dropout
        );
    }
    Ok(())
}
