//! Data parallelism around the step: every rank's gradients averaged in large flat buckets
//! (DDP's job), the feature gather of the loss over the same collectives, and the few
//! agreements the trainer needs (identical initial weights, whether to stop).
//!
//! The reduction runs after the whole backward (no overlap: tch has no gradient hooks), bucket by
//! bucket: the gradients of consecutive parameters are copied into one flat tensor (f32, or bf16
//! with `--grad-reduce-dtype bf16`, half the bytes on the wire), all-reduced with mean, and copied
//! back. Every rank then holds the same averaged gradient, so clipping on the local norm is
//! clipping on the global norm and the optimizer steps agree bit for bit.

use anyhow::{bail, Context, Result};
use clip_dist::{Collectives, ReduceOp};
use tch::{Device, Kind, Tensor};

use crate::loss::FeatureGather;

/// The context of every error from a collective: the job cannot go on (a rank died, hung or
/// disagrees), and `clip-train` exits with [`clip_dist::EXIT_DIST_FAILURE`] rather than 1, so a
/// slurm script can tell it from a bad flag or a preemption.
#[derive(Debug, Clone, Copy)]
pub struct DistFailure;

impl std::fmt::Display for DistFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("distributed run failed")
    }
}

/// Tags a collective's error with [`DistFailure`].
pub fn dist<T>(r: Result<T>) -> Result<T> {
    r.context(DistFailure)
}

/// Elements per gradient bucket: 2^26 (256 MiB in f32). Large buckets mean few collective
/// launches; the copy costs one bucket of extra memory.
const BUCKET_ELEMENTS: i64 = 1 << 26;

/// The trainable parameters grouped into flat all-reduce buckets, in parameter order.
pub struct GradBuckets {
    buckets: Vec<Vec<(String, Tensor)>>,
    dtype: Kind,
}

impl GradBuckets {
    pub fn new(params: &[(String, Tensor)], dtype: Kind) -> Self {
        let mut buckets: Vec<Vec<(String, Tensor)>> = vec![];
        let mut size = 0;
        for (k, p) in params {
            let n = p.numel() as i64;
            if buckets.is_empty() || size + n > BUCKET_ELEMENTS {
                buckets.push(vec![]);
                size = 0;
            }
            buckets
                .last_mut()
                .unwrap()
                .push((k.clone(), p.shallow_clone()));
            size += n;
        }
        GradBuckets { buckets, dtype }
    }

    /// Replaces every parameter's gradient with its mean over the ranks.
    pub fn all_reduce_mean(&self, comm: &dyn Collectives) -> Result<()> {
        if comm.world_size() == 1 {
            return Ok(());
        }
        tch::no_grad(|| -> Result<()> {
            for bucket in &self.buckets {
                let mut grads = Vec::with_capacity(bucket.len());
                for (k, p) in bucket {
                    let g = p.grad();
                    if !g.defined() {
                        bail!("parameter {k} got no gradient this step");
                    }
                    grads.push(g);
                }
                let flat: Vec<Tensor> = grads.iter().map(|g| g.reshape([-1])).collect();
                let mut flat = Tensor::cat(&flat, 0).to_kind(self.dtype);
                dist(comm.all_reduce(&mut flat, ReduceOp::Mean))?;
                let mut offset = 0;
                for g in &mut grads {
                    let n = g.numel() as i64;
                    let part = flat.narrow(0, offset, n).view_as(g);
                    g.copy_(&part);
                    offset += n;
                }
            }
            Ok(())
        })
    }
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
        Ok(dist(self.0.all_gather(&widen(t)))?.to_kind(t.kind()))
    }
    fn reduce_scatter_sum(&self, t: &Tensor) -> Result<Tensor> {
        Ok(dist(self.0.reduce_scatter(&widen(t), ReduceOp::Sum))?.to_kind(t.kind()))
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

/// Fails unless every rank's `value` equals rank 0's; the error names the ranks that differ.
/// (`device`: where the backend takes tensors; f32 carries 24 bits, so the value is sent as two
/// 16-bit halves.)
pub fn check_same_everywhere(
    comm: &dyn Collectives,
    device: Device,
    value: u32,
    what: &str,
) -> Result<()> {
    let mine = Tensor::from_slice(&[(value >> 16) as f32, (value & 0xffff) as f32]).to(device);
    let all = dist(comm.all_gather(&mine))?.to(Device::Cpu);
    let all: Vec<f32> = Vec::<f32>::try_from(&all.reshape([-1]))?;
    let all: Vec<u32> = all
        .chunks(2)
        .map(|c| ((c[0] as u32) << 16) | c[1] as u32)
        .collect();
    let differ: Vec<String> = all
        .iter()
        .enumerate()
        .filter(|(_, v)| **v != all[0])
        .map(|(r, _)| r.to_string())
        .collect();
    if !differ.is_empty() {
        return dist(Err(anyhow::anyhow!(
            "{what} differs from rank 0's on ranks {}",
            differ.join(", ")
        )));
    }
    Ok(())
}

/// True on every rank when any rank asks to stop (a preemption signal may reach the ranks at
/// different steps; they must checkpoint the same one).
pub fn any(comm: &dyn Collectives, device: Device, flag: bool) -> Result<bool> {
    if comm.world_size() == 1 {
        return Ok(flag);
    }
    let mut t = Tensor::from_slice(&[f32::from(u8::from(flag))]).to(device);
    dist(comm.all_reduce(&mut t, ReduceOp::Sum))?;
    Ok(t.double_value(&[0]) > 0.0)
}

/// Rank 0's `s` on every rank (a run name, a checkpoint path), through the collectives: bytes as
/// f32 in a fixed 4096-slot tensor (the backends move tensors of agreed shapes).
pub fn broadcast_string(comm: &dyn Collectives, device: Device, s: &str) -> Result<String> {
    const SLOTS: usize = 4096;
    if comm.world_size() == 1 {
        return Ok(s.to_string());
    }
    let bytes = s.as_bytes();
    if bytes.len() >= SLOTS {
        bail!(
            "{s:?}: longer than {} bytes, cannot be shared between ranks",
            SLOTS - 1
        );
    }
    let mut slots = vec![0f32; SLOTS];
    slots[0] = bytes.len() as f32;
    for (d, b) in slots[1..].iter_mut().zip(bytes) {
        *d = f32::from(*b);
    }
    let mut t = Tensor::from_slice(&slots).to(device);
    dist(comm.broadcast(&mut t, 0))?;
    let got: Vec<f32> = Vec::<f32>::try_from(&t.to(Device::Cpu))?;
    let n = got[0] as usize;
    let bytes: Vec<u8> = got[1..=n].iter().map(|v| *v as u8).collect();
    String::from_utf8(bytes).context("rank 0's string is not UTF-8")
}

/// Every rank's `s`, in rank order, on every rank (each rank's data position, for a checkpoint
/// that resumes all of them): lengths first, then the bytes as f32 padded to the longest.
pub fn all_gather_strings(comm: &dyn Collectives, device: Device, s: &str) -> Result<Vec<String>> {
    if comm.world_size() == 1 {
        return Ok(vec![s.to_string()]);
    }
    let len = Tensor::from_slice(&[s.len() as f32]).to(device);
    let lens: Vec<f32> = Vec::<f32>::try_from(&dist(comm.all_gather(&len))?.to(Device::Cpu))?;
    let max = lens.iter().fold(0f32, |a, b| a.max(*b)) as usize;
    let mut slots = vec![0f32; max.max(1)];
    for (d, b) in slots.iter_mut().zip(s.as_bytes()) {
        *d = f32::from(*b);
    }
    let all = dist(comm.all_gather(&Tensor::from_slice(&slots).to(device)))?;
    let all: Vec<f32> = Vec::<f32>::try_from(&all.to(Device::Cpu))?;
    all.chunks(max.max(1))
        .zip(&lens)
        .map(|(c, n)| {
            let bytes: Vec<u8> = c[..*n as usize].iter().map(|v| *v as u8).collect();
            String::from_utf8(bytes).context("a rank's string is not UTF-8")
        })
        .collect()
}
