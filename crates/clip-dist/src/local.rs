//! The world of one: no network, the same trait. Results are copies (or the tensor itself for
//! in-place calls), exactly what W = 1 means for each collective.

use crate::host::Dtype;
use crate::{Collectives, ReduceOp};
use anyhow::{bail, Result};
use tch::Tensor;

/// Collectives for a single process.
pub struct LocalCollectives;

impl Collectives for LocalCollectives {
    fn rank(&self) -> usize {
        0
    }

    fn world_size(&self) -> usize {
        1
    }

    fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        // Sum and mean of one input are the input; validate like the other backends do.
        Dtype::of(t)?.check_reduce(op)
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        Dtype::of(t)?;
        Ok(tch::no_grad(|| {
            if t.dim() == 0 {
                t.reshape([1]).copy()
            } else {
                t.copy()
            }
        }))
    }

    fn reduce_scatter(&self, t: &Tensor, op: ReduceOp) -> Result<Tensor> {
        Dtype::of(t)?.check_reduce(op)?;
        if t.dim() == 0 {
            bail!("reduce_scatter needs a first dimension divisible by the world size 1, got shape []");
        }
        Ok(tch::no_grad(|| t.copy()))
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        Dtype::of(t)?;
        if root != 0 {
            bail!("broadcast root {root} is outside a world of size 1");
        }
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}
