//! Batches ahead of time: the host memory webdataset and CSV batches are assembled in, and their
//! way to the device.
//!
//! clip-data's assembler thread (CSV: `data.rs`'s decode thread) writes each batch straight into
//! a [`HostBuffer`] of a small ring ([`host_ring`]: libtorch tensors allocated once, pinned when
//! the device is CUDA). The
//! trainer takes step i+1's batches and starts their copy ([`to_device`]) before step i's
//! forward/backward, so on a GPU the copy overlaps step i's compute. A buffer goes back to the
//! ring when the [`DeviceBatch`] made from it is dropped (after the step that used it): on the
//! CPU the "device" tensor is the host buffer itself, so nothing may write it before then.
//!
//! `CLIP_TRAIN_PREFETCH=0` fetches each step's batches just before the step instead (the same
//! values: the order of the batches does not change, only when they are taken).

use anyhow::Result;
use clip_data::buffers::{BatchBuffer, BufferRing, ImagesMut, Lease};
use tch::{Device, Kind, Tensor};
use torch_ext::cuda::{record_stream, Event, Stream, StreamGuard};

use crate::fault::{self, Delay, Fault};
use crate::precision::Precision;

/// Whether step i+1's batches are taken before step i's compute (`CLIP_TRAIN_PREFETCH=0`: no).
pub fn enabled() -> bool {
    std::env::var("CLIP_TRAIN_PREFETCH").map_or(true, |v| v != "0")
}

/// The dtypes of the images: (on the way to the device, into the model). bf16 both where
/// [`Precision::image_kind`] allows; with `CLIP_TRAIN_BF16_IMAGES=0` f32 on the way and the
/// model's input dtype after (converted on the device: the same values, a switch for parity
/// checks).
pub fn image_kinds(precision: Precision) -> (Kind, Kind) {
    match std::env::var("CLIP_TRAIN_BF16_IMAGES").as_deref() {
        Ok("0") => (Kind::Float, precision.input_kind()),
        _ => match precision.image_kind() {
            Kind::BFloat16 => (Kind::BFloat16, Kind::BFloat16),
            _ => (Kind::Float, precision.input_kind()),
        },
    }
}

/// One batch's host memory: images `[B,3,S,S]` (f32, or bf16: see
/// [`crate::precision::Precision::image_kind`]) and tokens `[B,ctx]` i64, contiguous, pinned
/// for a CUDA device.
pub struct HostBuffer {
    images: Tensor,
    tokens: Tensor,
    /// CUDA: recorded on the copy stream after the copy out of this buffer; the buffer is not
    /// written again before it is reached ([`BatchBuffer::wait_writable`])
    copied: Option<Event>,
    /// the CUDA device the buffer is pinned for
    cuda: Option<usize>,
}

impl HostBuffer {
    fn new(device: Device, image_kind: Kind, shape: [i64; 3]) -> Result<HostBuffer> {
        let [b, side, ctx] = shape;
        // Allocated pinned for a GPU (torch's caching host allocator), not pinned by a copy.
        let host = |size: &[i64], kind| -> Result<Tensor> {
            match device.is_cuda() {
                true => torch_ext::pinned::empty(size, kind),
                false => Ok(Tensor::f_empty(size, (kind, Device::Cpu))?),
            }
        };
        let (images, tokens) = (
            host(&[b, 3, side, side], image_kind)?,
            host(&[b, ctx], Kind::Int64)?,
        );
        Ok(HostBuffer {
            images,
            tokens,
            copied: None,
            cuda: match device {
                Device::Cuda(i) => Some(i),
                _ => None,
            },
        })
    }

    /// Waits for the copy out of this buffer and destroys its event — on the buffer's device:
    /// the assembler thread that calls this never chose one, and destroying an event switches
    /// back to the thread's current device (0 on a fresh thread) with a plain `cudaSetDevice`,
    /// which would open a context on GPU 0 in every rank's process. The guard makes the
    /// buffer's device current for the call (its drop restores without creating a context).
    fn wait_copied(&mut self) {
        let Some(copied) = self.copied.take() else {
            return;
        };
        let _on_device = self
            .cuda
            .map(|d| Stream::current(d).and_then(StreamGuard::new));
        // A failure here is the device's (it is gone or broken): the step's own CUDA calls
        // report it.
        let _ = copied.synchronize();
        drop(copied);
    }
}

impl Drop for HostBuffer {
    fn drop(&mut self) {
        self.wait_copied();
    }
}

// SAFETY (both): the caller matches `T` to `t`'s kind; the tensors are contiguous and owned by
// their buffer, which the ring lends to one holder at a time: the assembler writes it only
// while it holds the lease, and the trainer reads it (as tensors) only after the assembler
// handed the batch over.
fn elements<T>(t: &Tensor) -> &[T] {
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const T, t.numel()) }
}
fn elements_mut<T>(t: &mut Tensor) -> &mut [T] {
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut T, t.numel()) }
}

impl BatchBuffer for HostBuffer {
    fn images_mut(&mut self) -> ImagesMut<'_> {
        match self.images.kind() {
            Kind::BFloat16 => ImagesMut::Bf16(elements_mut(&mut self.images)),
            _ => ImagesMut::F32(elements_mut(&mut self.images)),
        }
    }
    fn tokens_mut(&mut self) -> &mut [i64] {
        elements_mut(&mut self.tokens)
    }
    fn images_f32(&self) -> Option<&[f32]> {
        (self.images.kind() == Kind::Float).then(|| elements(&self.images))
    }
    fn tokens(&self) -> &[i64] {
        elements(&self.tokens)
    }
    fn wait_writable(&mut self) {
        self.wait_copied();
    }
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}

/// `count` host buffers of `batch` samples (`image_side` px, `context_length` tokens), images
/// as `image_kind`, pinned for a CUDA `device`.
pub fn host_ring(
    device: Device,
    image_kind: Kind,
    [batch, image_side, context_length]: [i64; 3],
    count: usize,
) -> Result<BufferRing> {
    let buffers = (0..count)
        .map(|_| {
            let b = HostBuffer::new(device, image_kind, [batch, image_side, context_length])?;
            Ok(Box::new(b) as Box<dyn BatchBuffer>)
        })
        .collect::<Result<_>>()?;
    Ok(BufferRing::fixed(buffers))
}

/// A batch on the host: CPU tensors, and the ring buffer they live in (webdataset; synthetic
/// and CSV batches own their tensors).
pub struct HostBatch {
    pub images: Tensor,
    pub tokens: Tensor,
    pub lease: Option<Lease>,
}

impl HostBatch {
    /// The first `n` samples of a ring buffer, as tensors over its memory (no copy).
    pub fn in_buffer(mut lease: Lease, n: i64) -> HostBatch {
        let h = lease
            .downcast_mut::<HostBuffer>()
            .expect("webdataset batches are assembled in the trainer's host buffers");
        let (images, tokens) = (h.images.narrow(0, 0, n), h.tokens.narrow(0, 0, n));
        HostBatch {
            images,
            tokens,
            lease: Some(lease),
        }
    }
}

/// A batch on its way to (or on) the device. Dropping it gives its host buffer back to the
/// ring: only after the step that used it (the fields drop in order: the tensors first), and on
/// CUDA with the copy's event, which the ring waits for before the buffer is written again.
pub struct DeviceBatch {
    images: Tensor,
    tokens: Tensor,
    /// the images' dtype in the model
    image_kind: Kind,
    /// CUDA: the copy's event on the copy stream
    copied: Option<Event>,
    host: Option<Lease>,
}

impl DeviceBatch {
    /// (images, tokens) for the step. On CUDA the current (compute) stream waits for the copy
    /// first, and the tensors — allocated on the copy stream — are marked as used by it, so the
    /// caching allocator keeps their memory until the compute stream is done with them.
    pub fn inputs(&self) -> Result<(Tensor, Tensor)> {
        // The planted fault of a negative control (`fault.rs`) skips the wait; on the CPU,
        // where nothing is copied, the step reads what fresh memory would hold instead.
        let skip_wait = fault::planted(Fault::SkipCopyWait);
        if let Some(copied) = &self.copied {
            let compute = Stream::current(copied_device(&self.images))?;
            if !skip_wait {
                compute.wait_event(copied)?;
            }
            record_stream(&self.images, &compute)?;
            record_stream(&self.tokens, &compute)?;
        } else if skip_wait {
            let zeros = self.images.f_zeros_like()?.f_to_kind(self.image_kind)?;
            return Ok((zeros, self.tokens.shallow_clone()));
        }
        Ok((
            self.images.f_to_kind(self.image_kind)?,
            self.tokens.shallow_clone(),
        ))
    }
}

fn copied_device(t: &Tensor) -> usize {
    match t.device() {
        Device::Cuda(i) => i,
        _ => unreachable!("a copy event only for CUDA tensors"),
    }
}

impl Drop for DeviceBatch {
    fn drop(&mut self) {
        if let (Some(copied), Some(host)) = (self.copied.take(), self.host.as_mut()) {
            if let Some(h) = host.downcast_mut::<HostBuffer>() {
                h.copied = Some(copied);
            }
        }
    }
}

/// The stream host-to-device copies to `device` run on: one of torch's pool, taken once per
/// device and process.
fn copy_stream(device: usize) -> Result<Stream> {
    static COPY: std::sync::Mutex<Vec<Stream>> = std::sync::Mutex::new(Vec::new());
    let mut streams = COPY.lock().unwrap();
    if let Some(s) = streams.iter().find(|s| s.device() == device) {
        return Ok(*s);
    }
    let s = Stream::from_pool(device)?;
    streams.push(s);
    Ok(s)
}

/// `host` on `device`, images as `image_kind` in the model. On the CPU the tensors are the host
/// buffer's (no copy unless the kind changes). To a GPU, a non-blocking copy from pinned memory
/// (a ring buffer, or the tensors pinned here) on the copy stream, with an event the step
/// waits for ([`DeviceBatch::inputs`]): the copy overlaps whatever the compute stream runs.
pub fn to_device(host: HostBatch, device: Device, image_kind: Kind) -> Result<DeviceBatch> {
    let Device::Cuda(index) = device else {
        return Ok(DeviceBatch {
            images: host.images.f_to_kind(image_kind)?,
            tokens: host.tokens,
            image_kind,
            copied: None,
            host: host.lease,
        });
    };
    let pinned = |t: &Tensor| match host.lease {
        Some(_) => Ok(t.shallow_clone()),
        None => torch_ext::pinned::pin(t),
    };
    let stream = copy_stream(index)?;
    let copy = || -> Result<(Tensor, Tensor, Event)> {
        let _on_copy_stream = StreamGuard::new(stream)?;
        if fault::delayed(Delay::Copy) {
            // A negative control's setting (`fault.rs`): the copy lands long after it is
            // enqueued, so only the compute stream's wait for its event orders the step after it.
            torch_ext::cuda::occupy(index, 100)?;
        }
        let crossing = host.images.kind();
        let images = pinned(&host.images)?.f_to_device_(device, crossing, true, false)?;
        let tokens = pinned(&host.tokens)?.f_to_device_(device, Kind::Int64, true, false)?;
        Ok((images, tokens, stream.record_event()?))
    };
    let (images, tokens, copied) = copy().inspect_err(|_| {
        // a copy may have been enqueued without its event: the ring buffer must not be
        // written again before it has run
        let _ = stream.synchronize();
    })?;
    Ok(DeviceBatch {
        images,
        tokens,
        image_kind,
        copied: Some(copied),
        host: host.lease,
    })
}
