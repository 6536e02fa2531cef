//! Tensors as host bytes, and the one reduction every CPU backend uses: inputs added in rank
//! order 0..W-1 (bf16 accumulated in f32 and rounded once), so every rank computes the same bits
//! and a run repeats them (as a running sum passed from rank to rank: `acc_*`).

use crate::error::{Error, Result};
use crate::ReduceOp;
use tch::{Device, Kind, Tensor};

/// The element types the CPU collectives move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dtype {
    F32,
    Bf16,
    F64,
    I64,
}

impl Dtype {
    pub(crate) fn of(t: &Tensor) -> Result<Self> {
        Ok(match t.kind() {
            Kind::Float => Dtype::F32,
            Kind::BFloat16 => Dtype::Bf16,
            Kind::Double => Dtype::F64,
            Kind::Int64 => Dtype::I64,
            k => {
                return Err(Error::Invalid(format!(
                    "collectives support f32, bf16, f64 and i64 tensors, not {k:?}"
                )))
            }
        })
    }

    pub(crate) fn size(self) -> usize {
        match self {
            Dtype::Bf16 => 2,
            Dtype::F32 => 4,
            Dtype::F64 | Dtype::I64 => 8,
        }
    }

    pub(crate) fn code(self) -> u8 {
        self as u8
    }

    pub(crate) fn from_code(c: u8) -> Option<Self> {
        [Dtype::F32, Dtype::Bf16, Dtype::F64, Dtype::I64]
            .into_iter()
            .find(|d| d.code() == c)
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::Bf16 => "bf16",
            Dtype::F64 => "f64",
            Dtype::I64 => "i64",
        }
    }

    /// Reductions are defined for floats (sum, mean) and i64 (sum only: a mean would truncate).
    pub(crate) fn check_reduce(self, op: ReduceOp) -> Result<()> {
        if self == Dtype::I64 && op == ReduceOp::Mean {
            return Err(Error::Invalid(
                "a mean of i64 tensors is not supported (it would truncate)".into(),
            ));
        }
        Ok(())
    }
}

/// A contiguous CPU tensor holding `t`'s values: `t` itself (sharing storage) when it already is
/// one, else a copy that [`write_back`] returns to `t`.
pub(crate) fn host(t: &Tensor) -> Tensor {
    if t.device() == Device::Cpu && t.is_contiguous() {
        t.shallow_clone()
    } else {
        tch::no_grad(|| t.to_device(Device::Cpu).contiguous())
    }
}

/// Copies `h` back into `t` when `h` was a staging copy (in-place collectives).
pub(crate) fn write_back(t: &mut Tensor, h: &Tensor) {
    if t.device() != Device::Cpu || !t.is_contiguous() {
        tch::no_grad(|| t.copy_(h));
    }
}

/// The bytes of a contiguous CPU tensor.
pub(crate) fn bytes(t: &Tensor) -> &[u8] {
    let n = t.numel() * t.kind().elt_size_in_bytes();
    if n == 0 {
        return &[];
    }
    // SAFETY: `t` is contiguous on the CPU (callers pass `host` results or fresh tensors), so
    // its `n` bytes start at `data_ptr` and live as long as the borrow of `t`.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const u8, n) }
}

/// The bytes of a contiguous CPU tensor, writable.
pub(crate) fn bytes_mut(t: &mut Tensor) -> &mut [u8] {
    let n = t.numel() * t.kind().elt_size_in_bytes();
    if n == 0 {
        return &mut [];
    }
    // SAFETY: as in `bytes`; the `&mut` borrow keeps other Rust views of this handle away.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut u8, n) }
}

/// Element boundaries of chunk `c` when `n` elements are split over `w` ranks as evenly as
/// possible (chunks may be empty).
pub(crate) fn chunk_bounds(n: usize, w: usize, c: usize) -> (usize, usize) {
    let at = |c: usize| (c as u128 * n as u128 / w as u128) as usize;
    (at(c), at(c + 1))
}

/// bf16 → f32 (exact).
fn bf16_to_f32(b: [u8; 2]) -> f32 {
    f32::from_bits((u16::from_le_bytes(b) as u32) << 16)
}

/// f32 → bf16, round to nearest even, NaN kept quiet: c10::BFloat16's rounding, so a bf16
/// result equals torch's `(sum in f32).to(bfloat16)`.
fn f32_to_bf16(x: f32) -> [u8; 2] {
    if x.is_nan() {
        return 0x7FC0u16.to_le_bytes();
    }
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
    (rounded as u16).to_le_bytes()
}

/// How the reduction adds and averages: f32 (for f32 and bf16), f64, i64.
trait Acc: Copy {
    fn plus(self, other: Self) -> Self;
    /// The mean of `n` inputs from their sum (never asked of i64: `check_reduce` refuses it).
    fn over(self, n: usize) -> Self;
}

/// An element type reduced as itself, stored little-endian.
trait Le: Acc {
    const SIZE: usize;
    fn load(b: &[u8]) -> Self;
    fn store(self, out: &mut [u8]);
}

macro_rules! le_elem {
    ($t:ty, $plus:expr, $over:expr) => {
        impl Acc for $t {
            fn plus(self, other: Self) -> Self {
                let plus: fn($t, $t) -> $t = $plus;
                plus(self, other)
            }
            fn over(self, n: usize) -> Self {
                let over: fn($t, usize) -> $t = $over;
                over(self, n)
            }
        }
        impl Le for $t {
            const SIZE: usize = std::mem::size_of::<$t>();
            fn load(b: &[u8]) -> Self {
                <$t>::from_le_bytes(b.try_into().unwrap())
            }
            fn store(self, out: &mut [u8]) {
                out.copy_from_slice(&self.to_le_bytes())
            }
        }
    };
}

le_elem!(f32, |a, b| a + b, |a, n| a / n as f32);
le_elem!(f64, |a, b| a + b, |a, n| a / n as f64);
le_elem!(i64, i64::wrapping_add, |a, _| a);

/// The running sum of a chain reduction as it travels from rank to rank (see `tcp.rs`): the
/// accumulators' little-endian bytes, f32 for bf16 elements and the element type otherwise.
/// Starting from rank 0's values, adding each next rank's in order and finishing once gives
/// exactly the sum in rank order 0..W−1 (bf16 rounded once, a mean dividing the sum), the same
/// bits on every rank and from run to run.
pub(crate) fn acc_size(dtype: Dtype) -> usize {
    match dtype {
        Dtype::Bf16 => 4,
        d => d.size(),
    }
}

/// The accumulators of `input`'s elements (rank 0's values, not 0 + them: -0.0 stays -0.0).
pub(crate) fn acc_start(dtype: Dtype, input: &[u8]) -> Vec<u8> {
    match dtype {
        Dtype::Bf16 => input
            .chunks_exact(2)
            .flat_map(|c| bf16_to_f32(c.try_into().expect("2 bytes")).to_le_bytes())
            .collect(),
        _ => input.to_vec(),
    }
}

/// `acc += input`, elementwise.
pub(crate) fn acc_add(dtype: Dtype, acc: &mut [u8], input: &[u8]) {
    match dtype {
        Dtype::F32 => add::<f32>(acc, input, 4, f32::load),
        Dtype::F64 => add::<f64>(acc, input, 8, f64::load),
        Dtype::I64 => add::<i64>(acc, input, 8, i64::load),
        Dtype::Bf16 => add::<f32>(acc, input, 2, |b| bf16_to_f32(b.try_into().unwrap())),
    }
}

/// `out` = the accumulators (÷ `n` for a mean), rounded once to the element type.
pub(crate) fn acc_finish(dtype: Dtype, op: ReduceOp, n: usize, acc: &[u8], out: &mut [u8]) {
    let mean = op == ReduceOp::Mean;
    match dtype {
        Dtype::F32 => finish::<f32>(acc, out, 4, mean, n, f32::store),
        Dtype::F64 => finish::<f64>(acc, out, 8, mean, n, f64::store),
        Dtype::I64 => finish::<i64>(acc, out, 8, mean, n, i64::store),
        Dtype::Bf16 => finish::<f32>(acc, out, 2, mean, n, |a, o| {
            o.copy_from_slice(&f32_to_bf16(a))
        }),
    }
}

fn add<A: Le>(acc: &mut [u8], input: &[u8], size: usize, load: impl Fn(&[u8]) -> A) {
    for (a, x) in acc.chunks_exact_mut(A::SIZE).zip(input.chunks_exact(size)) {
        A::load(a).plus(load(x)).store(a);
    }
}

fn finish<A: Le>(
    acc: &[u8],
    out: &mut [u8],
    size: usize,
    mean: bool,
    n: usize,
    store: impl Fn(A, &mut [u8]),
) {
    for (a, o) in acc.chunks_exact(A::SIZE).zip(out.chunks_exact_mut(size)) {
        let a = A::load(a);
        store(if mean { a.over(n) } else { a }, o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bf16_rounding_matches_torch() {
        let xs: Vec<f32> = vec![
            0.0,
            -0.0,
            1.0,
            f32::from_bits(0x3F80_8000), // halfway: ties to even (down)
            f32::from_bits(0x3F81_8000), // halfway: ties to even (up)
            -3.3e-3,
            65504.0,
            3.4e38,
            f32::INFINITY,
            f32::NEG_INFINITY,
            1e-40,
            0.1,
            -7.77,
        ];
        let t = Tensor::from_slice(&xs).to_kind(Kind::BFloat16);
        let ours: Vec<u8> = xs.iter().flat_map(|&x| f32_to_bf16(x)).collect();
        assert_eq!(bytes(&t), &ours[..]);
        let back: Vec<f32> = bytes(&t)
            .chunks_exact(2)
            .map(|c| bf16_to_f32(c.try_into().unwrap()))
            .collect();
        let torch_back = Vec::<f32>::try_from(t.to_kind(Kind::Float)).unwrap();
        assert_eq!(
            back.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
            torch_back.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
        );
    }

    #[test]
    fn chunks_cover_everything() {
        for n in [0, 1, 5, 7, 100] {
            for w in 1..6 {
                let mut next = 0;
                for c in 0..w {
                    let (a, b) = chunk_bounds(n, w, c);
                    assert_eq!(a, next);
                    assert!(b >= a);
                    next = b;
                }
                assert_eq!(next, n);
            }
        }
    }
}
