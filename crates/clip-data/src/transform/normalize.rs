//! `ToTensor` + `Normalize(mean, std)` on packed RGB8 rows, into three f32 planes (AVX2), and
//! the streaming stores that write the output past the cache.

/// OpenAI CLIP normalisation mean (RGB).
pub const OPENAI_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP normalisation std (RGB).
#[allow(clippy::excessive_precision)] // OpenCLIP's digits, verbatim
pub const OPENAI_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Normalisation as one FMA per value: `v * scale[c] + bias[c]` (within 2 ulp of torchvision's
/// `(v / 255 - mean[c]) / std[c]`).
#[derive(Clone, Debug)]
pub(super) struct Normalize {
    /// The FMA's result for each channel and byte value.
    lut: Vec<[f32; 256]>,
    /// `1 / (255 * std[c])`.
    scale: [f32; 3],
    /// `-mean[c] / std[c]`.
    bias: [f32; 3],
}

impl Normalize {
    pub(super) fn new(mean: [f32; 3], std: [f32; 3]) -> Normalize {
        let scale = std.map(|s| (1.0 / (255.0 * s as f64)) as f32);
        let bias = [0, 1, 2].map(|c| (-(mean[c] as f64) / std[c] as f64) as f32);
        let lut = (0..3)
            .map(|c| {
                let mut t = [0f32; 256];
                for (v, o) in t.iter_mut().enumerate() {
                    *o = (v as f32).mul_add(scale[c], bias[c]);
                }
                t
            })
            .collect();
        Normalize { lut, scale, bias }
    }

    /// Packed RGB8 row → three normalised f32 plane rows (as the LUT). `stream`: write `a`, `b`,
    /// `c` with streaming stores where aligned (they are not read again soon).
    pub(super) fn row(
        &self,
        row: &[u8],
        a: &mut [f32],
        b: &mut [f32],
        c: &mut [f32],
        stream: bool,
    ) {
        let n = a.len();
        assert!(row.len() == 3 * n && b.len() == n && c.len() == n);
        let mut done = 0;
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                // SAFETY: AVX2 and FMA are available; lengths checked above.
                done = unsafe { normalize_row_avx2(row, a, b, c, &self.scale, &self.bias, stream) };
            }
        }
        let lut = &self.lut;
        for i in done..n {
            let p = &row[3 * i..3 * i + 3];
            a[i] = lut[0][p[0] as usize];
            b[i] = lut[1][p[1] as usize];
            c[i] = lut[2][p[2] as usize];
        }
    }

    /// Fills the three planes with black (byte 0) normalised: `longest`'s padding.
    pub(super) fn fill_black(&self, a: &mut [f32], b: &mut [f32], c: &mut [f32]) {
        a.fill(self.lut[0][0]);
        b.fill(self.lut[1][0]);
        c.fill(self.lut[2][0]);
    }

    /// Packed RGB8 row → gray (PIL `convert("L")`) replicated into the three normalised planes,
    /// as OpenCLIP's `gray_scale` augmentation (3-channel `Grayscale`) then `Normalize`.
    pub(super) fn gray_row(&self, row: &[u8], a: &mut [f32], b: &mut [f32], c: &mut [f32]) {
        let lut = &self.lut;
        // PIL convert("L"): (R*19595 + G*38470 + B*7471 + 0x8000) >> 16, replicated.
        for (i, p) in row.chunks_exact(3).enumerate() {
            let l = ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000)
                >> 16) as usize;
            a[i] = lut[0][l];
            b[i] = lut[1][l];
            c[i] = lut[2][l];
        }
    }
}

/// 8 pixels at a time: two overlapping 16-byte loads, one `pshufb` per channel to i32, convert,
/// FMA, store. Returns the number of pixels done.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn normalize_row_avx2(
    row: &[u8],
    a: &mut [f32],
    b: &mut [f32],
    c: &mut [f32],
    scale: &[f32; 3],
    bias: &[f32; 3],
    stream: bool,
) -> usize {
    use std::arch::x86_64::*;
    let n = a.len();
    // Lane 0 holds bytes 0..16 (pixels 0-3 at 0..12), lane 1 bytes 8..24 (pixels 4-7 at 4..16).
    let sh = |o0: i8, o1: i8| {
        _mm256_setr_epi8(
            o0,
            -1,
            -1,
            -1,
            o0 + 3,
            -1,
            -1,
            -1,
            o0 + 6,
            -1,
            -1,
            -1,
            o0 + 9,
            -1,
            -1,
            -1, //
            o1,
            -1,
            -1,
            -1,
            o1 + 3,
            -1,
            -1,
            -1,
            o1 + 6,
            -1,
            -1,
            -1,
            o1 + 9,
            -1,
            -1,
            -1,
        )
    };
    let (sr, sg, sb) = (sh(0, 4), sh(1, 5), sh(2, 6));
    let (kr, kg, kb) = (
        _mm256_set1_ps(scale[0]),
        _mm256_set1_ps(scale[1]),
        _mm256_set1_ps(scale[2]),
    );
    let (br, bg, bb) = (
        _mm256_set1_ps(bias[0]),
        _mm256_set1_ps(bias[1]),
        _mm256_set1_ps(bias[2]),
    );
    let p = row.as_ptr();
    let (pa, pb, pc) = (a.as_mut_ptr(), b.as_mut_ptr(), c.as_mut_ptr());
    let mut i = 0;
    // The output (1.2 MB per 320 px image) is not read again here: stream it past the cache
    // when the rows are 16-byte aligned (the caller fences).
    let stream = stream && (pa as usize | pb as usize | pc as usize).is_multiple_of(16);
    macro_rules! body {
        ($store:ident) => {
            while i + 8 <= n {
                let lo = _mm_loadu_si128(p.add(3 * i) as *const __m128i);
                let hi = _mm_loadu_si128(p.add(3 * i + 8) as *const __m128i);
                let v = _mm256_inserti128_si256::<1>(_mm256_castsi128_si256(lo), hi);
                let r = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(v, sr)), kr, br);
                let g = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(v, sg)), kg, bg);
                let bl = _mm256_fmadd_ps(_mm256_cvtepi32_ps(_mm256_shuffle_epi8(v, sb)), kb, bb);
                $store(pa.add(i), r);
                $store(pb.add(i), g);
                $store(pc.add(i), bl);
                i += 8;
            }
        };
    }
    #[inline(always)]
    unsafe fn st_stream(p: *mut f32, v: __m256) {
        _mm_stream_ps(p, _mm256_castps256_ps128(v));
        _mm_stream_ps(p.add(4), _mm256_extractf128_ps::<1>(v));
    }
    #[inline(always)]
    unsafe fn st_plain(p: *mut f32, v: __m256) {
        _mm256_storeu_ps(p, v);
    }
    if stream {
        body!(st_stream);
    } else {
        body!(st_plain);
    }
    i
}

/// `dst.copy_from_slice(src)`, with streaming stores when `dst` is 16-byte aligned.
pub(super) fn stream_copy(dst: &mut [f32], src: &[f32]) {
    assert_eq!(dst.len(), src.len());
    #[cfg(target_arch = "x86_64")]
    {
        if (dst.as_ptr() as usize).is_multiple_of(16) {
            use std::arch::x86_64::*;
            let n4 = dst.len() / 4 * 4;
            // SAFETY: SSE is baseline on x86_64; 16-byte aligned, in-bounds 4-float stores.
            unsafe {
                for i in (0..n4).step_by(4) {
                    _mm_stream_ps(dst.as_mut_ptr().add(i), _mm_loadu_ps(src.as_ptr().add(i)));
                }
            }
            dst[n4..].copy_from_slice(&src[n4..]);
            return;
        }
    }
    dst.copy_from_slice(src);
}
