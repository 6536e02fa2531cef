//! OpenCLIP's TimmModel (`open_clip/timm_model.py`) around a timm ConvNeXt or ViT trunk:
//! `visual.trunk` plus the projection head `visual.head`.
//!
//! With `timm_proj` "linear" or "mlp" OpenCLIP creates the trunk with timm's defaults and then
//! `reset_classifier(0)`, keeping the pooling when `timm_pool` is "" (ConvNeXt's default is global
//! average pooling): the trunk returns its pooled features and `visual.head` projects them.
//! With "none" the trunk is built with `num_classes=0`; with ""/null its own classifier
//! (`visual.trunk.head.fc` in a ConvNeXt, `visual.trunk.head` in a ViT) is the projection.

use tch::{nn, Tensor};

use crate::config::{TimmProj, TimmTrunk, TimmVisionConfig};
use crate::convnext::ConvNeXt;
use crate::layers::{Init, ParamRecorder};
use crate::timm_vit::TimmVit;
use crate::units::BlockHooks;

/// The timm model under `visual.trunk`.
pub enum Trunk {
    ConvNext(ConvNeXt),
    Vit(Box<TimmVit>),
}

impl Trunk {
    /// Its residual blocks (a ConvNeXt's numbered across stages).
    pub(crate) fn blocks(&self) -> usize {
        match self {
            Trunk::ConvNext(c) => c.blocks(),
            Trunk::Vit(v) => v.blocks(),
        }
    }

    pub(crate) fn hooks(&self) -> &BlockHooks {
        match self {
            Trunk::ConvNext(c) => &c.hooks,
            Trunk::Vit(v) => &v.hooks,
        }
    }

    pub fn set_grad_checkpointing(&self, enable: bool) {
        match self {
            Trunk::ConvNext(c) => c.set_grad_checkpointing(enable),
            Trunk::Vit(v) => v.set_grad_checkpointing(enable),
        }
    }

    pub fn output_dim(&self) -> i64 {
        match self {
            Trunk::ConvNext(c) => c.output_dim(),
            Trunk::Vit(v) => v.output_dim(),
        }
    }

    fn forward(&self, images: &Tensor, train: bool) -> Tensor {
        match self {
            Trunk::ConvNext(c) => c.forward(images, train),
            Trunk::Vit(v) => v.forward(images, train),
        }
    }
}

enum Head {
    /// `head.proj`: Dropout → Linear (bias optional).
    Linear {
        w: Tensor,
        b: Option<Tensor>,
    },
    /// `head.mlp`: timm Mlp: fc1 → GELU → Dropout → fc2.
    Mlp {
        fc1_w: Tensor,
        fc1_b: Tensor,
        fc2_w: Tensor,
        fc2_b: Option<Tensor>,
    },
    None,
}

pub struct TimmModel {
    pub trunk: Trunk,
    head: Head,
    drop: f64,
}

impl TimmModel {
    /// Builds `p/trunk` and `p/head` (OpenCLIP: `p` = `visual`). Head layers keep PyTorch's
    /// nn.Linear default init (U(±1/√fan_in) for weight and bias), as OpenCLIP leaves them.
    pub fn new(p: &nn::Path, r: &ParamRecorder, cfg: &TimmVisionConfig, embed_dim: i64) -> Self {
        let tp = p / "trunk";
        let trunk = match &cfg.trunk {
            TimmTrunk::ConvNext(c) => {
                let mut c = c.clone();
                if cfg.timm_proj == TimmProj::TrunkFc {
                    c.num_classes = embed_dim;
                }
                Trunk::ConvNext(ConvNeXt::new(&tp, r, &c))
            }
            TimmTrunk::Vit(v) => Trunk::Vit(Box::new(TimmVit::new(&tp, r, v))),
        };
        let nf = cfg.trunk_features();
        let hp = p / "head";
        let bound = |fan_in: i64| Init::Uniform(1.0 / (fan_in as f64).sqrt());
        let head = match cfg.timm_proj {
            TimmProj::Linear => {
                let proj = &hp / "proj";
                let w = r.param(&proj, "weight", &[embed_dim, nf], bound(nf));
                let b = cfg
                    .timm_proj_bias
                    .then(|| r.param(&proj, "bias", &[embed_dim], bound(nf)));
                Head::Linear { w, b }
            }
            TimmProj::Mlp => {
                let hidden = 2 * embed_dim;
                let mlp = &hp / "mlp";
                let (fc1, fc2) = (&mlp / "fc1", &mlp / "fc2");
                let fc1_w = r.param(&fc1, "weight", &[hidden, nf], bound(nf));
                let fc1_b = r.param(&fc1, "bias", &[hidden], bound(nf));
                let fc2_w = r.param(&fc2, "weight", &[embed_dim, hidden], bound(hidden));
                let fc2_b = cfg
                    .timm_proj_bias
                    .then(|| r.param(&fc2, "bias", &[embed_dim], bound(hidden)));
                Head::Mlp {
                    fc1_w,
                    fc1_b,
                    fc2_w,
                    fc2_b,
                }
            }
            TimmProj::None | TimmProj::TrunkFc => Head::None,
        };
        Self {
            trunk,
            head,
            drop: cfg.timm_drop,
        }
    }

    pub fn output_dim(&self) -> i64 {
        match &self.head {
            Head::Linear { w, .. } => w.size()[0],
            Head::Mlp { fc2_w, .. } => fc2_w.size()[0],
            Head::None => self.trunk.output_dim(),
        }
    }

    /// Image features (not normalised). `train`: drop path in the trunk, dropout in the head.
    pub fn forward(&self, images: &Tensor, train: bool) -> Tensor {
        let x = self.trunk.forward(images, train);
        match &self.head {
            Head::Linear { w, b } => dropout(&x, self.drop, train).linear(w, b.as_ref()),
            Head::Mlp {
                fc1_w,
                fc1_b,
                fc2_w,
                fc2_b,
            } => {
                let h = x.linear(fc1_w, Some(fc1_b)).gelu("none");
                dropout(&h, self.drop, train).linear(fc2_w, fc2_b.as_ref())
            }
            Head::None => x,
        }
    }
}

fn dropout(x: &Tensor, p: f64, train: bool) -> Tensor {
    if train && p > 0.0 {
        x.dropout(p, true)
    } else {
        x.shallow_clone()
    }
}
