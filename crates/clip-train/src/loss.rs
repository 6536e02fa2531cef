//! OpenCLIP's ClipLoss (`open_clip/loss.py`) with the local-loss layout:
//!
//! ```text
//! logits_per_image = s · I_local · T_allᵀ      [B, B·W]
//! logits_per_text  = s · T_local · I_allᵀ      [B, B·W]
//! labels           = arange(B) + B · rank
//! loss             = (CE(logits_per_image, labels) + CE(logits_per_text, labels)) / 2
//! ```
//!
//! The collective part (all-gather of both feature sets, with gradient, and this process's rank)
//! sits behind [`FeatureGather`]. [`LocalOnly`] is the world of one, where this is exactly OpenCLIP's
//! single-process ClipLoss; a multi-process gather (`--local-loss --gather-with-grad`) implements
//! the trait with an all-gather whose backward is a reduce-scatter of the gradient (sum), and then
//! the gradient equals that of the global-batch loss.

use tch::{Kind, Tensor};

/// The collective operations ClipLoss needs.
pub trait FeatureGather {
    /// Concatenates every rank's `features` along dim 0, in rank order, keeping the gradient path
    /// to the local rows (OpenCLIP's `torch.distributed.nn.all_gather`).
    fn gather(&self, features: &Tensor) -> Tensor;
    /// This process's rank (offsets the labels).
    fn rank(&self) -> i64;
    /// The number of processes.
    fn world_size(&self) -> i64;
}

/// A world of one: gather is the identity, rank 0.
#[derive(Debug, Clone, Copy, Default)]
pub struct LocalOnly;

impl FeatureGather for LocalOnly {
    fn gather(&self, features: &Tensor) -> Tensor {
        features.shallow_clone()
    }
    fn rank(&self) -> i64 {
        0
    }
    fn world_size(&self) -> i64 {
        1
    }
}

/// The logits of both directions, `[B, B·world]` each, as OpenCLIP computes them
/// (`logit_scale * features @ other.T`, scale applied to the left operand first).
pub fn clip_logits(
    image_features: &Tensor,
    text_features: &Tensor,
    logit_scale: &Tensor,
    gather: &dyn FeatureGather,
) -> (Tensor, Tensor) {
    let all_image = gather.gather(image_features);
    let all_text = gather.gather(text_features);
    let per_image = (logit_scale * image_features).matmul(&all_text.tr());
    let per_text = (logit_scale * text_features).matmul(&all_image.tr());
    (per_image, per_text)
}

/// The contrastive loss (a scalar) from L2-normalised features `[B, D]` and `logit_scale.exp()`.
pub fn clip_loss(
    image_features: &Tensor,
    text_features: &Tensor,
    logit_scale: &Tensor,
    gather: &dyn FeatureGather,
) -> Tensor {
    let (per_image, per_text) = clip_logits(image_features, text_features, logit_scale, gather);
    let b = per_image.size()[0];
    let labels = Tensor::arange(b, (Kind::Int64, per_image.device())) + b * gather.rank();
    (cross_entropy(&per_image, &labels) + cross_entropy(&per_text, &labels)) / 2.0
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
        let loss = clip_loss(&img, &txt, &s, &LocalOnly).double_value(&[]);
        let want = direct(&img, &txt, 14.285_714);
        assert!((loss - want).abs() < 1e-12, "{loss} vs {want}");
    }

    #[test]
    fn perfectly_aligned_features_with_a_large_scale_give_a_small_loss() {
        let img = Tensor::eye(4, (Kind::Double, Device::Cpu));
        let loss = clip_loss(&img, &img, &Tensor::from(100.0f64), &LocalOnly).double_value(&[]);
        assert!(loss < 1e-10, "{loss}");
    }

    #[test]
    fn gradients_reach_features_and_scale() {
        tch::manual_seed(4);
        let img = normalized(5, 8).set_requires_grad(true);
        let txt = normalized(5, 8).set_requires_grad(true);
        let ls = Tensor::from(2.659_f64).set_requires_grad(true);
        clip_loss(&img, &txt, &ls.exp(), &LocalOnly).backward();
        for g in [img.grad(), txt.grad(), ls.grad()] {
            assert!(g.defined());
            assert!(g.abs().sum(Kind::Double).double_value(&[]) > 0.0);
        }
    }

    /// A fake two-rank world seen from rank 1, whose other rank holds `other` as both its image
    /// and its text features. The local loss is then the global-batch loss restricted to this
    /// rank's rows.
    struct FakeTwoRanks {
        other: Tensor,
    }

    impl FeatureGather for FakeTwoRanks {
        fn gather(&self, f: &Tensor) -> Tensor {
            Tensor::cat(&[&self.other, f], 0)
        }
        fn rank(&self) -> i64 {
            1
        }
        fn world_size(&self) -> i64 {
            2
        }
    }

    #[test]
    fn labels_are_offset_by_rank() {
        tch::manual_seed(5);
        // Image and text features equal on both ranks.
        let other = normalized(3, 8);
        let local = normalized(3, 8);
        let gather = FakeTwoRanks {
            other: other.copy(),
        };
        let loss = clip_loss(&local, &local, &Tensor::from(10.0f64), &gather).double_value(&[]);
        // Direct: rows of rank 1 against all 6 columns, target column 3 + i.
        let all = Tensor::cat(&[&other, &local], 0);
        let logits = local.matmul(&all.tr()) * 10.0;
        let lsm = logits.log_softmax(1, Kind::Double);
        let mut want = 0.0;
        for i in 0..3 {
            want -= lsm.double_value(&[i, 3 + i]);
        }
        want /= 3.0; // both directions are the same here
        assert!((loss - want).abs() < 1e-12, "{loss} vs {want}");
    }
}
