//! Host memory batches are assembled in: a ring of reusable buffers ([`BufferRing`]) whose
//! memory the caller chooses ([`BatchBuffer`]: plain vectors here; the trainer's are libtorch
//! tensors, pinned when the run's device is CUDA), lent out one batch at a time ([`Lease`]).
//!
//! The loader's assembler thread takes a buffer, writes a batch into it, and hands it to the
//! consumer inside a [`crate::loader::Batch`]. The buffer goes back to the ring when its lease
//! is dropped — the consumer drops it once nothing can still read the memory — and before the
//! assembler writes into it again it calls [`BatchBuffer::wait_writable`] (a device copy still
//! reading it, for example).

use std::any::Any;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// A batch's images as the buffer holds them: normalised f32, or their bf16 bits (rounded as
/// torch's `to(torch.bfloat16)`: [`bf16_bits`]).
pub enum ImagesMut<'a> {
    F32(&'a mut [f32]),
    Bf16(&'a mut [u16]),
}

/// Memory for one batch: images `[B,3,S,S]` and tokens `[B,ctx]`, row-major, at least as long
/// as the batch (every value of a batch is written before it is read).
pub trait BatchBuffer: Send + 'static {
    fn images_mut(&mut self) -> ImagesMut<'_>;
    fn tokens_mut(&mut self) -> &mut [i64];
    /// The images as f32, where the buffer holds them so.
    fn images_f32(&self) -> Option<&[f32]>;
    fn tokens(&self) -> &[i64];
    /// Waits until nothing reads the memory any more (called before it is written again).
    fn wait_writable(&mut self) {}
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

/// The plain buffer: two vectors.
pub struct VecBuffer {
    pub images: Vec<f32>,
    pub tokens: Vec<i64>,
}

impl BatchBuffer for VecBuffer {
    fn images_mut(&mut self) -> ImagesMut<'_> {
        ImagesMut::F32(&mut self.images)
    }
    fn tokens_mut(&mut self) -> &mut [i64] {
        &mut self.tokens
    }
    fn images_f32(&self) -> Option<&[f32]> {
        Some(&self.images)
    }
    fn tokens(&self) -> &[i64] {
        &self.tokens
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

type Make = Box<dyn Fn() -> Box<dyn BatchBuffer> + Send + Sync>;

struct Ring {
    free: Mutex<Vec<Box<dyn BatchBuffer>>>,
    returned: Condvar,
    /// makes a buffer when none is free (an unbounded ring), else takers wait for one
    make: Option<Make>,
    /// free buffers kept (the others are dropped when they come back)
    keep: usize,
}

/// A set of batch buffers shared by the assembler (takes) and the leases (give back).
#[derive(Clone)]
pub struct BufferRing(Arc<Ring>);

impl BufferRing {
    /// A ring of exactly these buffers: a taker waits until one comes back.
    pub fn fixed(buffers: Vec<Box<dyn BatchBuffer>>) -> BufferRing {
        let keep = buffers.len();
        BufferRing(Arc::new(Ring {
            free: Mutex::new(buffers),
            returned: Condvar::new(),
            make: None,
            keep,
        }))
    }

    /// Vector buffers for `images` floats and `tokens` ids, made when none is free (a consumer
    /// may keep every batch of an epoch), at most `keep` kept for reuse.
    pub fn vecs(images: usize, tokens: usize, keep: usize) -> BufferRing {
        let make: Make = Box::new(move || {
            Box::new(VecBuffer {
                images: vec![0.0; images],
                tokens: vec![0; tokens],
            })
        });
        BufferRing(Arc::new(Ring {
            free: Mutex::new(Vec::new()),
            returned: Condvar::new(),
            make: Some(make),
            keep,
        }))
    }

    /// A free buffer, ready to be written; `None` when `stop()` turns true while waiting.
    pub fn take(&self, stop: &dyn Fn() -> bool) -> Option<Lease> {
        let mut free = self.0.free.lock().unwrap();
        let mut buf = loop {
            if let Some(b) = free.pop() {
                break b;
            }
            if let Some(make) = &self.0.make {
                break make();
            }
            if stop() {
                return None;
            }
            free = self
                .0
                .returned
                .wait_timeout(free, Duration::from_millis(100))
                .unwrap()
                .0;
        };
        drop(free);
        buf.wait_writable();
        Some(Lease {
            buf: Some(buf),
            ring: self.clone(),
        })
    }

    fn give_back(&self, buf: Box<dyn BatchBuffer>) {
        let mut free = self.0.free.lock().unwrap();
        if free.len() < self.0.keep {
            free.push(buf);
            self.0.returned.notify_one();
        }
    }
}

/// A buffer lent out of its ring; dropping the lease gives it back.
pub struct Lease {
    buf: Option<Box<dyn BatchBuffer>>,
    ring: BufferRing,
}

impl Lease {
    pub fn buffer(&self) -> &dyn BatchBuffer {
        self.buf.as_deref().expect("a lent buffer")
    }
    pub fn buffer_mut(&mut self) -> &mut dyn BatchBuffer {
        self.buf.as_deref_mut().expect("a lent buffer")
    }
    /// The buffer as its own type (the caller's, for [`BufferRing::fixed`] rings).
    pub fn downcast_mut<T: BatchBuffer>(&mut self) -> Option<&mut T> {
        self.buffer_mut().as_any_mut().downcast_mut()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.ring.give_back(b);
        }
    }
}

/// `x` as bf16 bits, as torch converts a float to bfloat16: round to nearest, ties to even; a
/// NaN stays a NaN (torch's payload differs between its vectorised and scalar loops: 0xFFFF or
/// 0x7FC0; this gives the scalar loop's).
pub fn bf16_bits(x: f32) -> u16 {
    if x.is_nan() {
        return 0x7FC0;
    }
    let u = x.to_bits();
    let bias = ((u >> 16) & 1) + 0x7FFF;
    (u.wrapping_add(bias) >> 16) as u16
}

/// `src` into `dst` as bf16 bits ([`bf16_bits`]).
pub fn to_bf16(src: &[f32], dst: &mut [u16]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = bf16_bits(*s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fixed_ring_lends_each_buffer_once_until_it_comes_back() {
        let bufs: Vec<Box<dyn BatchBuffer>> = (0..2)
            .map(|i| {
                Box::new(VecBuffer {
                    images: vec![i as f32],
                    tokens: vec![],
                }) as Box<dyn BatchBuffer>
            })
            .collect();
        let ring = BufferRing::fixed(bufs);
        let a = ring.take(&|| false).unwrap();
        let b = ring.take(&|| false).unwrap();
        assert!(ring.take(&|| true).is_none(), "a third buffer was lent");
        let first = a.buffer().images_f32().unwrap()[0];
        drop(a);
        let c = ring.take(&|| true).unwrap();
        assert_eq!(c.buffer().images_f32().unwrap()[0], first);
        drop((b, c));
    }

    #[test]
    fn bf16_rounds_to_nearest_even_and_keeps_nan() {
        assert_eq!(bf16_bits(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0)
        assert_eq!(bf16_bits(f32::from_bits(0x3F80_8000)), 0x3F80);
        assert_eq!(bf16_bits(f32::from_bits(0x3F81_8000)), 0x3F82);
        assert_eq!(bf16_bits(f32::from_bits(0x3F80_8001)), 0x3F81);
        assert_eq!(bf16_bits(f32::MAX), 0x7F80); // rounds up to inf, as torch does
        assert_eq!(bf16_bits(-0.0), 0x8000);
        assert!(f32::from_bits((bf16_bits(f32::NAN) as u32) << 16).is_nan());
    }
}
