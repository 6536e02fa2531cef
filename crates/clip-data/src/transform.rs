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
//! The resampler is a port of Pillow's `ImagingResample` (separable, 22-bit fixed point,
//! horizontal pass then vertical, uint8 between passes), evaluated only for the output window,
//! and only over the crop box (crop-then-resize like `F.resized_crop`).
//! Random draws follow the Python code's laws but not its random streams.

use std::cell::RefCell;

use anyhow::{anyhow, bail, Context, Result};
use image::RgbImage;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

/// OpenAI CLIP normalisation mean (RGB).
pub const OPENAI_MEAN: [f32; 3] = [0.48145466, 0.4578275, 0.40821073];
/// OpenAI CLIP normalisation std (RGB).
#[allow(clippy::excessive_precision)] // OpenCLIP's digits, verbatim
pub const OPENAI_STD: [f32; 3] = [0.26862954, 0.26130258, 0.27577711];

/// Decode jpg/png/webp bytes into RGB8 (like PIL `Image.open(..).convert("RGB")`).
pub fn decode_image(bytes: &[u8]) -> Result<RgbImage> {
    let img = image::load_from_memory(bytes).context("decoding image")?;
    Ok(img.into_rgb8())
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

/// A Python literal as `ast.literal_eval` would give it (the subset --aug-cfg uses).
#[derive(Clone, Debug, PartialEq)]
enum PyLit {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<PyLit>),
}

impl PyLit {
    fn num(&self) -> Option<f64> {
        match *self {
            PyLit::Bool(b) => Some(b as i64 as f64),
            PyLit::Int(i) => Some(i as f64),
            PyLit::Float(f) => Some(f),
            _ => None,
        }
    }
    fn truthy(&self) -> bool {
        match self {
            PyLit::None => false,
            PyLit::Bool(b) => *b,
            PyLit::Int(i) => *i != 0,
            PyLit::Float(f) => *f != 0.0,
            PyLit::Str(s) => !s.is_empty(),
            PyLit::Seq(v) => !v.is_empty(),
        }
    }
}

struct LitParser<'a> {
    s: &'a [u8],
    i: usize,
}

impl LitParser<'_> {
    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn parse(mut self) -> Option<PyLit> {
        let v = self.value()?;
        self.ws();
        (self.i == self.s.len()).then_some(v)
    }
    fn value(&mut self) -> Option<PyLit> {
        self.ws();
        let c = *self.s.get(self.i)?;
        match c {
            b'(' | b'[' => {
                let close = if c == b'(' { b')' } else { b']' };
                self.i += 1;
                let mut items = Vec::new();
                let mut trailing_comma = false;
                loop {
                    self.ws();
                    if self.s.get(self.i) == Some(&close) {
                        self.i += 1;
                        break;
                    }
                    items.push(self.value()?);
                    self.ws();
                    match self.s.get(self.i)? {
                        b',' => {
                            self.i += 1;
                            trailing_comma = true;
                        }
                        x if *x == close => {
                            self.i += 1;
                            trailing_comma = false;
                            break;
                        }
                        _ => return None,
                    }
                }
                // `(x)` is just x in Python; `(x,)` is a tuple.
                if c == b'(' && items.len() == 1 && !trailing_comma {
                    return items.pop();
                }
                Some(PyLit::Seq(items))
            }
            b'\'' | b'"' => {
                self.i += 1;
                let start = self.i;
                while self.i < self.s.len() && self.s[self.i] != c {
                    self.i += 1;
                }
                let v = std::str::from_utf8(&self.s[start..self.i]).ok()?.to_string();
                self.i += 1;
                (self.i <= self.s.len()).then_some(PyLit::Str(v))
            }
            _ => {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_alphanumeric() || b"+-._".contains(&self.s[self.i]))
                {
                    self.i += 1;
                }
                let tok = std::str::from_utf8(&self.s[start..self.i]).ok()?.replace('_', "");
                match tok.as_str() {
                    "None" => return Some(PyLit::None),
                    "True" => return Some(PyLit::Bool(true)),
                    "False" => return Some(PyLit::Bool(false)),
                    "" => return None,
                    _ => {}
                }
                if let Ok(i) = tok.parse::<i64>() {
                    return Some(PyLit::Int(i));
                }
                let ok = tok.bytes().all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b))
                    && tok.bytes().any(|b| b.is_ascii_digit());
                if ok {
                    tok.parse::<f64>().ok().map(PyLit::Float)
                } else if tok.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    // literal_eval raises ValueError on a bare name: OpenCLIP keeps it as a str.
                    Some(PyLit::Str(tok))
                } else {
                    None
                }
            }
        }
    }
}

fn pair(key: &str, v: &PyLit, tok: &str) -> Result<(f64, f64)> {
    if let PyLit::Seq(items) = v {
        if items.len() == 2 {
            if let (Some(a), Some(b)) = (items[0].num(), items[1].num()) {
                return Ok((a, b));
            }
        }
    }
    bail!("aug-cfg {key}: expected a pair of numbers like (0.5, 1.0), got `{tok}`")
}

fn number(key: &str, v: &PyLit, tok: &str) -> Result<f64> {
    v.num().ok_or_else(|| anyhow!("aug-cfg {key}: expected a number, got `{tok}`"))
}

impl AugCfg {
    /// Parse OpenCLIP `--aug-cfg` tokens `key=value` (value a Python literal). Unknown keys,
    /// unparsable values, and augmentations this crate does not implement are errors naming them.
    pub fn parse(tokens: &[String]) -> Result<AugCfg> {
        let mut cfg = AugCfg::default();
        let mut color_jitter: Option<(String, PyLit)> = None;
        let mut color_jitter_prob = 0.0;
        for tok in tokens {
            let parts: Vec<&str> = tok.split('=').collect();
            if parts.len() != 2 {
                bail!("aug-cfg token `{tok}`: expected key=value");
            }
            let (key, raw) = (parts[0], parts[1]);
            let v = LitParser { s: raw.as_bytes(), i: 0 }
                .parse()
                .ok_or_else(|| anyhow!("aug-cfg {key}: cannot parse value `{raw}` as a Python literal (token `{tok}`)"))?;
            let known = [
                "scale", "ratio", "color_jitter", "re_prob", "re_count", "use_timm",
                "color_jitter_prob", "gray_scale_prob",
            ];
            if !known.contains(&key) {
                bail!("aug-cfg: unknown key `{key}` (token `{tok}`); known keys: {}", known.join(", "));
            }
            if v == PyLit::None {
                continue; // None means "use the default"
            }
            cfg.given.retain(|k| k != key);
            cfg.given.push(key.to_string());
            match key {
                "scale" => cfg.scale = pair(key, &v, tok)?,
                "ratio" => cfg.ratio = pair(key, &v, tok)?,
                "re_prob" => cfg.re_prob = number(key, &v, tok)?,
                "re_count" => match v {
                    PyLit::Int(i) if i >= 0 => cfg.re_count = (i as usize).max(1),
                    _ => bail!("aug-cfg re_count: expected a non-negative integer, got `{tok}`"),
                },
                "use_timm" => cfg.use_timm = v.truthy(),
                "gray_scale_prob" => cfg.gray_scale_prob = number(key, &v, tok)?,
                "color_jitter_prob" => color_jitter_prob = number(key, &v, tok)?,
                "color_jitter" => {
                    match &v {
                        PyLit::Seq(items) if (3..=4).contains(&items.len()) && items.iter().all(|x| x.num().is_some()) => {}
                        x if x.num().is_some() => {}
                        _ => bail!("aug-cfg color_jitter: expected a number or a 3/4-tuple, got `{tok}`"),
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
            bail!("aug-cfg gray_scale_prob: {} is not a probability", cfg.gray_scale_prob);
        }
        if cfg.scale.0 <= 0.0 || cfg.scale.0 > cfg.scale.1 || cfg.ratio.0 <= 0.0 || cfg.ratio.0 > cfg.ratio.1 {
            bail!("aug-cfg scale/ratio must be positive (min, max) ranges, got scale={:?} ratio={:?}", cfg.scale, cfg.ratio);
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
        self.given.iter().map(|s| s.as_str()).filter(|k| unused.contains(k)).collect()
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
            return CropBox { top: top as u32, left: left as u32, height: h as u32, width: w as u32 };
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
    CropBox { top: ((ih - h) / 2) as u32, left: ((iw - w) / 2) as u32, height: h as u32, width: w as u32 }
}

/// torchvision `Resize(size)` (shortest side) output size `(w, h)` for a `w × h` image.
pub fn shortest_side_size(img_w: u32, img_h: u32, size: u32) -> (u32, u32) {
    let (short, long) = if img_w <= img_h { (img_w, img_h) } else { (img_h, img_w) };
    let new_long = (size as f64 * long as f64 / short as f64) as u32; // Python int(): truncation
    if img_w <= img_h {
        (size, new_long)
    } else {
        (new_long, size)
    }
}

// ---------------------------------------------------------------------------------------------
// Pillow-exact antialiased bicubic resampling
// ---------------------------------------------------------------------------------------------

const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Resampling filter (Pillow's, antialiased when downscaling).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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

/// Pillow's `precompute_coeffs` + `normalize_coeffs_8bpc` for outputs `[o0, o0 + n)` of an
/// `in_size → out_size` resize.
struct Coeffs {
    /// (first input index, tap count) per output.
    bounds: Vec<(usize, usize)>,
    /// Fixed-point taps, `ksize` per output.
    k: Vec<i32>,
    ksize: usize,
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
    for (oi, xx) in (o0..o0 + n).enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        let xmin = ((center - support + 0.5) as i64).max(0) as usize; // C (int): truncation
        let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let cnt = xmax.saturating_sub(xmin).min(ksize);
        let mut ww = 0.0;
        for (x, wx) in w[..cnt].iter_mut().enumerate() {
            *wx = filter.eval((x as f64 + xmin as f64 - center + 0.5) * ss);
            ww += *wx;
        }
        for (kx, &wx) in k[oi * ksize..oi * ksize + cnt].iter_mut().zip(&w[..cnt]) {
            let v = if ww != 0.0 { wx / ww } else { wx };
            let f = v * (1u32 << PRECISION_BITS) as f64;
            *kx = if v < 0.0 { (f - 0.5) as i32 } else { (f + 0.5) as i32 };
        }
        bounds.push((xmin, cnt));
    }
    Coeffs { bounds, k, ksize }
}

#[inline(always)]
fn clip8(v: i32) -> u8 {
    (v >> PRECISION_BITS).clamp(0, 255) as u8
}

thread_local! {
    static PX: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    static SCRATCH: RefCell<(Vec<u8>, Vec<i32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
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
    let (iw, _ih) = img.dimensions();
    let src = img.as_raw();
    let (cw, ch) = (crop.width as usize, crop.height as usize);
    let (x0, y0) = (crop.left as usize, crop.top as usize);
    let (wx, wy, ww, wh) = (win.0 as usize, win.1 as usize, win.2 as usize, win.3 as usize);
    assert!(crop.left + crop.width <= iw && crop.top + crop.height <= img.height(), "crop box outside image");
    assert!(win.0 + win.2 <= out_w && win.1 + win.3 <= out_h, "window outside output");
    assert_eq!(dst.len(), ww * wh * 3);
    let stride = iw as usize * 3;
    let need_h = cw != out_w as usize;
    let need_v = ch != out_h as usize;

    // Rows of the crop feeding the window's vertical taps.
    let vc = need_v.then(|| coeffs(ch, out_h as usize, wy, wh, filter));
    let (r0, r1) = match &vc {
        Some(c) => (c.bounds[0].0, c.bounds[wh - 1].0 + c.bounds[wh - 1].1),
        None => (wy, wy + wh),
    };
    let rows = r1 - r0;
    let row_len = ww * 3;

    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (tmp, acc) = &mut *s;
        if tmp.len() < rows * row_len {
            tmp.resize(rows * row_len, 0);
        }
        let hc = need_h.then(|| coeffs(cw, out_w as usize, wx, ww, filter));
        let job = Passes {
            src,
            stride,
            x0,
            row0: y0 + r0,
            rows,
            row_len,
            wx,
            hc: hc.as_ref(),
            vc: vc.as_ref(),
            r0,
        };
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: AVX2 is available (checked at run time).
                unsafe { run_passes_avx2(&job, tmp, acc, dst) };
                return;
            }
        }
        run_passes(&job, tmp, acc, dst);
    });
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

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn run_passes_avx2(job: &Passes, tmp: &mut [u8], acc: &mut Vec<i32>, dst: &mut [u8]) {
    match job.hc {
        Some(hc) => horizontal_avx2(job, hc, tmp),
        None => horizontal_or_copy(job, tmp),
    }
    vertical(job, tmp, acc, dst)
}

/// Horizontal pass with SSE4.1/AVX2 integer ops: each tap is one 4-lane multiply-add over
/// (R, G, B, next R); bit-identical to the scalar pass.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn horizontal_avx2(job: &Passes, hc: &Coeffs, tmp: &mut [u8]) {
    use std::arch::x86_64::*;
    let row_len = job.row_len;
    let ks = hc.ksize;
    let half = _mm_set1_epi32(1i32 << (PRECISION_BITS - 1));
    let src = job.src;
    for r in 0..job.rows {
        let base = (job.row0 + r) * job.stride + job.x0 * 3;
        let trow = &mut tmp[r * row_len..(r + 1) * row_len];
        for ((out, &(xmin, cnt)), k) in trow.chunks_exact_mut(3).zip(&hc.bounds).zip(hc.k.chunks_exact(ks)) {
            let mut acc = half;
            let first = base + xmin * 3;
            let last = first + cnt * 3; // one past the last byte used
            if last < src.len() {
                // 4-byte loads stay inside the buffer. Two taps per 8-lane multiply-add.
                let p = src.as_ptr().add(first);
                let mut acc2 = _mm256_setzero_si256();
                let pairs = cnt / 2;
                for t2 in 0..pairs {
                    let t = t2 * 2;
                    let v0 = (p.add(t * 3) as *const u32).read_unaligned();
                    let v1 = (p.add(t * 3 + 3) as *const u32).read_unaligned();
                    let px = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128((v0 as u64 | ((v1 as u64) << 32)) as i64));
                    let kk = _mm256_setr_epi32(k[t], k[t], k[t], k[t], k[t + 1], k[t + 1], k[t + 1], k[t + 1]);
                    acc2 = _mm256_add_epi32(acc2, _mm256_mullo_epi32(px, kk));
                }
                acc = _mm_add_epi32(acc, _mm_add_epi32(_mm256_castsi256_si128(acc2), _mm256_extracti128_si256::<1>(acc2)));
                if cnt % 2 == 1 {
                    let t = cnt - 1;
                    let v = (p.add(t * 3) as *const u32).read_unaligned();
                    let px = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(v as i32));
                    acc = _mm_add_epi32(acc, _mm_mullo_epi32(px, _mm_set1_epi32(k[t])));
                }
            } else {
                for (t, &kv) in k[..cnt].iter().enumerate() {
                    let o = first + t * 3;
                    let v = u32::from_le_bytes([src[o], src[o + 1], src[o + 2], 0]);
                    let px = _mm_cvtepu8_epi32(_mm_cvtsi32_si128(v as i32));
                    acc = _mm_add_epi32(acc, _mm_mullo_epi32(px, _mm_set1_epi32(kv)));
                }
            }
            let sh = _mm_srai_epi32::<{ PRECISION_BITS as i32 }>(acc);
            let packed = _mm_packus_epi16(_mm_packs_epi32(sh, sh), _mm_setzero_si128());
            let v = _mm_cvtsi128_si32(packed) as u32;
            out[0] = v as u8;
            out[1] = (v >> 8) as u8;
            out[2] = (v >> 16) as u8;
        }
    }
}

#[inline(always)]
fn run_passes(job: &Passes, tmp: &mut [u8], acc: &mut Vec<i32>, dst: &mut [u8]) {
    horizontal_or_copy(job, tmp);
    vertical(job, tmp, acc, dst);
}

#[inline(always)]
fn horizontal_or_copy(job: &Passes, tmp: &mut [u8]) {
    let row_len = job.row_len;
    let half = 1i32 << (PRECISION_BITS - 1);
    // Horizontal pass (or plain copy of the window columns).
    match job.hc {
        Some(hc) => {
            let ks = hc.ksize;
            for r in 0..job.rows {
                let off = (job.row0 + r) * job.stride + job.x0 * 3;
                let srow = &job.src[off..];
                let trow = &mut tmp[r * row_len..(r + 1) * row_len];
                for ((out, &(xmin, cnt)), k) in trow.chunks_exact_mut(3).zip(&hc.bounds).zip(hc.k.chunks_exact(ks)) {
                    let p = &srow[xmin * 3..(xmin + cnt) * 3];
                    let (mut a, mut b, mut c) = (half, half, half);
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
fn vertical(job: &Passes, tmp: &[u8], acc: &mut Vec<i32>, dst: &mut [u8]) {
    let row_len = job.row_len;
    let half = 1i32 << (PRECISION_BITS - 1);
    // Vertical pass (or copy).
    match job.vc {
        Some(vc) => {
            acc.clear();
            acc.resize(row_len, 0);
            let ks = vc.ksize;
            for ((drow, &(ymin, cnt)), k) in dst.chunks_exact_mut(row_len).zip(&vc.bounds).zip(vc.k.chunks_exact(ks)) {
                acc.fill(half);
                for (t, &kv) in k[..cnt].iter().enumerate() {
                    let ro = (ymin - job.r0 + t) * row_len;
                    let trow = &tmp[ro..ro + row_len];
                    for (a, &p) in acc.iter_mut().zip(trow) {
                        *a += p as i32 * kv;
                    }
                }
                for (d, &a) in drow.iter_mut().zip(acc.iter()) {
                    *d = clip8(a);
                }
            }
        }
        None => dst.copy_from_slice(&tmp[..dst.len()]),
    }
}

/// `F.resized_crop(img, top, left, h, w, (out, out), BICUBIC)` as an RGB8 image.
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
    let mut boxes = Vec::new();
    if rng.random::<f64>() > p {
        return boxes;
    }
    let area = (img_h * img_w) as f64;
    let max_count = max_count.max(1);
    let count = if max_count == 1 { 1 } else { rng.random_range(1..=max_count) };
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
                for c in 0..chans {
                    for y in top..top + h {
                        let row = &mut chw[(c * img_h + y) * img_w + left..(c * img_h + y) * img_w + left + w];
                        for v in row {
                            *v = StandardNormal.sample(rng);
                        }
                    }
                }
                boxes.push(CropBox { top: top as u32, left: left as u32, height: h as u32, width: w as u32 });
                break;
            }
        }
    }
    boxes
}

// ---------------------------------------------------------------------------------------------
// ImageTransform
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Debug)]
enum Mode {
    Eval,
    /// timm create_transform path.
    Timm { scale: (f64, f64), ratio: (f64, f64), re_prob: f64, re_count: usize },
    /// OpenCLIP's own torchvision path.
    Torchvision { scale: (f64, f64), gray_scale_prob: f64 },
}

/// OpenCLIP's image preprocessing (train or eval) producing normalised CHW f32.
#[derive(Clone, Debug)]
pub struct ImageTransform {
    size: u32,
    mode: Mode,
    interpolation: Interpolation,
    /// `(v / 255 - mean[c]) / std[c]` for each channel and byte value, in f32 like torchvision.
    lut: Vec<[f32; 256]>,
}

fn make_lut(mean: [f32; 3], std: [f32; 3]) -> Vec<[f32; 256]> {
    (0..3)
        .map(|c| {
            let mut t = [0f32; 256];
            for (v, o) in t.iter_mut().enumerate() {
                *o = (v as f32 / 255.0 - mean[c]) / std[c];
            }
            t
        })
        .collect()
}

impl ImageTransform {
    /// OpenCLIP `image_transform(image_size, is_train=True, aug_cfg=aug)` (bicubic).
    pub fn train(image_size: u32, aug: &AugCfg, mean: [f32; 3], std: [f32; 3]) -> ImageTransform {
        let mode = if aug.use_timm {
            Mode::Timm { scale: aug.scale, ratio: aug.ratio, re_prob: aug.re_prob, re_count: aug.re_count }
        } else {
            Mode::Torchvision { scale: aug.scale, gray_scale_prob: aug.gray_scale_prob }
        };
        ImageTransform { size: image_size, mode, interpolation: Interpolation::Bicubic, lut: make_lut(mean, std) }
    }

    /// OpenCLIP `image_transform(image_size, is_train=False)`: shortest-side bicubic resize,
    /// centre crop, normalise.
    pub fn eval(image_size: u32, mean: [f32; 3], std: [f32; 3]) -> ImageTransform {
        ImageTransform { size: image_size, mode: Mode::Eval, interpolation: Interpolation::Bicubic, lut: make_lut(mean, std) }
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
        assert_eq!(out.len(), 3 * n, "output buffer must hold 3*size*size values");
        assert!(img.width() > 0 && img.height() > 0, "empty image");
        PX.with(|px| {
            let mut px = px.borrow_mut();
            px.resize(3 * n, 0);
            self.apply_px(img, rng, out, &mut px[..3 * n]);
        });
    }

    fn apply_px<R: Rng + ?Sized>(&self, img: &RgbImage, rng: &mut R, out: &mut [f32], px: &mut [u8]) {
        let s = self.size;
        let n = (s * s) as usize;
        let mut gray = false;
        match &self.mode {
            Mode::Eval => {
                let (rw, rh) = shortest_side_size(img.width(), img.height(), s);
                let (rw, rh) = (rw.max(s), rh.max(s));
                // torchvision center_crop: int(round((H - size) / 2)), half to even.
                let top = py_round((rh - s) as f64 / 2.0) as u32;
                let left = py_round((rw - s) as f64 / 2.0) as u32;
                let full = CropBox { top: 0, left: 0, height: img.height(), width: img.width() };
                let f = if self.interpolation == Interpolation::Bilinear { Filter::Bilinear } else { Filter::Bicubic };
                resize_crop_window_with(img, full, rw, rh, (left, top, s, s), f, px);
            }
            Mode::Timm { scale, ratio, .. } => {
                let b = random_resized_crop_params(img.width(), img.height(), *scale, *ratio, rng);
                let f = match self.interpolation {
                    Interpolation::Bicubic => Filter::Bicubic,
                    Interpolation::Bilinear => Filter::Bilinear,
                    Interpolation::Random => {
                        if rng.random_range(0..2) == 0 { Filter::Bilinear } else { Filter::Bicubic }
                    }
                };
                resize_crop_window_with(img, b, s, s, (0, 0, s, s), f, px);
            }
            Mode::Torchvision { scale, gray_scale_prob } => {
                let b = random_resized_crop_params(img.width(), img.height(), *scale, (3.0 / 4.0, 4.0 / 3.0), rng);
                resize_crop_window(img, b, s, s, (0, 0, s, s), px);
                gray = *gray_scale_prob > 0.0 && rng.random::<f64>() < *gray_scale_prob;
            }
        }
        let (o0, rest) = out.split_at_mut(n);
        let (o1, o2) = rest.split_at_mut(n);
        let (l0, l1, l2) = (&self.lut[0], &self.lut[1], &self.lut[2]);
        if gray {
            // PIL convert("L"): (R*19595 + G*38470 + B*7471 + 0x8000) >> 16, replicated.
            for (i, p) in px.chunks_exact(3).enumerate() {
                let l = ((p[0] as u32 * 19595 + p[1] as u32 * 38470 + p[2] as u32 * 7471 + 0x8000) >> 16) as usize;
                o0[i] = l0[l];
                o1[i] = l1[l];
                o2[i] = l2[l];
            }
        } else {
            for (((p, a), b), c) in px.chunks_exact(3).zip(o0.iter_mut()).zip(o1.iter_mut()).zip(o2.iter_mut()) {
                *a = l0[p[0] as usize];
                *b = l1[p[1] as usize];
                *c = l2[p[2] as usize];
            }
        }
        if let Mode::Timm { re_prob, re_count, .. } = self.mode {
            if re_prob > 0.0 {
                random_erasing(out, 3, s as usize, s as usize, re_prob, re_count, rng);
            }
        }
    }
}
