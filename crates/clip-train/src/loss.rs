//! OpenCLIP's ClipLoss (`open_clip/loss.py`) in its three distributed layouts, and the backward
//! that turns it into per-rank feature gradients.
//!
//! ```text
//! local loss (and a world of one):          global (no --local-loss):
//! logits_per_image = s · I_local · T_allᵀ    logits_per_image = s · I_all · T_allᵀ
//! logits_per_text  = s · T_local · I_allᵀ    logits_per_text  = logits_per_imageᵀ
//! labels = arange(B) + B · rank              labels = arange(B · W)
//! loss = (CE(logits_per_image, labels) + CE(logits_per_text, labels)) / 2
//! ```
//!
//! [`clip_loss_backward`] computes the loss on a *leaf copy* of the gathered features and
//! back-propagates it to them, which yields `∂loss/∂features` for every gathered row. What a rank
//! then back-propagates through its towers is what OpenCLIP's autograd would deliver to its local
//! features: with `--gather-with-grad`, the sum over ranks of every rank's gradient for these rows
//! (a reduce-scatter — the backward of `torch.distributed.nn.all_gather`); without it, only its own
//! loss's gradient for its own rows (OpenCLIP's gather carries no gradient; the local slot is
//! re-inserted with grad). Splitting the loss from the towers this way is also what makes
//! `--accum-freq` cheap: the features of all micro-batches meet in one loss, computed once.
//!
//! With `--gather-with-grad` (with or without `--local-loss`) and the DDP average the gradient is
//! exactly the global-batch gradient; without it, OpenCLIP's (scaled, or partial) gradient, see
//! `docs/scaling.md`.

use anyhow::Result;
use tch::{Kind, Tensor};

/// The collective operations the losses need (this one and [`crate::siglip`]'s), this
/// process's view of the world.
pub trait FeatureGather {
    /// Every rank's `t` concatenated along dim 0 in rank order (no gradient).
    fn all_gather(&self, t: &Tensor) -> Result<Tensor>;
    /// `t` is `[W·n, …]`: the elementwise sum over ranks of the `rank`-th chunk.
    fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor>;
    /// The elementwise sum over ranks of `t`, on every rank.
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor>;
    /// Point to point, as OpenCLIP's `neighbour_exchange`: sends each `(rank, tensor)` of
    /// `sends` and returns what each rank of `from` sent here, in that order (each shaped and
    /// typed like `like`).
    fn exchange(
        &self,
        sends: &[(i64, &Tensor)],
        from: &[i64],
        like: &Tensor,
    ) -> Result<Vec<Tensor>>;
    /// This process's rank (offsets the labels).
    fn rank(&self) -> i64;
    /// The number of processes.
    fn world_size(&self) -> i64;
}

/// A world of one: gather and reduce-scatter are the identity, rank 0, and every message goes
/// to this rank itself.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalOnly;

impl FeatureGather for LocalOnly {
    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.shallow_clone())
    }
    fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.shallow_clone())
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(t.shallow_clone())
    }
    fn exchange(
        &self,
        sends: &[(i64, &Tensor)],
        from: &[i64],
        _like: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let others = sends.iter().any(|(r, _)| *r != 0) || from.iter().any(|&r| r != 0);
        if others || sends.len() != from.len() {
            anyhow::bail!("a world of one has only rank 0, which receives exactly what it sends");
        }
        Ok(sends.iter().map(|(_, t)| t.copy()).collect())
    }
    fn rank(&self) -> i64 {
        0
    }
    fn world_size(&self) -> i64 {
        1
    }
}

/// `--local-loss` and `--gather-with-grad`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LossLayout {
    pub local_loss: bool,
    pub gather_with_grad: bool,
}

/// The contrastive loss (a scalar) of this rank, given its rows of L2-normalised features
/// (`img`, `txt`, `[B, D]`, rows `rank·B…` of the gathered `all_img`, `all_txt`, `[B·W, D]`) and
/// `logit_scale.exp()`.
pub fn clip_loss(
    img: &Tensor,
    txt: &Tensor,
    all_img: &Tensor,
    all_txt: &Tensor,
    logit_scale: &Tensor,
    rank: i64,
    local_loss: bool,
) -> Tensor {
    let world = all_img.size()[0] / img.size()[0].max(1);
    let (per_image, per_text, labels) = if local_loss || world == 1 {
        let b = img.size()[0];
        let per_image = (logit_scale * img).matmul(&all_txt.tr());
        let per_text = (logit_scale * txt).matmul(&all_img.tr());
        let labels = Tensor::arange(b, (Kind::Int64, img.device())) + b * rank;
        (per_image, per_text, labels)
    } else {
        let per_image = (logit_scale * all_img).matmul(&all_txt.tr());
        let per_text = per_image.tr();
        let labels = Tensor::arange(all_img.size()[0], (Kind::Int64, img.device()));
        (per_image, per_text, labels)
    };
    (cross_entropy(&per_image, &labels) + cross_entropy(&per_text, &labels)) / 2.0
}

/// [`clip_loss`] for a world of one.
pub fn clip_loss_local(img: &Tensor, txt: &Tensor, logit_scale: &Tensor) -> Tensor {
    clip_loss(img, txt, img, txt, logit_scale, 0, true)
}

/// What [`clip_loss_backward`] returns.
pub struct FeatureGrads {
    /// This rank's loss (detached).
    pub loss: Tensor,
    /// The gradient to back-propagate from this rank's image features, `[B, D]`.
    pub image: Tensor,
    /// The same for its text features.
    pub text: Tensor,
}

/// Gathers `img`/`txt` (this rank's features; their autograd history is not used), computes this
/// rank's loss, back-propagates it times `loss_scale` (fp16's loss scaler; 1 otherwise) into
/// `logit_scale`'s parameter (accumulating its `.grad`) and returns the feature gradients the
/// towers must back-propagate (see the module docs), scaled alike.
pub fn clip_loss_backward(
    img: &Tensor,
    txt: &Tensor,
    logit_scale: &Tensor,
    gather: &dyn FeatureGather,
    layout: LossLayout,
    loss_scale: Option<&Tensor>,
) -> Result<FeatureGrads> {
    let (rank, world) = (gather.rank(), gather.world_size());
    let b = img.size()[0];
    let all_img = gather
        .all_gather(&img.detach())?
        .detach()
        .set_requires_grad(true);
    let all_txt = gather
        .all_gather(&txt.detach())?
        .detach()
        .set_requires_grad(true);
    let (li, lt) = (
        all_img.narrow(0, rank * b, b),
        all_txt.narrow(0, rank * b, b),
    );
    let loss = clip_loss(
        &li,
        &lt,
        &all_img,
        &all_txt,
        logit_scale,
        rank,
        layout.local_loss,
    );
    match loss_scale {
        None => loss.backward(),
        Some(s) => (&loss * s).backward(),
    }
    let (gi, gt) = (all_img.grad(), all_txt.grad());
    let (image, text) = if layout.gather_with_grad && world > 1 {
        (
            gather.reduce_scatter_sum(&gi)?,
            gather.reduce_scatter_sum(&gt)?,
        )
    } else {
        (gi.narrow(0, rank * b, b), gt.narrow(0, rank * b, b))
    };
    Ok(FeatureGrads {
        loss: loss.detach(),
        image,
        text,
    })
}

/// `F.cross_entropy(logits, labels)` (mean over rows), in the logits' own dtype.
fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Tensor {
    logits.cross_entropy_loss::<Tensor>(labels, None, tch::Reduction::Mean, -100, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    fn normalized(n: i64, d: i64) -> Tensor {
        let x = Tensor::randn([n, d], (Kind::Double, Device::Cpu));
        &x / x.norm_scalaropt_dim(2, [-1], true)
    }

    /// The formula written out: -mean_i log softmax(s·I·Tᵀ)_ii, both directions, halved.
    fn direct(img: &Tensor, txt: &Tensor, s: f64) -> f64 {
        let n = img.size()[0];
        let logits = img.matmul(&txt.tr()) * s;
        let mut total = 0.0;
        for (l, dim) in [(&logits, 1), (&logits, 0)] {
            let lsm = l.log_softmax(dim, Kind::Double);
            let diag = lsm.diagonal(0, 0, 1).sum(Kind::Double).double_value(&[]);
            total += -diag / n as f64;
        }
        total / 2.0
    }

    #[test]
    fn world_of_one_matches_the_direct_formula() {
        tch::manual_seed(3);
        let img = normalized(6, 16);
        let txt = normalized(6, 16);
        let s = Tensor::from(14.285_714_f64);
        let loss = clip_loss_local(&img, &txt, &s).double_value(&[]);
        let want = direct(&img, &txt, 14.285_714);
        assert!((loss - want).abs() < 1e-12, "{loss} vs {want}");
    }

    #[test]
    fn perfectly_aligned_features_with_a_large_scale_give_a_small_loss() {
        let img = Tensor::eye(4, (Kind::Double, Device::Cpu));
        let loss = clip_loss_local(&img, &img, &Tensor::from(100.0f64)).double_value(&[]);
        assert!(loss < 1e-10, "{loss}");
    }

    /// In a world of one the feature gradients equal plain autograd through the loss.
    #[test]
    fn feature_gradients_equal_autograd() {
        tch::manual_seed(4);
        let img = normalized(5, 8).set_requires_grad(true);
        let txt = normalized(5, 8).set_requires_grad(true);
        let ls = Tensor::from(2.659_f64).set_requires_grad(true);
        clip_loss_local(&img, &txt, &ls.exp()).backward();
        let ls2 = Tensor::from(2.659_f64).set_requires_grad(true);
        let g = clip_loss_backward(
            &img,
            &txt,
            &ls2.exp(),
            &LocalOnly,
            LossLayout::default(),
            None,
        )
        .unwrap();
        for (got, want) in [
            (&g.image, img.grad()),
            (&g.text, txt.grad()),
            (&ls2.grad(), ls.grad()),
        ] {
            assert!(want.abs().sum(Kind::Double).double_value(&[]) > 0.0);
            let err = (got - &want).abs().max().double_value(&[]);
            assert!(err < 1e-14, "{err}");
        }
    }

    #[test]
    fn labels_are_offset_by_rank() {
        tch::manual_seed(5);
        // Image and text features equal on both ranks; this is rank 1.
        let other = normalized(3, 8);
        let local = normalized(3, 8);
        let all = Tensor::cat(&[&other, &local], 0);
        let loss = clip_loss(&local, &local, &all, &all, &Tensor::from(10.0f64), 1, true)
            .double_value(&[]);
        // Direct: rows of rank 1 against all 6 columns, target column 3 + i.
        let logits = local.matmul(&all.tr()) * 10.0;
        let lsm = logits.log_softmax(1, Kind::Double);
        let mut want = 0.0;
        for i in 0..3 {
            want -= lsm.double_value(&[i, 3 + i]);
        }
        want /= 3.0; // both directions are the same here
        assert!((loss - want).abs() < 1e-12, "{loss} vs {want}");
    }

    /// Without --local-loss every rank computes the global-batch loss.
    #[test]
    fn global_layout_is_the_whole_batch_loss() {
        tch::manual_seed(6);
        let (img, txt) = (normalized(6, 8), normalized(6, 8));
        let s = Tensor::from(7.0f64);
        let whole = clip_loss_local(&img, &txt, &s).double_value(&[]);
        for rank in 0..2 {
            let (li, lt) = (img.narrow(0, 3 * rank, 3), txt.narrow(0, 3 * rank, 3));
            let got = clip_loss(&li, &lt, &img, &txt, &s, rank, false).double_value(&[]);
            assert!((got - whole).abs() < 1e-12, "rank {rank}: {got} vs {whole}");
        }
    }
}
