//! timm's `RandomErasing(mode="pixel")`: the boxes' draws, and their N(0, 1) noise from a small,
//! fast generator of each box's own (xoshiro; Box–Muller in AVX2), seeded by one draw of the
//! caller's RNG.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use super::crop::{py_round, uniform, CropBox};

/// timm `RandomErasing(probability, mode="pixel", max_count)` on one normalised CHW image:
/// with probability `p`, `count` boxes (`count` uniform in `1..=max_count`), each of area
/// uniform in [0.02, 1/3]·area/count and log aspect uniform in [ln 0.3, ln 1/0.3], 10 attempts
/// (accepted if `w < W` and `h < H`), filled with per-pixel N(0, 1). Returns the boxes erased.
pub fn random_erasing<R: Rng + ?Sized>(
    chw: &mut [f32],
    chans: usize,
    img_h: usize,
    img_w: usize,
    p: f64,
    max_count: usize,
    rng: &mut R,
) -> Vec<CropBox> {
    let mut boxes = erasing_boxes(img_h, img_w, p, max_count, rng);
    for (b, fill) in &mut boxes {
        let (top, left, h, w) = (
            b.top as usize,
            b.left as usize,
            b.height as usize,
            b.width as usize,
        );
        for c in 0..chans {
            for y in top..top + h {
                fill.fill(
                    &mut chw[(c * img_h + y) * img_w + left..(c * img_h + y) * img_w + left + w],
                );
            }
        }
    }
    boxes.into_iter().map(|(b, _)| b).collect()
}

/// The random draws of [`random_erasing`]: the boxes, each with its noise generator (seeded
/// from `rng` right after the box's position, one draw).
pub(super) fn erasing_boxes<R: Rng + ?Sized>(
    img_h: usize,
    img_w: usize,
    p: f64,
    max_count: usize,
    rng: &mut R,
) -> Vec<(CropBox, NormalFill)> {
    let mut boxes = Vec::new();
    if rng.random::<f64>() > p {
        return boxes;
    }
    let area = (img_h * img_w) as f64;
    let max_count = max_count.max(1);
    let count = if max_count == 1 {
        1
    } else {
        rng.random_range(1..=max_count)
    };
    let log_aspect = (0.3f64.ln(), (1.0 / 0.3f64).ln());
    for _ in 0..count {
        for _ in 0..10 {
            let target_area = uniform(rng, 0.02, 1.0 / 3.0) * area / count as f64;
            let aspect = uniform(rng, log_aspect.0, log_aspect.1).exp();
            let h = py_round((target_area * aspect).sqrt());
            let w = py_round((target_area / aspect).sqrt());
            if w < img_w as i64 && h < img_h as i64 {
                let (h, w) = (h as usize, w as usize);
                let top = rng.random_range(0..=img_h - h);
                let left = rng.random_range(0..=img_w - w);
                let fill = NormalFill::new(rng);
                boxes.push((
                    CropBox {
                        top: top as u32,
                        left: left as u32,
                        height: h as u32,
                        width: w as u32,
                    },
                    fill,
                ));
                break;
            }
        }
    }
    boxes
}

/// xoshiro256++ (Blackman & Vigna): a small, fast generator for the erasing noise.
struct Xoshiro256pp([u64; 4]);

impl Xoshiro256pp {
    fn from_rng<R: Rng + ?Sized>(rng: &mut R) -> Self {
        // SplitMix64 expansion of one 64-bit seed: never all-zero.
        let mut z = rng.random::<u64>();
        let mut next = || {
            z = z.wrapping_add(0x9E3779B97F4A7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D049BB133111EB);
            x ^ (x >> 31)
        };
        Xoshiro256pp([next(), next(), next(), next()])
    }
}

impl rand::RngCore for Xoshiro256pp {
    #[inline]
    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let r = s[0].wrapping_add(s[3]).rotate_left(23).wrapping_add(s[0]);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        r
    }
    #[inline]
    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        for chunk in dst.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// N(0, 1) noise: 4-lane xoshiro256+ and Box–Muller in AVX2/FMA (f32 polynomial `ln`, `sin`,
/// `cos` accurate to ~1e-7; the uniforms have 24 bits, so |z| <= 5.8), or the ziggurat
/// (`rand_distr::StandardNormal`) on xoshiro256++ without AVX2.
pub(super) struct NormalFill {
    scalar: Xoshiro256pp,
    /// 4 lanes × 4 words of xoshiro256+ state.
    lanes: [[u64; 4]; 4],
    simd: bool,
}

impl NormalFill {
    fn new<R: Rng + ?Sized>(rng: &mut R) -> Self {
        let mut scalar = Xoshiro256pp::from_rng(rng);
        let mut lanes = [[0u64; 4]; 4];
        for w in lanes.iter_mut() {
            for l in w.iter_mut() {
                *l = rand::RngCore::next_u64(&mut scalar);
            }
        }
        #[cfg(target_arch = "x86_64")]
        let simd = std::arch::is_x86_feature_detected!("avx2")
            && std::arch::is_x86_feature_detected!("fma");
        #[cfg(not(target_arch = "x86_64"))]
        let simd = false;
        NormalFill {
            scalar,
            lanes,
            simd,
        }
    }

    pub(super) fn fill(&mut self, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        {
            if self.simd {
                let mut chunks = out.chunks_exact_mut(16);
                for c in &mut chunks {
                    // SAFETY: AVX2 and FMA are available (checked in `new`).
                    unsafe { self.normals16(c.try_into().unwrap()) };
                }
                let rest = chunks.into_remainder();
                if !rest.is_empty() {
                    let mut tmp = [0f32; 16];
                    // SAFETY: as above.
                    unsafe { self.normals16(&mut tmp) };
                    let n = rest.len();
                    rest.copy_from_slice(&tmp[..n]);
                }
                return;
            }
        }
        for v in out {
            *v = <StandardNormal as Distribution<f64>>::sample(&StandardNormal, &mut self.scalar)
                as f32;
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn normals16(&mut self, out: &mut [f32; 16]) {
        use std::arch::x86_64::*;
        let ld = |w: &[u64; 4]| _mm256_loadu_si256(w.as_ptr() as *const __m256i);
        let (mut s0, mut s1, mut s2, mut s3) = (
            ld(&self.lanes[0]),
            ld(&self.lanes[1]),
            ld(&self.lanes[2]),
            ld(&self.lanes[3]),
        );
        let mut next = || {
            let r = _mm256_add_epi64(s0, s3);
            let t = _mm256_slli_epi64::<17>(s1);
            s2 = _mm256_xor_si256(s2, s0);
            s3 = _mm256_xor_si256(s3, s1);
            s1 = _mm256_xor_si256(s1, s2);
            s0 = _mm256_xor_si256(s0, s3);
            s2 = _mm256_xor_si256(s2, t);
            s3 = _mm256_or_si256(_mm256_slli_epi64::<45>(s3), _mm256_srli_epi64::<19>(s3));
            r
        };
        let (b1, b2) = (next(), next());
        let st = |w: &mut [u64; 4], v| _mm256_storeu_si256(w.as_mut_ptr() as *mut __m256i, v);
        st(&mut self.lanes[0], s0);
        st(&mut self.lanes[1], s1);
        st(&mut self.lanes[2], s2);
        st(&mut self.lanes[3], s3);
        // Top 24 bits of each 32-bit half: u1 in (0, 1], u2 in [0, 1).
        let k24 = _mm256_set1_ps(1.0 / 16777216.0);
        let u1 = _mm256_mul_ps(
            _mm256_cvtepi32_ps(_mm256_add_epi32(
                _mm256_srli_epi32::<8>(b1),
                _mm256_set1_epi32(1),
            )),
            k24,
        );
        let u2 = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32::<8>(b2)), k24);
        // ln(u1) = e·ln2 + ln(m), m in [sqrt(1/2), sqrt(2)): ln(m) = 2·atanh((m-1)/(m+1)).
        let bits = _mm256_castps_si256(u1);
        let mut e = _mm256_sub_epi32(_mm256_srli_epi32::<23>(bits), _mm256_set1_epi32(127));
        let mut m = _mm256_castsi256_ps(_mm256_or_si256(
            _mm256_and_si256(bits, _mm256_set1_epi32(0x007F_FFFF)),
            _mm256_set1_epi32(0x3F80_0000),
        ));
        let big = _mm256_cmp_ps::<_CMP_GT_OQ>(m, _mm256_set1_ps(std::f32::consts::SQRT_2));
        m = _mm256_blendv_ps(m, _mm256_mul_ps(m, _mm256_set1_ps(0.5)), big);
        e = _mm256_sub_epi32(e, _mm256_castps_si256(big)); // mask is -1 where halved
        let one = _mm256_set1_ps(1.0);
        let sv = _mm256_div_ps(_mm256_sub_ps(m, one), _mm256_add_ps(m, one));
        let s2v = _mm256_mul_ps(sv, sv);
        let mut p = _mm256_set1_ps(1.0 / 9.0);
        p = _mm256_fmadd_ps(p, s2v, _mm256_set1_ps(1.0 / 7.0));
        p = _mm256_fmadd_ps(p, s2v, _mm256_set1_ps(1.0 / 5.0));
        p = _mm256_fmadd_ps(p, s2v, _mm256_set1_ps(1.0 / 3.0));
        p = _mm256_fmadd_ps(p, s2v, one);
        let lnm = _mm256_mul_ps(_mm256_add_ps(sv, sv), p);
        let ln = _mm256_fmadd_ps(
            _mm256_cvtepi32_ps(e),
            _mm256_set1_ps(std::f32::consts::LN_2),
            lnm,
        );
        let r = _mm256_sqrt_ps(_mm256_mul_ps(ln, _mm256_set1_ps(-2.0)));
        // Angle 2π(u2 - 1/2) = 2a with a in [-π/2, π/2): sin 2a = 2 sin a cos a, cos 2a = 1 - 2 sin² a.
        let a = _mm256_mul_ps(
            _mm256_sub_ps(u2, _mm256_set1_ps(0.5)),
            _mm256_set1_ps(std::f32::consts::PI),
        );
        let a2 = _mm256_mul_ps(a, a);
        let mut sp = _mm256_set1_ps(-1.0 / 39916800.0);
        sp = _mm256_fmadd_ps(sp, a2, _mm256_set1_ps(1.0 / 362880.0));
        sp = _mm256_fmadd_ps(sp, a2, _mm256_set1_ps(-1.0 / 5040.0));
        sp = _mm256_fmadd_ps(sp, a2, _mm256_set1_ps(1.0 / 120.0));
        sp = _mm256_fmadd_ps(sp, a2, _mm256_set1_ps(-1.0 / 6.0));
        sp = _mm256_fmadd_ps(sp, a2, one);
        let sin_a = _mm256_mul_ps(sp, a);
        let mut cp = _mm256_set1_ps(1.0 / 479001600.0);
        cp = _mm256_fmadd_ps(cp, a2, _mm256_set1_ps(-1.0 / 3628800.0));
        cp = _mm256_fmadd_ps(cp, a2, _mm256_set1_ps(1.0 / 40320.0));
        cp = _mm256_fmadd_ps(cp, a2, _mm256_set1_ps(-1.0 / 720.0));
        cp = _mm256_fmadd_ps(cp, a2, _mm256_set1_ps(1.0 / 24.0));
        cp = _mm256_fmadd_ps(cp, a2, _mm256_set1_ps(-0.5));
        let cos_a = _mm256_fmadd_ps(cp, a2, one);
        let sin2 = _mm256_mul_ps(_mm256_add_ps(sin_a, sin_a), cos_a);
        let cos2 = _mm256_fnmadd_ps(_mm256_add_ps(sin_a, sin_a), sin_a, one);
        _mm256_storeu_ps(out.as_mut_ptr(), _mm256_mul_ps(r, cos2));
        _mm256_storeu_ps(out.as_mut_ptr().add(8), _mm256_mul_ps(r, sin2));
    }
}
