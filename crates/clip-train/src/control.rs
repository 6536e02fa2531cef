//! The trainer's control path: what every rank does around a step, at a log step, at a
//! checkpoint and at an evaluation besides computing, as functions of their own, so that
//! `clip-tool sim-ranks` runs exactly these at any world size (threads standing in for ranks,
//! without a model). Each is a few host messages over clip-dist's control tree or one small
//! collective; none goes through rank 0's store, whose load is the heartbeats (at most one per
//! rank per second) and the flight recorder (see docs/scaling.md).

use anyhow::Result;
use clip_dist::{Collectives, Dist};
use tch::Tensor;

use crate::ddp;
use crate::divergence::Divergence;

/// Before a step: whether any rank's shards ran out (`mine`: this rank's did), in which case
/// every rank ends the epoch at this step.
pub fn shards_ran_out(comm: &dyn Collectives, mine: bool) -> Result<bool> {
    ddp::any(comm, mine)
}

/// After global step `step` of `epoch`: records this rank's `loss` (and amp's `skipped`) for
/// the divergence check without reading it, agrees on stopping (a preemption signal that
/// reached any rank: `signalled` is this rank's), and heartbeats. True: every rank stops here.
pub fn after_step(
    dist: &Dist,
    divergence: &mut Divergence,
    (step, epoch): (i64, i64),
    loss: &Tensor,
    skipped: Option<&Tensor>,
    signalled: bool,
) -> Result<bool> {
    divergence.record(step, epoch, loss, skipped);
    let [stop] = ddp::any_of(dist.collectives(), [signalled])?;
    dist.heartbeat(step as u64)?;
    Ok(stop)
}
