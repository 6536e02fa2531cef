//! Separable antialiased resampling (Pillow's `ImagingResample` algorithm: horizontal pass then
//! vertical, uint8 between passes, coefficients from the same filter/support/normalisation),
//! in 14-bit fixed point so that the taps fit `i16`: the horizontal pass runs on `pmaddwd`, the
//! vertical one on `pmulhrsw` (Q7 pixels × Q14 taps, Q6 sums), both AVX2. Zero taps at the
//! ends of a window are dropped (upscaling bicubic: 4 taps, not 5). The scalar fallback does
//! the same integer arithmetic, so both paths give identical bytes. Not bit-exact with Pillow
//! (22-bit taps, 32-bit sums): a byte can differ by one rounding step per pass where the exact
//! value falls next to a rounding boundary (lossless goldens: mean 0.01/255, max 2/255).
//!
//! Output rows are handed to a callback one at a time (packed RGB8), so the caller can
//! normalise them straight into its CHW buffer while the row is in L1.

use std::cell::RefCell;

use super::crop::CropBox;

/// Resampling filter (Pillow's, antialiased when downscaling).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Filter {
    /// Pillow BICUBIC (Keys a = -0.5, support 2).
    Bicubic,
    /// Pillow BILINEAR (triangle, support 1).
    Bilinear,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bicubic => 2.0,
            Filter::Bilinear => 1.0,
        }
    }
    fn eval(self, x: f64) -> f64 {
        match self {
            Filter::Bicubic => bicubic(x),
            Filter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
        }
    }
}

fn bicubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

pub(super) const BITS: u32 = 14;
const HALF: i32 = 1 << (BITS - 1);

/// Coefficients for outputs `[o0, o0 + n)` of an `in_size → out_size` resize.
pub(super) struct Coeffs {
    /// (first input index, tap count) per output.
    bounds: Vec<(usize, usize)>,
    /// Fixed-point taps, `ksize` per output (zero-padded).
    k: Vec<i32>,
    ksize: usize,
    /// Taps packed for the AVX2 horizontal pass: per output, `ng` groups of 4 taps laid out
    /// `[k0 k1 k0 k1 k0 k1 0 0 | k2 k3 k2 k3 k2 k3 0 0]`.
    packed: Vec<[i16; 16]>,
    ng: usize,
}

fn coeffs(in_size: usize, out_size: usize, o0: usize, n: usize, filter: Filter) -> Coeffs {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ksize = support.ceil() as usize * 2 + 1;
    let mut bounds = Vec::with_capacity(n);
    let mut k = vec![0i32; n * ksize];
    let mut w = vec![0f64; ksize];
    let ss = 1.0 / filterscale;
    let one = (1u32 << BITS) as f64;
    for (oi, xx) in (o0..o0 + n).enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        let mut xmin = ((center - support + 0.5) as i64).max(0) as usize; // C (int): truncation
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let mut cnt = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, wx) in w[..cnt].iter_mut().enumerate() {
            *wx = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        let kk = &mut k[oi * ksize..oi * ksize + ksize];
        for (kx, &wx) in kk.iter_mut().zip(&w[..cnt]) {
            let v = if ww != 0.0 { wx / ww } else { wx };
            let f = v * one;
            *kx = if v < 0.0 {
                (f - 0.5) as i32
            } else {
                (f + 0.5) as i32
            };
        }
        // Drop zero taps at both ends (e.g. the 5th bicubic tap when upscaling, which sits at
        // distance >= 2): same sums, fewer multiply-adds.
        while cnt > 0 && kk[cnt - 1] == 0 {
            cnt -= 1;
        }
        let lead = kk[..cnt].iter().take_while(|&&v| v == 0).count();
        if lead > 0 {
            kk.copy_within(lead..cnt, 0);
            kk[cnt - lead..cnt].fill(0);
            xmin += lead;
            cnt -= lead;
        }
        bounds.push((xmin, cnt));
    }
    let ng = bounds
        .iter()
        .map(|&(_, c)| c.div_ceil(4))
        .max()
        .unwrap_or(1)
        .max(1);
    let mut packed = vec![[0i16; 16]; n * ng];
    for (oi, &(_, cnt)) in bounds.iter().enumerate() {
        for (t, &kx) in k[oi * ksize..oi * ksize + cnt].iter().enumerate() {
            let g = &mut packed[oi * ng + t / 4];
            let base = if t % 4 < 2 { 0 } else { 8 };
            let j = t % 2;
            let kv = kx.clamp(i16::MIN as i32, i16::MAX as i32) as i16;
            g[base + j] = kv;
            g[base + 2 + j] = kv;
            g[base + 4 + j] = kv;
        }
    }
    Coeffs {
        bounds,
        k,
        ksize,
        packed,
        ng,
    }
}

/// One vertical output byte, as the AVX2 pass computes it: per tap
/// `pmulhrsw(v << 7, k) = (v·2⁷·k + 2¹⁴) >> 15` (Q6), summed in i16, then `(s + 32) >> 6`
/// clamped to a byte.
#[inline(always)]
fn vtap(k: &[i32], px: impl Fn(usize) -> u8) -> u8 {
    let mut s = 0i16;
    for (t, &kv) in k.iter().enumerate() {
        let p = ((((px(t) as i32) << 7) * kv + (1 << 14)) >> 15) as i16;
        s = s.wrapping_add(p);
    }
    (s.wrapping_add(32) >> 6).clamp(0, 255) as u8
}

#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> BITS).clamp(0, 255) as u8
}

thread_local! {
    /// (horizontal-pass rows, one output row, coefficient cache).
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>, CoeffCache)> = RefCell::new((Vec::new(), Vec::new(), CoeffCache::default()));
}

type CoeffKey = (usize, usize, usize, usize, Filter);

/// Per-thread cache of coefficient tables (crop sizes repeat across images), emptied when it
/// holds more than `CACHE_BYTES`.
#[derive(Default)]
struct CoeffCache {
    map: std::collections::HashMap<CoeffKey, std::rc::Rc<Coeffs>>,
    bytes: usize,
}

const CACHE_BYTES: usize = 8 << 20;

impl Coeffs {
    fn heap_bytes(&self) -> usize {
        self.bounds.len() * std::mem::size_of::<(usize, usize)>()
            + self.k.len() * 4
            + self.packed.len() * 32
    }
}

impl CoeffCache {
    fn get(
        &mut self,
        in_size: usize,
        out_size: usize,
        o0: usize,
        n: usize,
        filter: Filter,
    ) -> std::rc::Rc<Coeffs> {
        let key = (in_size, out_size, o0, n, filter);
        if let Some(c) = self.map.get(&key) {
            return c.clone();
        }
        let c = std::rc::Rc::new(coeffs(in_size, out_size, o0, n, filter));
        let b = c.heap_bytes();
        if self.bytes + b > CACHE_BYTES {
            self.map.clear();
            self.bytes = 0;
        }
        self.bytes += b;
        self.map.insert(key, c.clone());
        c
    }
}

/// Inputs of the two resampling passes.
struct Passes<'a> {
    src: &'a [u8],
    stride: usize,
    /// First crop column (pixels).
    x0: usize,
    /// First source row feeding the window.
    row0: usize,
    rows: usize,
    row_len: usize,
    /// First window column in output pixels (used when there is no horizontal pass).
    wx: usize,
    hc: Option<&'a Coeffs>,
    vc: Option<&'a Coeffs>,
    /// First crop row feeding the window (bounds of `vc` are relative to the crop).
    r0: usize,
}

/// Resize the `crop` of the packed RGB8 image `src` (row stride `stride` bytes) to
/// `out_w × out_h` and call `emit(y, row)` for each row `y` of the output window
/// `win = (x, y, w, h)`, `row` being `w * 3` bytes of packed RGB8.
#[allow(clippy::too_many_arguments)]
pub(super) fn resample_rows<F: FnMut(usize, &[u8])>(
    src: &[u8],
    stride: usize,
    crop: CropBox,
    out_w: u32,
    out_h: u32,
    win: (u32, u32, u32, u32),
    filter: Filter,
    mut emit: F,
) {
    let (cw, ch) = (crop.width as usize, crop.height as usize);
    let (x0, y0) = (crop.left as usize, crop.top as usize);
    let (wx, wy, ww, wh) = (
        win.0 as usize,
        win.1 as usize,
        win.2 as usize,
        win.3 as usize,
    );
    if ww == 0 || wh == 0 {
        return;
    }
    let need_h = cw != out_w as usize;
    let need_v = ch != out_h as usize;
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (tmp, rowbuf, cache) = &mut *s;
        // Rows of the crop feeding the window's vertical taps.
        let vc = need_v.then(|| cache.get(ch, out_h as usize, wy, wh, filter));
        let (r0, r1) = match &vc {
            Some(c) => (
                c.bounds.iter().map(|b| b.0).min().unwrap_or(0),
                c.bounds.iter().map(|b| b.0 + b.1).max().unwrap_or(0),
            ),
            None => (wy, wy + wh),
        };
        let hc = need_h.then(|| cache.get(cw, out_w as usize, wx, ww, filter));
        let rows = r1 - r0;
        let row_len = ww * 3;
        // +16: the AVX2 pass stores 16 bytes per 4 output pixels.
        if tmp.len() < rows * row_len + 16 {
            tmp.resize(rows * row_len + 16, 0);
        }
        if rowbuf.len() < row_len {
            rowbuf.resize(row_len, 0);
        }
        let job = Passes {
            src,
            stride,
            x0,
            row0: y0 + r0,
            rows,
            row_len,
            wx,
            hc: hc.as_deref(),
            vc: vc.as_deref(),
            r0,
        };
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is available (checked at run time).
                unsafe { run_passes_avx2(&job, tmp, rowbuf, &mut emit) };
                return;
            }
        }
        horizontal_scalar(&job, tmp);
        vertical_scalar(&job, tmp, rowbuf, &mut emit);
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_passes_avx2<F: FnMut(usize, &[u8])>(
    job: &Passes,
    tmp: &mut [u8],
    rowbuf: &mut [u8],
    emit: &mut F,
) {
    match job.hc {
        Some(hc) => horizontal_avx2(job, hc, tmp),
        None => horizontal_scalar(job, tmp),
    }
    match job.vc {
        Some(vc) => vertical_avx2(job, vc, tmp, rowbuf, emit),
        None => vertical_scalar(job, tmp, rowbuf, emit),
    }
}

/// Horizontal pass: one broadcast 16-byte load + `pshufb` + `pmaddwd` per 4 taps and output
/// pixel; four output pixels are reduced, rounded and packed together.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horizontal_avx2(job: &Passes, hc: &Coeffs, tmp: &mut [u8]) {
    // Fixed group counts get fully unrolled inner loops.
    match hc.ng {
        1 => horizontal_avx2_ng::<1>(job, hc, tmp),
        2 => horizontal_avx2_ng::<2>(job, hc, tmp),
        3 => horizontal_avx2_ng::<3>(job, hc, tmp),
        _ => horizontal_avx2_ng::<0>(job, hc, tmp),
    }
}

/// `NG`: groups of 4 taps per output (`hc.ng`), or 0 for "read it at run time".
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horizontal_avx2_ng<const NG: usize>(job: &Passes, hc: &Coeffs, tmp: &mut [u8]) {
    use std::arch::x86_64::*;
    let row_len = job.row_len;
    let src = job.src;
    let ng = if NG > 0 { NG } else { hc.ng };
    assert_eq!(ng, hc.ng);
    let n = hc.bounds.len();
    // Lane 0: pixels 0, 1 → i16 [r0 r1 g0 g1 b0 b1 0 0]; lane 1: pixels 2, 3.
    let ctrl = _mm256_setr_epi8(
        0, -1, 3, -1, 1, -1, 4, -1, 2, -1, 5, -1, -1, -1, -1, -1, //
        6, -1, 9, -1, 7, -1, 10, -1, 8, -1, 11, -1, -1, -1, -1, -1,
    );
    // Rounding term, in lane 0 only (the lanes are summed).
    let init = _mm256_setr_epi32(HALF, HALF, HALF, 0, 0, 0, 0, 0);
    // [p0 p2 p1 p3] (4 bytes each: r g b 0) → [p0 p1 p2 p3] rgb.
    let compact = _mm_setr_epi8(0, 1, 2, 8, 9, 10, 4, 5, 6, 12, 13, 14, -1, -1, -1, -1);
    let tp = tmp.as_mut_ptr();
    assert!(tmp.len() >= job.rows * row_len + 16);
    assert!(hc.packed.len() >= n * ng);
    if job.rows == 0 || n == 0 {
        return;
    }
    // Leading outputs whose loads stay inside `src` for every row (checked on the last row).
    let last_base = (job.row0 + job.rows - 1) * job.stride + job.x0 * 3;
    let safe = |j: usize| last_base + hc.bounds[j].0 * 3 + (ng - 1) * 12 + 16 <= src.len();
    let n_fast = (0..n).position(|j| !safe(j)).unwrap_or(n);
    let n4 = n_fast / 4 * 4;
    let kp = hc.packed.as_ptr() as *const __m256i;
    let sp0 = src.as_ptr();
    for r in 0..job.rows {
        let base = (job.row0 + r) * job.stride + job.x0 * 3;
        let orow = tp.add(r * row_len);
        let sp = sp0.add(base);
        let pixel = |j: usize| -> __m256i {
            let p = sp.add(hc.bounds.get_unchecked(j).0 * 3);
            let k = kp.add(j * ng);
            let mut acc = init;
            for g in 0..ng {
                let v =
                    _mm256_broadcastsi128_si256(_mm_loadu_si128(p.add(g * 12) as *const __m128i));
                acc = _mm256_add_epi32(
                    acc,
                    _mm256_madd_epi16(_mm256_shuffle_epi8(v, ctrl), _mm256_loadu_si256(k.add(g))),
                );
            }
            acc
        };
        let mut j = 0;
        while j < n4 {
            let (a0, a1, a2, a3) = (pixel(j), pixel(j + 1), pixel(j + 2), pixel(j + 3));
            let s01 = _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(a0, a1),
                _mm256_permute2x128_si256::<0x31>(a0, a1),
            );
            let s23 = _mm256_add_epi32(
                _mm256_permute2x128_si256::<0x20>(a2, a3),
                _mm256_permute2x128_si256::<0x31>(a2, a3),
            );
            let s01 = _mm256_srai_epi32::<{ BITS as i32 }>(s01);
            let s23 = _mm256_srai_epi32::<{ BITS as i32 }>(s23);
            // lane 0: [p0 p2], lane 1: [p1 p3] (i16) → bytes
            let p16 = _mm256_packs_epi32(s01, s23);
            let p8 = _mm256_packus_epi16(p16, p16);
            let q = _mm256_castsi256_si128(_mm256_permute4x64_epi64::<0b1000>(p8));
            // 16-byte store, 12 used; the rest is overwritten next (or padding).
            _mm_storeu_si128(
                orow.add(j * 3) as *mut __m128i,
                _mm_shuffle_epi8(q, compact),
            );
            j += 4;
        }
        while j < n_fast {
            let acc = pixel(j);
            let s = _mm_add_epi32(
                _mm256_castsi256_si128(acc),
                _mm256_extracti128_si256::<1>(acc),
            );
            let sh = _mm_srai_epi32::<{ BITS as i32 }>(s);
            let p = _mm_packus_epi16(_mm_packs_epi32(sh, sh), sh);
            (orow.add(j * 3) as *mut u32).write_unaligned(_mm_cvtsi128_si32(p) as u32);
            j += 1;
        }
        for j in n_fast..n {
            let (xmin, cnt) = hc.bounds[j];
            let first = base + xmin * 3;
            let k = &hc.k[j * hc.ksize..j * hc.ksize + cnt];
            let (mut a, mut b, mut c) = (HALF, HALF, HALF);
            for (t, &kv) in k.iter().enumerate() {
                let o = first + t * 3;
                a += src[o] as i32 * kv;
                b += src[o + 1] as i32 * kv;
                c += src[o + 2] as i32 * kv;
            }
            let out = orow.add(j * 3);
            *out = clip8(a);
            *out.add(1) = clip8(b);
            *out.add(2) = clip8(c);
        }
    }
}

/// Vertical pass: 16 bytes at a time, one `pmulhrsw` per tap (see [`vtap`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn vertical_avx2<F: FnMut(usize, &[u8])>(
    job: &Passes,
    vc: &Coeffs,
    tmp: &[u8],
    rowbuf: &mut [u8],
    emit: &mut F,
) {
    use std::arch::x86_64::*;
    let row_len = job.row_len;
    let ks = vc.ksize;
    let tp = tmp.as_ptr();
    let round6 = _mm256_set1_epi16(32);
    let rb = &mut rowbuf[..row_len];
    for (y, &(ymin, cnt)) in vc.bounds.iter().enumerate() {
        let k = &vc.k[y * ks..y * ks + cnt];
        let base = (ymin - job.r0) * row_len;
        assert!(base + cnt * row_len <= tmp.len());
        let mut x = 0;
        while x + 16 <= row_len {
            // Q7 data × Q14 taps with `pmulhrsw` → Q6 partial sums (i16).
            let mut acc = _mm256_setzero_si256();
            for (t, &kv) in k.iter().enumerate() {
                let a = _mm256_cvtepu8_epi16(_mm_loadu_si128(
                    tp.add(base + t * row_len + x) as *const __m128i
                ));
                acc = _mm256_add_epi16(
                    acc,
                    _mm256_mulhrs_epi16(_mm256_slli_epi16::<7>(a), _mm256_set1_epi16(kv as i16)),
                );
            }
            let v = _mm256_srai_epi16::<6>(_mm256_add_epi16(acc, round6));
            let p8 = _mm256_packus_epi16(v, v);
            let p = _mm256_permute4x64_epi64::<0b1000>(p8);
            _mm_storeu_si128(
                rb.as_mut_ptr().add(x) as *mut __m128i,
                _mm256_castsi256_si128(p),
            );
            x += 16;
        }
        for (xi, d) in rb.iter_mut().enumerate().skip(x) {
            *d = vtap(k, |t| tmp[base + t * row_len + xi]);
        }
        emit(y, rb);
    }
}

#[inline(always)]
fn horizontal_scalar(job: &Passes, tmp: &mut [u8]) {
    let row_len = job.row_len;
    match job.hc {
        Some(hc) => {
            let ks = hc.ksize;
            for r in 0..job.rows {
                let off = (job.row0 + r) * job.stride + job.x0 * 3;
                let srow = &job.src[off..];
                let trow = &mut tmp[r * row_len..(r + 1) * row_len];
                for ((out, &(xmin, cnt)), k) in trow
                    .chunks_exact_mut(3)
                    .zip(&hc.bounds)
                    .zip(hc.k.chunks_exact(ks))
                {
                    let p = &srow[xmin * 3..(xmin + cnt) * 3];
                    let (mut a, mut b, mut c) = (HALF, HALF, HALF);
                    for (px, &kv) in p.chunks_exact(3).zip(&k[..cnt]) {
                        a += px[0] as i32 * kv;
                        b += px[1] as i32 * kv;
                        c += px[2] as i32 * kv;
                    }
                    out[0] = clip8(a);
                    out[1] = clip8(b);
                    out[2] = clip8(c);
                }
            }
        }
        None => {
            for r in 0..job.rows {
                let off = (job.row0 + r) * job.stride + (job.x0 + job.wx) * 3;
                tmp[r * row_len..(r + 1) * row_len].copy_from_slice(&job.src[off..off + row_len]);
            }
        }
    }
}

#[inline(always)]
fn vertical_scalar<F: FnMut(usize, &[u8])>(
    job: &Passes,
    tmp: &[u8],
    rowbuf: &mut [u8],
    emit: &mut F,
) {
    let row_len = job.row_len;
    match job.vc {
        Some(vc) => {
            let ks = vc.ksize;
            let rb = &mut rowbuf[..row_len];
            for (y, (&(ymin, cnt), k)) in vc.bounds.iter().zip(vc.k.chunks_exact(ks)).enumerate() {
                let base = (ymin - job.r0) * row_len;
                for (xi, d) in rb.iter_mut().enumerate() {
                    *d = vtap(&k[..cnt], |t| tmp[base + t * row_len + xi]);
                }
                emit(y, rb);
            }
        }
        None => {
            for y in 0..job.rows {
                emit(y, &tmp[y * row_len..(y + 1) * row_len]);
            }
        }
    }
}
