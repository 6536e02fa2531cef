//! Image decode and OpenCLIP's train / eval preprocessing, without libtorch.
//!
//! * [`decode_image`]: jpg/png/webp bytes → RGB8 (PIL `.convert("RGB")`: alpha dropped, gray
//!   replicated), as OpenCLIP's webdataset `decode("pilrgb")` does.
//! * Eval ([`ImageTransform::eval`]): torchvision `Resize(size)` (shortest side, bicubic,
//!   antialiased = PIL `Image.resize(BICUBIC)`), `CenterCrop(size)`, `ToTensor`, `Normalize`.
//! * Train ([`ImageTransform::train`]):
//!   - `use_timm=True`: timm `RandomResizedCropAndInterpolation(scale, ratio, bicubic)`, no flip,
//!     `ToTensor`, `Normalize`, then `RandomErasing(re_prob, mode="pixel", max_count=re_count)`.
//!   - `use_timm=False` (OpenCLIP's default): torchvision `RandomResizedCrop(size, scale,
//!     ratio=(3/4, 4/3), bicubic)`, optional `gray_scale` (p=`gray_scale_prob`), `ToTensor`,
//!     `Normalize`. As in OpenCLIP, `ratio`, `re_prob`, `re_count` are unused on this path
//!     (OpenCLIP warns; see [`AugCfg::unused_keys`]).
//!
//! The resampler follows Pillow's `ImagingResample` (separable, horizontal pass then vertical,
//! uint8 between passes) in 14-bit fixed point with AVX2 (see `resample`; a byte is rarely
//! off Pillow's, by one rounding step per pass), evaluated only for the output window, and only
//! over the crop box (crop-then-resize like `F.resized_crop`). The vertical pass hands each
//! output row straight to the normalisation (one FMA per value, AVX2) into the CHW buffer,
//! written with streaming stores; random erasing is drawn before the resize and filled row by
//! row (SIMD Box–Muller noise), so erased rows are written once.
//! Random draws follow the Python code's laws but not its random streams.

use crate::pyliteral::PyLiteral;
use anyhow::{anyhow, bail, Context, Result};
use image::RgbImage;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

mod resample;

/// OpenAI CLIP normalisation mean (RGB).
pub const OPENAI_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP normalisation std (RGB).
#[allow(clippy::excessive_precision)] // OpenCLIP's digits, verbatim
pub const OPENAI_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Decode jpg/png/webp bytes into RGB8 (like PIL `Image.open(..).convert("RGB")`).
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        if let Some(img) = decode_jpeg_rgb(bytes) {
            return Ok(img);
        }
    }
    let img = image::load_from_memory(bytes).context("decoding image")?;
    Ok(img.into_rgb8())
}

/// YCbCr/RGB JPEGs straight to RGB8 with zune-jpeg (what `image` does for them, minus its
/// second header parse and the zeroed output buffer). `None` for anything else (gray, CMYK,
/// errors): the caller falls back to `image`, which also produces the error message.
fn decode_jpeg_rgb(bytes: &[u8]) -> Option<RgbImage> {
    use zune_core::{bytestream::ZCursor, colorspace::ColorSpace, options::DecoderOptions};
    let opts = DecoderOptions::default()
        .set_strict_mode(false)
        .set_max_width(usize::MAX)
        .set_max_height(usize::MAX)
        .jpeg_set_out_colorspace(ColorSpace::RGB);
    let mut d = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), opts);
    d.decode_headers().ok()?;
    if !matches!(d.input_colorspace()?, ColorSpace::YCbCr | ColorSpace::RGB) {
        return None;
    }
    let (w, h) = d.dimensions()?;
    let px = d.decode().ok()?;
    if px.len() != w * h * 3 {
        return None;
    }
    RgbImage::from_raw(w as u32, h as u32, px)
}

// ---------------------------------------------------------------------------------------------
// --aug-cfg
// ---------------------------------------------------------------------------------------------

/// OpenCLIP's `AugmentationCfg` as given by `--aug-cfg key=value ...`.
#[derive(Clone, Debug, PartialEq)]
pub struct AugCfg {
    /// Random-resized-crop area range (OpenCLIP default `(0.9, 1.0)`).
    pub scale: (f64, f64),
    /// Crop aspect-ratio range; timm path only (default `(3/4, 4/3)`).
    pub ratio: (f64, f64),
    /// Random erasing probability; timm path only (default 0 = off).
    pub re_prob: f64,
    /// Maximum erased boxes per image; timm path only (default 1).
    pub re_count: usize,
    /// timm `create_transform` path (OpenCLIP default `False`).
    pub use_timm: bool,
    /// Probability of the 3-channel gray-scale conversion; non-timm path only.
    pub gray_scale_prob: f64,
    /// Keys given explicitly (non-`None`), in order.
    pub given: Vec<String>,
}

impl Default for AugCfg {
    fn default() -> Self {
        AugCfg {
            scale: (0.9, 1.0),
            ratio: (3.0 / 4.0, 4.0 / 3.0),
            re_prob: 0.0,
            re_count: 1,
            use_timm: false,
            gray_scale_prob: 0.0,
            given: Vec::new(),
        }
    }
}

fn pair(key: &str, v: &PyLiteral, tok: &str) -> Result<(f64, f64)> {
    if let Some(items) = v.items() {
        if items.len() == 2 {
            if let (Some(a), Some(b)) = (items[0].num(), items[1].num()) {
                return Ok((a, b));
            }
        }
    }
    bail!("aug-cfg {key}: expected a pair of numbers like (0.5, 1.0), got `{tok}`")
}

fn number(key: &str, v: &PyLiteral, tok: &str) -> Result<f64> {
    v.num()
        .ok_or_else(|| anyhow!("aug-cfg {key}: expected a number, got `{tok}`"))
}

impl AugCfg {
    /// Parse OpenCLIP `--aug-cfg` tokens `key=value` (value a Python literal). Unknown keys,
    /// unparsable values, and augmentations this crate does not implement are errors naming them.
    pub fn parse(tokens: &[String]) -> Result<AugCfg> {
        let mut cfg = AugCfg::default();
        let mut color_jitter: Option<(String, PyLiteral)> = None;
        let mut color_jitter_prob = 0.0;
        for tok in tokens {
            let parts: Vec<&str> = tok.split('=').collect();
            if parts.len() != 2 {
                bail!("aug-cfg token `{tok}`: expected key=value");
            }
            let (key, raw) = (parts[0], parts[1]);
            let v = PyLiteral::parse_or_string(raw).map_err(|e| {
                anyhow!(
                    "aug-cfg {key}: cannot parse value `{raw}` as a Python literal (token `{tok}`): {e}"
                )
            })?;
            let known = [
                "scale",
                "ratio",
                "color_jitter",
                "re_prob",
                "re_count",
                "use_timm",
                "color_jitter_prob",
                "gray_scale_prob",
            ];
            if !known.contains(&key) {
                bail!(
                    "aug-cfg: unknown key `{key}` (token `{tok}`); known keys: {}",
                    known.join(", ")
                );
            }
            if v == PyLiteral::None {
                continue; // None means "use the default"
            }
            cfg.given.retain(|k| k != key);
            cfg.given.push(key.to_string());
            match key {
                "scale" => cfg.scale = pair(key, &v, tok)?,
                "ratio" => cfg.ratio = pair(key, &v, tok)?,
                "re_prob" => cfg.re_prob = number(key, &v, tok)?,
                "re_count" => match v {
                    PyLiteral::Int(i) if i >= 0 => cfg.re_count = (i as usize).max(1),
                    _ => bail!("aug-cfg re_count: expected a non-negative integer, got `{tok}`"),
                },
                "use_timm" => cfg.use_timm = v.truthy(),
                "gray_scale_prob" => cfg.gray_scale_prob = number(key, &v, tok)?,
                "color_jitter_prob" => color_jitter_prob = number(key, &v, tok)?,
                "color_jitter" => {
                    match &v {
                        x if x.items().is_some_and(|items| {
                            (3..=4).contains(&items.len())
                                && items.iter().all(|i| i.num().is_some())
                        }) => {}
                        x if x.num().is_some() => {}
                        _ => bail!(
                            "aug-cfg color_jitter: expected a number or a 3/4-tuple, got `{tok}`"
                        ),
                    }
                    color_jitter = Some((tok.clone(), v));
                }
                _ => unreachable!(),
            }
        }
        if !(0.0..=1.0).contains(&cfg.re_prob) {
            bail!("aug-cfg re_prob: {} is not a probability", cfg.re_prob);
        }
        if !(0.0..=1.0).contains(&cfg.gray_scale_prob) {
            bail!(
                "aug-cfg gray_scale_prob: {} is not a probability",
                cfg.gray_scale_prob
            );
        }
        if cfg.scale.0 <= 0.0
            || cfg.scale.0 > cfg.scale.1
            || cfg.ratio.0 <= 0.0
            || cfg.ratio.0 > cfg.ratio.1
        {
            bail!(
                "aug-cfg scale/ratio must be positive (min, max) ranges, got scale={:?} ratio={:?}",
                cfg.scale,
                cfg.ratio
            );
        }
        // Colour jitter is applied by timm (use_timm) or by OpenCLIP when color_jitter_prob > 0.
        if !cfg.use_timm && color_jitter_prob != 0.0 {
            bail!("not supported yet: aug-cfg color_jitter_prob (colour jitter)");
        }
        if let Some((tok, _)) = color_jitter {
            if cfg.use_timm {
                bail!("not supported yet: aug-cfg color_jitter (`{tok}`, timm ColorJitter)");
            }
        }
        Ok(cfg)
    }

    /// Keys given that OpenCLIP would ignore (it warns "Unused augmentation cfg items") on the
    /// chosen path.
    pub fn unused_keys(&self) -> Vec<&str> {
        let unused: &[&str] = if self.use_timm {
            &["color_jitter_prob", "gray_scale_prob"]
        } else {
            &["ratio", "re_prob", "re_count", "color_jitter"]
        };
        self.given
            .iter()
            .map(|s| s.as_str())
            .filter(|k| unused.contains(k))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------------
// Geometry helpers
// ---------------------------------------------------------------------------------------------

/// An integer crop box in source pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

/// Python's `int(round(x))` (round half to even).
fn py_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// `random.uniform(a, b)`.
fn uniform<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
    a + (b - a) * rng.random::<f64>()
}

/// timm `RandomResizedCropAndInterpolation.get_params` / torchvision `RandomResizedCrop.get_params`:
/// 10 attempts (area uniform in `scale`·area, log-uniform aspect ratio in `ratio`,
/// `w = round(sqrt(a·r))`, `h = round(sqrt(a/r))`, accepted if `0 < w <= W` and `0 < h <= H`,
/// position uniform), then the centre-crop fallback clamped to the ratio bounds.
pub fn random_resized_crop_params<R: Rng + ?Sized>(
    img_w: u32,
    img_h: u32,
    scale: (f64, f64),
    ratio: (f64, f64),
    rng: &mut R,
) -> CropBox {
    let (iw, ih) = (img_w as i64, img_h as i64);
    let area = (iw * ih) as f64;
    let log_ratio = (ratio.0.ln(), ratio.1.ln());
    for _ in 0..10 {
        let target_area = uniform(rng, scale.0, scale.1) * area;
        let aspect = uniform(rng, log_ratio.0, log_ratio.1).exp();
        let w = py_round((target_area * aspect).sqrt());
        let h = py_round((target_area / aspect).sqrt());
        if 0 < w && w <= iw && 0 < h && h <= ih {
            let top = rng.random_range(0..=ih - h);
            let left = rng.random_range(0..=iw - w);
            return CropBox {
                top: top as u32,
                left: left as u32,
                height: h as u32,
                width: w as u32,
            };
        }
    }
    let in_ratio = iw as f64 / ih as f64;
    let (rmin, rmax) = (ratio.0.min(ratio.1), ratio.0.max(ratio.1));
    let (w, h) = if in_ratio < rmin {
        (iw, py_round(iw as f64 / rmin))
    } else if in_ratio > rmax {
        (py_round(ih as f64 * rmax), ih)
    } else {
        (iw, ih)
    };
    let (w, h) = (w.clamp(1, iw.max(1)), h.clamp(1, ih.max(1)));
    CropBox {
        top: ((ih - h) / 2) as u32,
        left: ((iw - w) / 2) as u32,
        height: h as u32,
        width: w as u32,
    }
}

/// torchvision `Resize(size)` (shortest side) output size `(w, h)` for a `w × h` image.
pub fn shortest_side_size(img_w: u32, img_h: u32, size: u32) -> (u32, u32) {
    let (short, long) = if img_w <= img_h {
        (img_w, img_h)
    } else {
        (img_h, img_w)
    };
    let new_long = (size as f64 * long as f64 / short as f64) as u32; // Python int(): truncation
    if img_w <= img_h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

// ---------------------------------------------------------------------------------------------
// Antialiased bicubic / bilinear resampling (Pillow's algorithm, 14-bit fixed point)
// ---------------------------------------------------------------------------------------------

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

/// `--image-interpolation`: OpenCLIP passes it to timm on the `use_timm` train path (`random`
/// draws bilinear or bicubic per image); eval treats `random` as bicubic; the non-timm train
/// path is always bicubic.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Interpolation {
    #[default]
    Bicubic,
    Bilinear,
    Random,
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

/// Crop `crop` out of `img` and resize it to `out_w × out_h` with Pillow's antialiased bicubic
/// (`F.resized_crop(img, top, left, h, w, (out_h, out_w), BICUBIC)`), writing only the output
/// window `win` (x, y, w, h) as packed RGB8 into `dst` (`win.w * win.h * 3` bytes).
/// Only the crop region is read; work is proportional to the window.
pub fn resize_crop_window(
    img: &RgbImage,
    crop: CropBox,
    out_w: u32,
    out_h: u32,
    win: (u32, u32, u32, u32),
    dst: &mut [u8],
) {
    resize_crop_window_with(img, crop, out_w, out_h, win, Filter::Bicubic, dst)
}

/// [`resize_crop_window`] with a choice of Pillow filter.
pub fn resize_crop_window_with(
    img: &RgbImage,
    crop: CropBox,
    out_w: u32,
    out_h: u32,
    win: (u32, u32, u32, u32),
    filter: Filter,
    dst: &mut [u8],
) {
    check_window(img, crop, out_w, out_h, win);
    let row_len = win.2 as usize * 3;
    assert_eq!(dst.len(), row_len * win.3 as usize);
    let stride = img.width() as usize * 3;
    resample::resample_rows(
        img.as_raw(),
        stride,
        crop,
        out_w,
        out_h,
        win,
        filter,
        |y, row| dst[y * row_len..(y + 1) * row_len].copy_from_slice(row),
    );
}

fn check_window(img: &RgbImage, crop: CropBox, out_w: u32, out_h: u32, win: (u32, u32, u32, u32)) {
    assert!(
        crop.width > 0
            && crop.height > 0
            && crop.left + crop.width <= img.width()
            && crop.top + crop.height <= img.height(),
        "crop box outside image"
    );
    assert!(
        win.0 + win.2 <= out_w && win.1 + win.3 <= out_h,
        "window outside output"
    );
}

pub fn resized_crop(img: &RgbImage, crop: CropBox, out_w: u32, out_h: u32) -> RgbImage {
    let mut buf = vec![0u8; (out_w * out_h * 3) as usize];
    resize_crop_window(img, crop, out_w, out_h, (0, 0, out_w, out_h), &mut buf);
    RgbImage::from_raw(out_w, out_h, buf).unwrap()
}

// ---------------------------------------------------------------------------------------------
// Random erasing
// ---------------------------------------------------------------------------------------------

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
fn erasing_boxes<R: Rng + ?Sized>(
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

/// `dst.copy_from_slice(src)`, with streaming stores when `dst` is 16-byte aligned.
fn stream_copy(dst: &mut [f32], src: &[f32]) {
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
struct NormalFill {
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

    fn fill(&mut self, out: &mut [f32]) {
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

// ---------------------------------------------------------------------------------------------
// ImageTransform
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Mode {
    Eval,
    /// timm create_transform path.
    Timm {
        scale: (f64, f64),
        ratio: (f64, f64),
        re_prob: f64,
        re_count: usize,
    },
    /// OpenCLIP's own torchvision path.
    Torchvision {
        scale: (f64, f64),
        gray_scale_prob: f64,
    },
}

/// OpenCLIP's image preprocessing (train or eval) producing normalised CHW f32.
#[derive(Clone, Debug)]
pub struct ImageTransform {
    size: u32,
    mode: Mode,
    interpolation: Interpolation,
    /// `v * scale[c] + bias[c]` (one f32 FMA; within 2 ulp of torchvision's
    /// `(v / 255 - mean[c]) / std[c]`) for each channel and byte value.
    lut: Vec<[f32; 256]>,
    /// `1 / (255 * std[c])`.
    scale: [f32; 3],
    /// `-mean[c] / std[c]`.
    bias: [f32; 3],
}

/// Normalisation as one FMA per value: `(scale, bias, lut)` (see [`ImageTransform`]).
fn make_norm(mean: [f32; 3], std: [f32; 3]) -> ([f32; 3], [f32; 3], Vec<[f32; 256]>) {
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
    (scale, bias, lut)
}

/// Packed RGB8 row → three normalised f32 plane rows (`v * scale[c] + bias[c]`, as the LUT).
/// `stream`: write `a`, `b`, `c` with streaming stores where aligned (they are not read again soon).
#[allow(clippy::too_many_arguments)]
fn normalize_row(
    row: &[u8],
    a: &mut [f32],
    b: &mut [f32],
    c: &mut [f32],
    lut: &[[f32; 256]],
    scale: &[f32; 3],
    bias: &[f32; 3],
    stream: bool,
) {
    let n = a.len();
    assert!(row.len() == 3 * n && b.len() == n && c.len() == n);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: AVX2 and FMA are available; lengths checked above.
            done = unsafe { normalize_row_avx2(row, a, b, c, scale, bias, stream) };
        }
    }
    for i in done..n {
        let p = &row[3 * i..3 * i + 3];
        a[i] = lut[0][p[0] as usize];
        b[i] = lut[1][p[1] as usize];
        c[i] = lut[2][p[2] as usize];
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

impl ImageTransform {
    /// OpenCLIP `image_transform(image_size, is_train=True, aug_cfg=aug)` (bicubic).
    pub fn train(image_size: u32, aug: &AugCfg, mean: [f32; 3], std: [f32; 3]) -> ImageTransform {
        let mode = if aug.use_timm {
            Mode::Timm {
                scale: aug.scale,
                ratio: aug.ratio,
                re_prob: aug.re_prob,
                re_count: aug.re_count,
            }
        } else {
            Mode::Torchvision {
                scale: aug.scale,
                gray_scale_prob: aug.gray_scale_prob,
            }
        };
        let (scale, bias, lut) = make_norm(mean, std);
        ImageTransform {
            size: image_size,
            mode,
            interpolation: Interpolation::Bicubic,
            lut,
            scale,
            bias,
        }
    }

    /// OpenCLIP `image_transform(image_size, is_train=False)`: shortest-side bicubic resize,
    /// centre crop, normalise.
    pub fn eval(image_size: u32, mean: [f32; 3], std: [f32; 3]) -> ImageTransform {
        let (scale, bias, lut) = make_norm(mean, std);
        ImageTransform {
            size: image_size,
            mode: Mode::Eval,
            interpolation: Interpolation::Bicubic,
            lut,
            scale,
            bias,
        }
    }

    /// Set `--image-interpolation` (default bicubic). Only the `use_timm` train path draws
    /// bilinear/bicubic at random; eval maps `Random` to bicubic; the non-timm train path is
    /// always bicubic, as in OpenCLIP.
    pub fn with_interpolation(mut self, interpolation: Interpolation) -> ImageTransform {
        self.interpolation = interpolation;
        self
    }

    pub fn image_size(&self) -> u32 {
        self.size
    }

    /// Number of f32 values per output image (`3 * size * size`).
    pub fn output_len(&self) -> usize {
        3 * (self.size as usize) * (self.size as usize)
    }

    /// RGB8 image → normalised CHW f32 of length `3 * size * size`. Eval ignores `rng`.
    pub fn apply<R: Rng + ?Sized>(&self, img: &RgbImage, rng: &mut R) -> Vec<f32> {
        let mut out = vec![0f32; self.output_len()];
        self.apply_into(img, rng, &mut out);
        out
    }

    /// Like [`apply`](Self::apply) but writes into `out` (e.g. a slot of a batch buffer).
    pub fn apply_into<R: Rng + ?Sized>(&self, img: &RgbImage, rng: &mut R, out: &mut [f32]) {
        let s = self.size;
        let n = (s * s) as usize;
        assert_eq!(
            out.len(),
            3 * n,
            "output buffer must hold 3*size*size values"
        );
        assert!(img.width() > 0 && img.height() > 0, "empty image");
        // (crop box, resize target, output window, filter)
        let (crop, rw, rh, win, filter, gray) = match &self.mode {
            Mode::Eval => {
                let (rw, rh) = shortest_side_size(img.width(), img.height(), s);
                let (rw, rh) = (rw.max(s), rh.max(s));
                // torchvision center_crop: int(round((H - size) / 2)), half to even.
                let top = py_round((rh - s) as f64 / 2.0) as u32;
                let left = py_round((rw - s) as f64 / 2.0) as u32;
                let full = CropBox {
                    top: 0,
                    left: 0,
                    height: img.height(),
                    width: img.width(),
                };
                let f = if self.interpolation == Interpolation::Bilinear {
                    Filter::Bilinear
                } else {
                    Filter::Bicubic
                };
                (full, rw, rh, (left, top, s, s), f, false)
            }
            Mode::Timm { scale, ratio, .. } => {
                let b = random_resized_crop_params(img.width(), img.height(), *scale, *ratio, rng);
                let f = match self.interpolation {
                    Interpolation::Bicubic => Filter::Bicubic,
                    Interpolation::Bilinear => Filter::Bilinear,
                    Interpolation::Random => {
                        if rng.random_range(0..2) == 0 {
                            Filter::Bilinear
                        } else {
                            Filter::Bicubic
                        }
                    }
                };
                (b, s, s, (0, 0, s, s), f, false)
            }
            Mode::Torchvision {
                scale,
                gray_scale_prob,
            } => {
                let b = random_resized_crop_params(
                    img.width(),
                    img.height(),
                    *scale,
                    (3.0 / 4.0, 4.0 / 3.0),
                    rng,
                );
                let gray = *gray_scale_prob > 0.0 && rng.random::<f64>() < *gray_scale_prob;
                (b, s, s, (0, 0, s, s), Filter::Bicubic, gray)
            }
        };
        check_window(img, crop, rw, rh, win);
        let w = s as usize;
        let (o0, rest) = out.split_at_mut(n);
        let (o1, o2) = rest.split_at_mut(n);
        let (l0, l1, l2) = (&self.lut[0], &self.lut[1], &self.lut[2]);
        let stride = img.width() as usize * 3;
        // Random erasing is drawn now (same law and draw order as after the resize) and
        // applied row by row: erased rows are assembled in `staging` and streamed out once.
        let mut erase = match self.mode {
            Mode::Timm {
                re_prob, re_count, ..
            } if re_prob > 0.0 => erasing_boxes(w, w, re_prob, re_count, rng),
            _ => Vec::new(),
        };
        let mut staging = if erase.is_empty() {
            Vec::new()
        } else {
            vec![0f32; 3 * w]
        };
        // Each output row goes straight from the vertical pass into the three planes.
        resample::resample_rows(img.as_raw(), stride, crop, rw, rh, win, filter, |y, row| {
            let (a, b, c) = (
                &mut o0[y * w..(y + 1) * w],
                &mut o1[y * w..(y + 1) * w],
                &mut o2[y * w..(y + 1) * w],
            );
            if erase
                .iter()
                .any(|(bx, _)| (bx.top as usize..(bx.top + bx.height) as usize).contains(&y))
            {
                let (sa, rest) = staging.split_at_mut(w);
                let (sb, sc) = rest.split_at_mut(w);
                normalize_row(row, sa, sb, sc, &self.lut, &self.scale, &self.bias, false);
                for (bx, fill) in erase.iter_mut() {
                    if (bx.top as usize..(bx.top + bx.height) as usize).contains(&y) {
                        let r = bx.left as usize..(bx.left + bx.width) as usize;
                        fill.fill(&mut sa[r.clone()]);
                        fill.fill(&mut sb[r.clone()]);
                        fill.fill(&mut sc[r]);
                    }
                }
                stream_copy(a, sa);
                stream_copy(b, sb);
                stream_copy(c, sc);
                return;
            }
            if gray {
                // PIL convert("L"): (R*19595 + G*38470 + B*7471 + 0x8000) >> 16, replicated.
                for (i, p) in row.chunks_exact(3).enumerate() {
                    let l =
                        ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000)
                            >> 16) as usize;
                    a[i] = l0[l];
                    b[i] = l1[l];
                    c[i] = l2[l];
                }
            } else {
                normalize_row(row, a, b, c, &self.lut, &self.scale, &self.bias, true);
            }
        });
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE is baseline on x86_64. Orders the streaming stores of `normalize_row`.
        unsafe {
            std::arch::x86_64::_mm_sfence()
        };
    }
}
