//! Collectives among a subset of the ranks — a shard group, or the ranks holding the same shard
//! in every group — for hybrid sharding (`--fsdp-shard-size`), built on the point-to-point
//! exchange every backend has ([`Collectives::send_recv`], one call per collective, every member
//! exchanging with every other at once): each rank sends and receives (n − 1)/n of the data per
//! all-gather or reduce-scatter, as a ring does. Sums are added in member order, each element by
//! one member, so every member ends with the same bits. Only the members call; the flight recorder
//! sees the exchanges as `send_recv`.

use anyhow::Result;
use clip_dist::Collectives;
use tch::Tensor;

pub(crate) struct SubGroup<'a> {
    comm: &'a dyn Collectives,
    /// Global ranks, in the group's order.
    members: Vec<usize>,
    /// This rank's index in `members`.
    me: usize,
}

impl<'a> SubGroup<'a> {
    pub(crate) fn new(comm: &'a dyn Collectives, members: Vec<usize>) -> SubGroup<'a> {
        let me = members
            .iter()
            .position(|&r| r == comm.rank())
            .expect("a sub-group holds the calling rank");
        SubGroup { comm, members, me }
    }

    /// Sends `parts[i]` to member i and returns what each member sent here (`like` shapes the
    /// receive buffers; this member's own entry is `parts[me]`).
    fn exchange(&self, parts: &[Tensor], like: &Tensor) -> Result<Vec<Tensor>> {
        let n = self.members.len();
        let mut got: Vec<Tensor> = (0..n)
            .map(|i| match i == self.me {
                true => parts[i].shallow_clone(),
                false => like.empty_like(),
            })
            .collect();
        let sends: Vec<(usize, &Tensor)> = (0..n)
            .filter(|&i| i != self.me)
            .map(|i| (self.members[i], &parts[i]))
            .collect();
        let mut recvs: Vec<(usize, &mut Tensor)> = got
            .iter_mut()
            .enumerate()
            .filter(|(i, _)| *i != self.me)
            .map(|(i, t)| (self.members[i], t))
            .collect();
        self.comm.send_recv(&sends, &mut recvs)?;
        Ok(got)
    }

    /// Every member's `t` concatenated along dim 0 in member order.
    pub(crate) fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let t = t.contiguous();
        let parts: Vec<Tensor> = self.members.iter().map(|_| t.shallow_clone()).collect();
        Ok(Tensor::cat(&self.exchange(&parts, &t)?, 0))
    }

    /// `t` is `[n·S]`: this member's S elements of the elementwise sum over the members.
    pub(crate) fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor> {
        let n = self.members.len() as i64;
        let parts: Vec<Tensor> = t.chunk(n, 0).iter().map(Tensor::contiguous).collect();
        let got = self.exchange(&parts, &parts[self.me])?;
        Ok(tch::no_grad(|| {
            got.iter().skip(1).fold(got[0].copy(), |acc, g| acc + g)
        }))
    }

    /// The elementwise sum of every member's `t` (1-D), on every member: a reduce-scatter of
    /// `t` padded to a multiple of n, then an all-gather.
    pub(crate) fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let n = self.members.len() as i64;
        let len = t.numel() as i64;
        let padded = (len + n - 1) / n * n;
        let flat = t.reshape([-1]);
        let flat = match padded - len {
            0 => flat,
            pad => Tensor::cat(&[flat, Tensor::zeros([pad], (t.kind(), t.device()))], 0),
        };
        let mine = self.reduce_scatter_sum(&flat)?;
        let all = self.all_gather(&mine)?;
        Ok(all.narrow(0, 0, len).reshape(t.size()))
    }
}
