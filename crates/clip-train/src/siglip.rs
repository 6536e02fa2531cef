//! OpenCLIP's SigLipLoss (`open_clip/loss.py`, `--siglip`): the sigmoid loss of SigLIP (Zhai et
//! al. 2023) over every image–text pair of the global batch, in each distributed implementation
//! OpenCLIP offers (`--loss-dist-impl`), and the backward that turns it into per-rank feature
//! gradients, as [`crate::loss`] does for ClipLoss.
//!
//! ```text
//! block(I, T, y) = −Σ_ij log σ(y_ij · (s · I_i·T_jᵀ + b)) / B      s = exp(logit_scale), b = logit_bias
//! loss_r = block(I_r, T_r, 2·eye − 1) + Σ_{q ≠ r} block(I_r, T_q, −1)     B = this rank's rows
//! ```
//!
//! DDP averages gradients over the W ranks, so the step follows (1/W)·Σ_r loss_r: the sum over
//! all (B·W)² pairs divided by B·W, which is the single-process loss of the global batch —
//! provided rank q's text features receive the gradient of every rank's loss, which OpenCLIP's
//! exchanges carry back through autograd. Here, as in [`crate::loss`], the blocks are computed on
//! leaf copies of the features (this rank's and those that arrived), back-propagated once, and
//! the gradients of the arrived copies travel back to their owners by the backward of the
//! forward's communication (what OpenCLIP's autograd functions do):
//!
//! - `bidir` (OpenCLIP's default): ⌊(W−1)/2⌋ rounds in which every rank sends the text features
//!   it holds to both neighbours at once (left-going ones keep going left, right-going ones
//!   right), then, when W−1 is odd, one round to the right only. Backward: the rounds reversed,
//!   each received copy's gradient (plus what came back for its onward trip) sent to where it
//!   came from.
//! - `shift`: W−1 rounds of send right / receive left; backward W−1 rounds the other way.
//! - `reduce`: W all-reduces, round i summing rank i's features with the others' zeros (a
//!   broadcast); backward W all-reduces of the gradients (`torch.distributed.nn.all_reduce`'s
//!   backward), of which rank i keeps round i's.
//! - `gather`: one all-gather; backward its reduce-scatter.
//!
//! Each gives the same gradient; they differ in memory and messages. Blocks are summed in
//! OpenCLIP's order (own, then as they arrive), so the losses agree to round-off.

use anyhow::{bail, Result};
use tch::Tensor;

use crate::loss::{FeatureGather, FeatureGrads};

/// `--loss-dist-impl`: how SigLIP's text features reach the other ranks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum SigLipDist {
    #[default]
    Bidir,
    Shift,
    Reduce,
    Gather,
}

impl SigLipDist {
    /// OpenCLIP's names; unset is `bidir`, as in `SigLipLoss`.
    pub fn parse(name: Option<&str>) -> Result<Self> {
        Ok(match name {
            None | Some("bidir") => SigLipDist::Bidir,
            Some("shift") => SigLipDist::Shift,
            Some("reduce") => SigLipDist::Reduce,
            Some("gather") => SigLipDist::Gather,
            Some(other) => {
                bail!("--loss-dist-impl {other}: expected bidir, shift, reduce or gather")
            }
        })
    }
}

/// `SigLipLoss._loss`: this rank's images `img` against the texts `txt` (same rows), the
/// diagonal pairs positive when `positives` (this rank's own texts), every pair negative
/// otherwise; the sum divided by the number of image rows.
pub fn siglip_block(
    img: &Tensor,
    txt: &Tensor,
    logit_scale: &Tensor,
    logit_bias: &Tensor,
    positives: bool,
) -> Tensor {
    let logits = (logit_scale * img).matmul(&txt.tr()) + logit_bias;
    let n = img.size()[0];
    let kind = logits.kind();
    let options = (kind, logits.device());
    let labels = if positives {
        Tensor::eye(n, options) * 2.0 - 1.0
    } else {
        -Tensor::ones([n, n], options)
    };
    -(logits * labels).log_sigmoid().sum(kind) / n as f64
}

/// [`siglip_block`] with positives: the whole loss in a world of one.
pub fn siglip_loss_local(
    img: &Tensor,
    txt: &Tensor,
    logit_scale: &Tensor,
    logit_bias: &Tensor,
) -> Tensor {
    siglip_block(img, txt, logit_scale, logit_bias, true)
}

/// The text features that arrived from other ranks (leaves whose `.grad` the backward fills),
/// kept as each implementation must send their gradients back.
enum Arrived {
    /// A world of one.
    Nothing,
    /// Per round (from the right, from the left), and the last one-way round's copy.
    Bidir {
        rounds: Vec<(Tensor, Tensor)>,
        last: Option<Tensor>,
    },
    /// Per round, from the left.
    Shift(Vec<Tensor>),
    /// Per rank (this rank's own round included, unused by the loss).
    Reduce(Vec<Tensor>),
    /// Every rank's, `[W·B, D]`.
    Gather(Tensor),
}

/// A leaf copy whose gradient the loss's backward fills.
fn leaf(t: &Tensor) -> Tensor {
    t.detach().set_requires_grad(true)
}

/// `a + b`, `b` absent counting as zero.
fn plus(a: Tensor, b: Option<Tensor>) -> Tensor {
    match b {
        Some(b) => a + b,
        None => a,
    }
}

/// A leaf's gradient; zeros where the loss did not use it.
fn grad_of(t: &Tensor) -> Tensor {
    let g = t.grad();
    if g.defined() {
        g
    } else {
        t.zeros_like()
    }
}

/// The forward's communication: moves this rank's texts `txt` (detached) as `dist` does and
/// hands every copy that arrived to `negatives` (in arrival order).
fn send_texts(
    dist: SigLipDist,
    txt: &Tensor,
    gather: &dyn FeatureGather,
    negatives: &mut dyn FnMut(&Tensor),
) -> Result<Arrived> {
    let (rank, world) = (gather.rank(), gather.world_size());
    if world == 1 {
        return Ok(Arrived::Nothing);
    }
    let (left, right) = ((rank + world - 1) % world, (rank + 1) % world);
    Ok(match dist {
        SigLipDist::Bidir => {
            let (mut to_left, mut to_right) = (txt.shallow_clone(), txt.shallow_clone());
            let mut rounds = Vec::new();
            for _ in 0..(world - 1) / 2 {
                let got = gather.exchange(
                    &[(left, &to_left), (right, &to_right)],
                    &[right, left],
                    txt,
                )?;
                let (from_right, from_left) = (leaf(&got[0]), leaf(&got[1]));
                negatives(&from_right);
                negatives(&from_left);
                (to_left, to_right) = (from_right.detach(), from_left.detach());
                rounds.push((from_right, from_left));
            }
            let last = if (world - 1) % 2 == 1 {
                let got = gather.exchange(&[(right, &to_right)], &[left], txt)?;
                let from_left = leaf(&got[0]);
                negatives(&from_left);
                Some(from_left)
            } else {
                None
            };
            Arrived::Bidir { rounds, last }
        }
        SigLipDist::Shift => {
            let mut to_right = txt.shallow_clone();
            let mut rounds = Vec::new();
            for _ in 1..world {
                let from_left = leaf(&gather.exchange(&[(right, &to_right)], &[left], txt)?[0]);
                negatives(&from_left);
                to_right = from_left.detach();
                rounds.push(from_left);
            }
            Arrived::Shift(rounds)
        }
        SigLipDist::Reduce => {
            let mut rounds = Vec::new();
            for i in 0..world {
                let from_i = leaf(&gather.all_reduce_sum(&(txt * f64::from(i == rank)))?);
                if i != rank {
                    negatives(&from_i);
                }
                rounds.push(from_i);
            }
            Arrived::Reduce(rounds)
        }
        SigLipDist::Gather => {
            let all = leaf(&gather.all_gather(txt)?);
            let b = txt.size()[0];
            for i in (0..world).filter(|&i| i != rank) {
                negatives(&all.narrow(0, i * b, b));
            }
            Arrived::Gather(all)
        }
    })
}

/// The backward of [`send_texts`]: every arrived copy's gradient back to its owner; returns
/// what reached this rank for its own texts (every rank's loss's gradient but its own).
fn send_gradients_back(arrived: &Arrived, gather: &dyn FeatureGather) -> Result<Option<Tensor>> {
    let (rank, world) = (gather.rank(), gather.world_size());
    let (left, right) = ((rank + world - 1) % world, (rank + 1) % world);
    Ok(match arrived {
        Arrived::Nothing => None,
        Arrived::Bidir { rounds, last } => {
            // What came back for the texts this rank sent left and right in the round after.
            let (mut back_left, mut back_right) = (None, None);
            if let Some(from_left) = last {
                let g = grad_of(from_left);
                back_right = Some(gather.exchange(&[(left, &g)], &[right], &g)?.remove(0));
            }
            for (from_right, from_left) in rounds.iter().rev() {
                let g_right = plus(grad_of(from_right), back_left.take());
                let g_left = plus(grad_of(from_left), back_right.take());
                let mut got = gather.exchange(
                    &[(right, &g_right), (left, &g_left)],
                    &[left, right],
                    &g_left,
                )?;
                back_right = Some(got.remove(1));
                back_left = Some(got.remove(0));
            }
            // The first round sent this rank's own texts both ways.
            match (back_left, back_right) {
                (Some(l), r) => Some(plus(l, r)),
                (None, r) => r,
            }
        }
        Arrived::Shift(rounds) => {
            let mut back = None;
            for from_left in rounds.iter().rev() {
                let g = plus(grad_of(from_left), back.take());
                back = Some(gather.exchange(&[(left, &g)], &[right], &g)?.remove(0));
            }
            back
        }
        Arrived::Reduce(rounds) => {
            let mut mine = None;
            for (i, from_i) in rounds.iter().enumerate() {
                let sum = gather.all_reduce_sum(&grad_of(from_i))?;
                if i as i64 == rank {
                    mine = Some(sum);
                }
            }
            mine
        }
        Arrived::Gather(all) => Some(gather.reduce_scatter_sum(&grad_of(all))?),
    })
}

/// This rank's SigLIP loss over the global batch (see the module docs), back-propagated times
/// `loss_scale` into `logit_scale`'s (this is `exp(logit_scale)`, with its history) and
/// `logit_bias`'s parameters, and the gradients the towers must back-propagate from this rank's
/// features `img`, `txt` (their autograd history is not used): its own loss's, plus, for the
/// texts, every other rank's.
pub fn siglip_loss_backward(
    img: &Tensor,
    txt: &Tensor,
    logit_scale: &Tensor,
    logit_bias: &Tensor,
    gather: &dyn FeatureGather,
    dist: SigLipDist,
    loss_scale: Option<&Tensor>,
) -> Result<FeatureGrads> {
    let (li, lt) = (leaf(img), leaf(txt));
    let mut loss = siglip_block(&li, &lt, logit_scale, logit_bias, true);
    let arrived = send_texts(dist, &txt.detach(), gather, &mut |t| {
        loss = &loss + siglip_block(&li, t, logit_scale, logit_bias, false);
    })?;
    match loss_scale {
        None => loss.backward(),
        Some(s) => (&loss * s).backward(),
    }
    let text = plus(lt.grad(), send_gradients_back(&arrived, gather)?);
    Ok(FeatureGrads {
        loss: loss.detach(),
        image: li.grad(),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loss::LocalOnly;
    use tch::{Device, Kind};

    fn normalized(n: i64, d: i64) -> Tensor {
        let x = Tensor::randn([n, d], (Kind::Double, Device::Cpu));
        &x / x.norm_scalaropt_dim(2, [-1], true)
    }

    /// The formula written out pair by pair: −Σ log σ(±(s·⟨I_i, T_j⟩ + b)) / n.
    fn direct(img: &Tensor, txt: &Tensor, s: f64, b: f64) -> f64 {
        let n = img.size()[0];
        let mut total = 0.0;
        for i in 0..n {
            for j in 0..n {
                let dot = (img.get(i) * txt.get(j))
                    .sum(Kind::Double)
                    .double_value(&[]);
                let z = if i == j { 1.0 } else { -1.0 } * (s * dot + b);
                total -= -(1.0 + (-z).exp()).ln();
            }
        }
        total / n as f64
    }

    #[test]
    fn world_of_one_matches_the_direct_formula() {
        tch::manual_seed(7);
        let (img, txt) = (normalized(5, 8), normalized(5, 8));
        let (s, b) = (Tensor::from(10.0f64), Tensor::from(-10.0f64));
        let loss = siglip_loss_local(&img, &txt, &s, &b).double_value(&[]);
        let want = direct(&img, &txt, 10.0, -10.0);
        assert!((loss - want).abs() < 1e-12, "{loss} vs {want}");
    }

    /// The loss of a global batch split over ranks, summed over ranks and divided by W, is the
    /// whole batch's: what DDP's average makes of the per-rank losses.
    #[test]
    fn per_rank_losses_average_to_the_global_batch_loss() {
        tch::manual_seed(8);
        let (img, txt) = (normalized(6, 8), normalized(6, 8));
        let (s, b) = (Tensor::from(7.0f64), Tensor::from(-3.0f64));
        let whole = siglip_loss_local(&img, &txt, &s, &b).double_value(&[]);
        let mut sum = 0.0;
        for r in 0..3 {
            let rows = |t: &Tensor, q: i64| t.narrow(0, 2 * q, 2);
            let mut l = siglip_block(&rows(&img, r), &rows(&txt, r), &s, &b, true);
            for q in (0..3).filter(|&q| q != r) {
                l += siglip_block(&rows(&img, r), &rows(&txt, q), &s, &b, false);
            }
            sum += l.double_value(&[]);
        }
        assert!(
            (sum / 3.0 - whole).abs() < 1e-12,
            "{} vs {whole}",
            sum / 3.0
        );
    }

    /// In a world of one the feature gradients, and those of logit_scale and logit_bias, equal
    /// plain autograd through the loss.
    #[test]
    fn feature_gradients_equal_autograd() {
        tch::manual_seed(9);
        let img = normalized(5, 8).set_requires_grad(true);
        let txt = normalized(5, 8).set_requires_grad(true);
        let params = || {
            (
                Tensor::from(10f64.ln()).set_requires_grad(true),
                Tensor::from(-10.0f64).set_requires_grad(true),
            )
        };
        let (ls, lb) = params();
        siglip_loss_local(&img, &txt, &ls.exp(), &lb).backward();
        let (ls2, lb2) = params();
        let g = siglip_loss_backward(
            &img,
            &txt,
            &ls2.exp(),
            &lb2,
            &LocalOnly,
            SigLipDist::Bidir,
            None,
        )
        .unwrap();
        for (got, want) in [
            (&g.image, img.grad()),
            (&g.text, txt.grad()),
            (&ls2.grad(), ls.grad()),
            (&lb2.grad(), lb.grad()),
        ] {
            assert!(want.abs().sum(Kind::Double).double_value(&[]) > 0.0);
            let err = (got - &want).abs().max().double_value(&[]);
            assert!(err < 1e-14, "{err}");
        }
    }

    #[test]
    fn dist_impl_names_are_openclips() {
        assert_eq!(SigLipDist::parse(None).unwrap(), SigLipDist::Bidir);
        for (name, want) in [
            ("bidir", SigLipDist::Bidir),
            ("shift", SigLipDist::Shift),
            ("reduce", SigLipDist::Reduce),
            ("gather", SigLipDist::Gather),
        ] {
            assert_eq!(SigLipDist::parse(Some(name)).unwrap(), want);
        }
        let err = SigLipDist::parse(Some("ring")).unwrap_err().to_string();
        assert_eq!(
            err,
            "--loss-dist-impl ring: expected bidir, shift, reduce or gather"
        );
    }
}
