//! The world of one: no network. Results are copies (or the tensor itself for in-place calls),
//! exactly what W = 1 means for each collective; `Group` has checked the arguments as for any
//! world.

use crate::error::Result;
use crate::group::Transport;
use crate::ReduceOp;
use tch::Tensor;

/// Collectives for a single process.
pub(crate) struct LocalCollectives;

impl Transport for LocalCollectives {
    fn all_reduce(&self, _t: &mut Tensor, _op: ReduceOp) -> Result<()> {
        // Sum and mean of one input are the input.
        Ok(())
    }

    fn all_gather(&self, t: &Tensor, out_shape: &[i64]) -> Result<Tensor> {
        Ok(tch::no_grad(|| t.reshape(out_shape).copy()))
    }

    fn reduce_scatter(&self, t: &Tensor, _op: ReduceOp, _out_shape: &[i64]) -> Result<Tensor> {
        Ok(tch::no_grad(|| t.copy()))
    }

    fn broadcast(&self, _t: &mut Tensor, _root: usize) -> Result<()> {
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }

    fn send_recv(
        &self,
        _sends: &[(usize, &Tensor)],
        _recvs: &mut [(usize, &mut Tensor)],
    ) -> Result<()> {
        // A world of one has no other rank: `Group` refused every peer, so there is nothing to
        // move.
        Ok(())
    }
}
