//! Data parallelism around the step: the feature gather of the loss over the collectives, and
//! the few agreements the trainer needs (identical initial weights, whether to stop — the latter
//! through the store, so they cost no device round-trip). The gradient average is
//! [`crate::buckets`]' job (re-exported here).
//!
//! Errors: every clip-dist call returns a typed [`clip_dist::Error`], which `?` carries inside
//! the `anyhow::Error` (context included); [`dist_error`] finds it again, and its
//! [`clip_dist::Error::fault`] decides the exit status.

use anyhow::{bail, Context, Result};
use clip_dist::{Collectives, ReduceOp};
use tch::{Device, Kind, Tensor};

use crate::loss::FeatureGather;

pub use crate::buckets::{BucketOptions, GradBuckets};

/// The clip-dist error that caused `e`, anywhere in its chain (under any context): what
/// `clip-train` reads to exit with 2 (the job was launched wrong) or
/// [`clip_dist::EXIT_DIST_FAILURE`] (a rank died, hung or disagrees) instead of 1, so a slurm
/// script can tell them from other failures and from a preemption.
pub fn dist_error(e: &anyhow::Error) -> Option<&clip_dist::Error> {
    e.chain().find_map(|c| c.downcast_ref::<clip_dist::Error>())
}

/// The loss's collective points over a [`Collectives`] backend.
pub struct DistGather<'a>(pub &'a dyn Collectives);

/// fp16 (`--precision amp` features) travels as f32: the backends move f32, bf16, f64 and i64.
fn widen(t: &Tensor) -> Tensor {
    match t.kind() {
        Kind::Half => t.to_kind(Kind::Float),
        _ => t.contiguous(),
    }
}

impl FeatureGather for DistGather<'_> {
    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        Ok(self.0.all_gather(&widen(t))?.to_kind(t.kind()))
    }
    fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(self
            .0
            .reduce_scatter(&widen(t), ReduceOp::Sum)?
            .to_kind(t.kind()))
    }
    fn all_reduce_sum(&self, t: &Tensor) -> Result<Tensor> {
        let mut sum = widen(t).copy();
        self.0.all_reduce(&mut sum, ReduceOp::Sum)?;
        Ok(sum.to_kind(t.kind()))
    }
    fn exchange(
        &self,
        sends: &[(i64, &Tensor)],
        from: &[i64],
        like: &Tensor,
    ) -> Result<Vec<Tensor>> {
        let wide: Vec<(usize, Tensor)> =
            sends.iter().map(|(r, t)| (*r as usize, widen(t))).collect();
        let sends: Vec<(usize, &Tensor)> = wide.iter().map(|(r, t)| (*r, t)).collect();
        let kind = like.kind();
        let like = widen(like);
        let mut got: Vec<(usize, Tensor)> = from
            .iter()
            .map(|&r| (r as usize, like.zeros_like()))
            .collect();
        let mut recvs: Vec<(usize, &mut Tensor)> = got.iter_mut().map(|(r, t)| (*r, t)).collect();
        self.0.send_recv(&sends, &mut recvs)?;
        Ok(got.into_iter().map(|(_, t)| t.to_kind(kind)).collect())
    }
    fn rank(&self) -> i64 {
        self.0.rank() as i64
    }
    fn world_size(&self) -> i64 {
        self.0.world_size() as i64
    }
}

/// A checksum of the parameters' bytes (CRC-32 over each tensor in order), to prove every rank
/// starts from the same weights.
pub fn weights_checksum(params: &[(String, Tensor)]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    for (k, t) in params {
        h.update(k.as_bytes());
        let t = t.to_device(tch::Device::Cpu).contiguous();
        let n = t.numel() * t.kind().elt_size_in_bytes();
        let mut bytes = vec![0u8; n];
        t.copy_data_u8(&mut bytes, t.numel());
        h.update(&bytes);
    }
    h.finalize()
}

/// Fails unless every rank's `value` equals rank 0's, with [`clip_dist::Error::RanksDisagree`]
/// naming the ranks that differ. (`device`: where the backend takes tensors; f32 carries 24
/// bits, so the value is sent as two 16-bit halves.)
pub fn check_same_everywhere(
    comm: &dyn Collectives,
    device: Device,
    value: u32,
    what: &str,
) -> Result<()> {
    let mine = Tensor::from_slice(&[(value >> 16) as f32, (value & 0xffff) as f32]).to(device);
    let all = comm.all_gather(&mine)?.to(Device::Cpu);
    let all: Vec<f32> = Vec::<f32>::try_from(&all.reshape([-1]))?;
    let all: Vec<u32> = all
        .chunks(2)
        .map(|c| ((c[0] as u32) << 16) | c[1] as u32)
        .collect();
    let ranks: Vec<usize> = (0..all.len()).filter(|&r| all[r] != all[0]).collect();
    if !ranks.is_empty() {
        let what = what.to_string();
        return Err(clip_dist::Error::RanksDisagree { what, ranks }.into());
    }
    Ok(())
}

/// True on every rank when any rank's `flag` is (the shards ran out on one rank: all end the
/// epoch).
pub fn any(comm: &dyn Collectives, flag: bool) -> Result<bool> {
    Ok(any_of(comm, [flag])?[0])
}

/// [`any`] for several flags in one exchange (a preemption signal may reach the ranks at
/// different steps: every rank must stop at the same step). The flags travel through the store
/// (host bytes), not a collective on the device: the agreement never waits for the step's
/// kernels, so a step that does not log has no host sync.
pub fn any_of<const N: usize>(comm: &dyn Collectives, flags: [bool; N]) -> Result<[bool; N]> {
    if comm.world_size() == 1 {
        return Ok(flags);
    }
    let mine = flags.map(u8::from);
    let mut out = [false; N];
    for theirs in comm.all_gather_bytes(&mine)? {
        if theirs.len() != N {
            bail!("a rank sent {} flags to agree on, not {N}", theirs.len());
        }
        for (o, t) in out.iter_mut().zip(theirs) {
            *o |= t != 0;
        }
    }
    Ok(out)
}

/// Rank 0's `s` on every rank (a run name, a checkpoint path), any length, through clip-dist's
/// byte broadcast (the store).
pub fn broadcast_string(comm: &dyn Collectives, s: &str) -> Result<String> {
    let bytes = comm.broadcast_bytes(s.as_bytes(), 0)?;
    String::from_utf8(bytes).context("rank 0's string is not UTF-8")
}

/// Every rank's `s`, in rank order, on every rank (each rank's data position, for a checkpoint
/// that resumes all of them), any lengths, through clip-dist's byte all-gather (the store).
pub fn all_gather_strings(comm: &dyn Collectives, s: &str) -> Result<Vec<String>> {
    comm.all_gather_bytes(s.as_bytes())?
        .into_iter()
        .map(|bytes| String::from_utf8(bytes).context("a rank's string is not UTF-8"))
        .collect()
}
