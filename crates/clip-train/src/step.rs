//! The forward and backward of one optimizer step: the `--accum-freq` micro-batches through the
//! towers, the contrastive loss over all of them (and, through [`FeatureGather`], over every
//! rank's), and the feature gradients back through the towers. Leaves the step's gradient in the
//! parameters' `.grad`; averaging across ranks, clipping and the optimizer come after.
//!
//! With one micro-batch this is one forward with grad. With K > 1 it is OpenCLIP's feature cache
//! (`--accum-freq`): K forwards without grad collect the features, the loss over their
//! concatenation is computed once ([`clip_loss_backward`]), and each micro-batch is forwarded again
//! with grad and back-propagated from its slice of the feature gradient. The towers' gradient is
//! then exactly that of one K× batch — for `logit_scale` too, whose gradient OpenCLIP's loop
//! accumulates K times (once per micro-batch's loss).
//!
//! Both forwards of a micro-batch start from the same RNG seed (`seed_of(j)`), so stochastic depth
//! draws the same masks in the cached and the recomputed pass.
//!
//! The loss is ClipLoss ([`crate::loss`]) or, with `--siglip`, SigLipLoss ([`crate::siglip`]),
//! whose `logit_bias` takes the same path as `logit_scale` (one gradient for the K× batch).

use anyhow::{Context, Result};
use clip_model::Clip;
use tch::{Device, Kind, Tensor};

use crate::loss::{clip_loss_backward, FeatureGather, FeatureGrads, LossLayout};
use crate::siglip::{siglip_loss_backward, SigLipDist};

/// The contrastive loss of the step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LossKind {
    /// OpenCLIP's ClipLoss in `--local-loss` / `--gather-with-grad`'s layout.
    Clip(LossLayout),
    /// `--siglip`: SigLipLoss, its texts moved between ranks as `--loss-dist-impl` says.
    SigLip(SigLipDist),
}

impl Default for LossKind {
    fn default() -> Self {
        LossKind::Clip(LossLayout::default())
    }
}

/// The step's loss over this rank's features (all its micro-batches), back-propagated into
/// `logit_scale` (and `logit_bias`), with the feature gradients for the towers.
fn loss_backward(
    model: &Clip,
    img: &Tensor,
    txt: &Tensor,
    gather: &dyn FeatureGather,
    opts: &StepOptions,
) -> Result<FeatureGrads> {
    let scale = model.logit_scale.exp();
    match opts.loss {
        LossKind::Clip(layout) => {
            clip_loss_backward(img, txt, &scale, gather, layout, opts.loss_scale.as_ref())
        }
        LossKind::SigLip(dist) => {
            let bias = model
                .logit_bias
                .as_ref()
                .context("the SigLIP loss needs a model with logit_bias (init_logit_bias)")?;
            siglip_loss_backward(
                img,
                txt,
                &scale,
                bias,
                gather,
                dist,
                opts.loss_scale.as_ref(),
            )
        }
    }
}

/// How to run the step's forwards.
pub struct StepOptions {
    /// Autocast on this device to this dtype (`--precision amp_bf16`: bf16, `amp`: fp16), or None.
    pub autocast: Option<(Device, Kind)>,
    /// The loss scaler's factor (`--precision amp`, an f32 scalar on the device), else None: the
    /// gradients come out multiplied.
    pub loss_scale: Option<Tensor>,
    /// Train-mode forward (stochastic depth on).
    pub train: bool,
    pub loss: LossKind,
}

/// Forward + backward of one step over `micro` (images, tokens) micro-batches; returns this rank's
/// loss (detached). `seed_of(j)` seeds the RNG before each forward of micro-batch j.
pub fn forward_backward(
    model: &Clip,
    micro: &[(Tensor, Tensor)],
    gather: &dyn FeatureGather,
    opts: &StepOptions,
    seed_of: &dyn Fn(usize) -> i64,
) -> Result<Tensor> {
    let autocast = || -> Result<Option<torch_ext::AutocastGuard>> {
        opts.autocast
            .map(|(d, k)| torch_ext::AutocastGuard::new(d, k))
            .transpose()
    };
    let forward = |j: usize| {
        tch::manual_seed(seed_of(j));
        let (images, tokens) = &micro[j];
        let (img, txt, _) = model.forward(images, tokens, opts.train);
        (img, txt)
    };
    let backward_from = |img: &Tensor, txt: &Tensor, gi: &Tensor, gt: &Tensor| {
        // The vector-Jacobian product of the towers with the given feature gradients.
        ((img * gi).sum(Kind::Float) + (txt * gt).sum(Kind::Float)).backward();
    };
    if micro.len() == 1 {
        let (img, txt, grads) = {
            let _ac = autocast()?;
            let (img, txt) = forward(0);
            let grads = loss_backward(model, &img, &txt, gather, opts)?;
            (img, txt, grads)
        };
        backward_from(&img, &txt, &grads.image, &grads.text);
        return Ok(grads.loss);
    }
    let (mut imgs, mut txts) = (Vec::new(), Vec::new());
    for j in 0..micro.len() {
        let _ac = autocast()?;
        let (img, txt) = tch::no_grad(|| forward(j));
        imgs.push(img);
        txts.push(txt);
    }
    let grads = {
        let _ac = autocast()?;
        let (img, txt) = (Tensor::cat(&imgs, 0), Tensor::cat(&txts, 0));
        loss_backward(model, &img, &txt, gather, opts)?
    };
    drop((imgs, txts));
    let mut row = 0;
    for (j, (images, _)) in micro.iter().enumerate() {
        let b = images.size()[0];
        let (img, txt) = {
            let _ac = autocast()?;
            forward(j)
        };
        backward_from(
            &img,
            &txt,
            &grads.image.narrow(0, row, b),
            &grads.text.narrow(0, row, b),
        );
        row += b;
    }
    Ok(grads.loss)
}
