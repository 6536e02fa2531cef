//! Data parallelism around the step: the feature gather of the loss over the collectives, the
//! gather of rows of any count per rank (evaluation), and the few agreements the trainer needs
//! (identical initial weights; whether to stop — host flags over clip-dist's control tree, so
//! they cost no device round-trip and O(1) messages per rank). The gradient average is
//! [`crate::buckets`]' job (re-exported here).
//!
//! Errors: every clip-dist call returns a typed [`clip_dist::Error`], which `?` carries inside
//! the `anyhow::Error` (context included); [`dist_error`] finds it again, and its
//! [`clip_dist::Error::fault`] decides the exit status.

use anyhow::{Context, Result};
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
/// different steps: every rank must stop at the same step). The flags are host bytes ORed up
/// clip-dist's control tree and sent back down ([`Collectives::any_of`]), not a collective on
/// the device: the agreement never waits for the step's kernels, so a step that does not log
/// has no host sync; each rank exchanges a few messages with its tree neighbours whatever the
/// world size, and none goes through rank 0's store.
pub fn any_of<const N: usize>(comm: &dyn Collectives, flags: [bool; N]) -> Result<[bool; N]> {
    let any = comm.any_of(&flags)?;
    any.try_into()
        .map_err(|v: Vec<bool>| anyhow::anyhow!("agreed on {} flags, not {N}", v.len()))
}

/// The loss of the whole global batch on every rank: the mean over ranks of their local
/// `loss` (a log step's read; one all-reduce of one float).
pub fn global_loss(comm: &dyn Collectives, loss: &Tensor) -> Result<f64> {
    if comm.world_size() == 1 {
        return Ok(loss.double_value(&[]));
    }
    let mut l = loss.to_kind(Kind::Float).reshape([1]);
    comm.all_reduce(&mut l, ReduceOp::Mean)?;
    Ok(l.double_value(&[0]))
}

/// Rank 0's `s` on every rank (a run name, a checkpoint path), any length, through clip-dist's
/// byte broadcast (the store).
pub fn broadcast_string(comm: &dyn Collectives, s: &str) -> Result<String> {
    let bytes = comm.broadcast_bytes(s.as_bytes(), 0)?;
    String::from_utf8(bytes).context("rank 0's string is not UTF-8")
}

/// Every rank's `s`, in rank order, on rank 0 (each rank's data position, for a checkpoint that
/// resumes all of them; an empty list on the other ranks), any lengths, up clip-dist's control
/// tree ([`Collectives::gather_bytes`]).
pub fn gather_strings(comm: &dyn Collectives, s: &str) -> Result<Vec<String>> {
    comm.gather_bytes(s.as_bytes())?
        .into_iter()
        .map(|bytes| String::from_utf8(bytes).context("a rank's string is not UTF-8"))
        .collect()
}

/// What the latency of one more collective is worth in bytes moved (about NCCL's tens of
/// microseconds at 10 GB/s), for [`all_gather_rows`]' choice.
const COLLECTIVE_BYTES: i64 = 256 << 10;

/// Every rank's rows of each of `parts` (a rank's `parts[i]` may have any number of rows, the
/// other dimensions and the dtype the same on every rank), as `[rank][part]`, on every rank,
/// over the collectives (NCCL on GPUs, the TCP backend on the CPU; never the store): one
/// all-gather of the row counts, then per part one all-gather padded to the longest rank's
/// rows, or one broadcast from each rank that has rows when the padding would cost more than
/// those extra collectives (at most `--workers` ranks hold an evaluation's batches, whatever
/// the world size; the zero-shot classifier's groups are spread evenly). fp16 travels as f32
/// (exactly). The tensors stay on `parts`' device.
pub fn all_gather_rows(comm: &dyn Collectives, parts: &[&Tensor]) -> Result<Vec<Vec<Tensor>>> {
    let world = comm.world_size();
    if world == 1 {
        return Ok(vec![parts.iter().map(|t| t.shallow_clone()).collect()]);
    }
    let device = parts.first().map_or(Device::Cpu, |t| t.device());
    let rows: Vec<i64> = parts.iter().map(|t| t.size()[0]).collect();
    let counts = comm.all_gather(&Tensor::from_slice(&rows).to(device))?;
    let counts: Vec<i64> = Vec::try_from(&counts.to(Device::Cpu).reshape([-1]))?;
    let mut out: Vec<Vec<Tensor>> = (0..world).map(|_| Vec::new()).collect();
    for (i, t) in parts.iter().enumerate() {
        let rows: Vec<i64> = (0..world).map(|r| counts[r * parts.len() + i]).collect();
        let wide = widen(t);
        let gathered = gather_part(comm, &wide, &rows)?;
        for (o, g) in out.iter_mut().zip(gathered) {
            o.push(g.to_kind(t.kind()));
        }
    }
    Ok(out)
}

/// One part of [`all_gather_rows`]: every rank's `rows[r]` rows of `mine` (this rank's).
fn gather_part(comm: &dyn Collectives, mine: &Tensor, rows: &[i64]) -> Result<Vec<Tensor>> {
    let (world, rank) = (rows.len(), comm.rank());
    let (total, longest) = (
        rows.iter().sum::<i64>(),
        rows.iter().copied().max().unwrap_or(0),
    );
    let shaped = |n: i64| {
        let mut shape = mine.size();
        shape[0] = n;
        mine.new_zeros(shape.as_slice(), (mine.kind(), mine.device()))
    };
    // From the counts and the shape only, so every rank chooses alike.
    let row_bytes =
        mine.size()[1..].iter().product::<i64>() * mine.kind().elt_size_in_bytes() as i64;
    let holders = rows.iter().filter(|&&n| n > 0).count() as i64;
    if (world as i64 * longest - total) * row_bytes <= holders * COLLECTIVE_BYTES {
        let pad = longest - rows[rank];
        let padded = match pad {
            0 => mine.shallow_clone(),
            _ => Tensor::cat(&[mine, &shaped(pad)], 0),
        };
        let all = comm.all_gather(&padded)?;
        return Ok((0..world)
            .map(|r| all.narrow(0, r as i64 * longest, rows[r]))
            .collect());
    }
    (0..world)
        .map(|r| {
            let mut theirs = match r == rank {
                true => mine.shallow_clone(),
                false => shaped(rows[r]),
            };
            if rows[r] > 0 {
                comm.broadcast(&mut theirs, r)?;
            }
            Ok(theirs)
        })
        .collect()
}
