//! Image decode and OpenCLIP's train / eval preprocessing, without libtorch.
//!
//! * [`decode_image`]: jpg/png/webp bytes → RGB8 (PIL `.convert("RGB")`: alpha dropped, gray
//!   replicated), as OpenCLIP's webdataset `decode("pilrgb")` does.
//! * Eval ([`ImageTransform::eval`]): torchvision `Resize(size)` (shortest side, bicubic,
//!   antialiased = PIL `Image.resize(BICUBIC)`), `CenterCrop(size)`, `ToTensor`, `Normalize`;
//!   with `--image-resize-mode` ([`ResizeMode`]) `longest` (OpenCLIP's `ResizeKeepRatio` to the
//!   longest side, then `CenterCropOrPad` with black) or `squash` (`Resize((size, size))`).
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
//!
//! One concern a file: `decode` (bytes → RGB8), `aug_cfg` (`--aug-cfg`), `crop` (crop boxes,
//! resized crops), `resample` (the resampler), `normalize` (`ToTensor` + `Normalize`, AVX2),
//! `erasing` (random erasing and its noise); this file holds [`ImageTransform`], which chains
//! them.

use image::RgbImage;
use rand::Rng;

mod aug_cfg;
mod crop;
mod decode;
mod erasing;
mod normalize;
mod resample;

pub use aug_cfg::AugCfg;
pub use crop::{
    random_resized_crop_params, resize_crop_window, resize_crop_window_with, resized_crop,
    shortest_side_size, CropBox,
};
pub use decode::decode_image;
pub use erasing::random_erasing;
pub use normalize::{OPENAI_MEAN, OPENAI_STD};
pub use resample::Filter;

use crop::{check_window, py_round};
use erasing::erasing_boxes;
use normalize::{stream_copy, Normalize};

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

impl Interpolation {
    /// OpenCLIP's `--image-interpolation` names.
    pub fn parse(name: &str) -> Option<Interpolation> {
        match name {
            "bicubic" => Some(Interpolation::Bicubic),
            "bilinear" => Some(Interpolation::Bilinear),
            "random" => Some(Interpolation::Random),
            _ => None,
        }
    }
}

/// `--image-resize-mode`: how the eval transform fits an image into its square (OpenCLIP applies
/// it to inference only; training crops ignore it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum ResizeMode {
    /// The shortest side to the size, then a centre crop.
    #[default]
    Shortest,
    /// The longest side to the size (aspect kept), then centred on black padding.
    Longest,
    /// Both sides to the size (aspect not kept).
    Squash,
}

impl ResizeMode {
    /// OpenCLIP's `--image-resize-mode` names.
    pub fn parse(name: &str) -> Option<ResizeMode> {
        match name {
            "shortest" => Some(ResizeMode::Shortest),
            "longest" => Some(ResizeMode::Longest),
            "squash" => Some(ResizeMode::Squash),
            _ => None,
        }
    }
}

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
    resize_mode: ResizeMode,
    norm: Normalize,
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
        ImageTransform {
            size: image_size,
            mode,
            interpolation: Interpolation::Bicubic,
            resize_mode: ResizeMode::Shortest,
            norm: Normalize::new(mean, std),
        }
    }

    /// OpenCLIP `image_transform(image_size, is_train=False)`: shortest-side bicubic resize,
    /// centre crop, normalise.
    pub fn eval(image_size: u32, mean: [f32; 3], std: [f32; 3]) -> ImageTransform {
        ImageTransform {
            size: image_size,
            mode: Mode::Eval,
            interpolation: Interpolation::Bicubic,
            resize_mode: ResizeMode::Shortest,
            norm: Normalize::new(mean, std),
        }
    }

    /// Set `--image-interpolation` (default bicubic). Only the `use_timm` train path draws
    /// bilinear/bicubic at random; eval maps `Random` to bicubic; the non-timm train path is
    /// always bicubic, as in OpenCLIP.
    pub fn with_interpolation(mut self, interpolation: Interpolation) -> ImageTransform {
        self.interpolation = interpolation;
        self
    }

    /// Set `--image-resize-mode` (default shortest); only the eval transform reads it.
    pub fn with_resize_mode(mut self, resize_mode: ResizeMode) -> ImageTransform {
        self.resize_mode = resize_mode;
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
        let Plan {
            crop,
            resize: (rw, rh),
            win,
            pad: (pad_x, pad_y),
            filter,
            gray,
        } = self.plan(img, rng);
        check_window(img, crop, rw, rh, win);
        let w = s as usize;
        let (o0, rest) = out.split_at_mut(n);
        let (o1, o2) = rest.split_at_mut(n);
        // A window smaller than the output (`longest`) sits on black padding: every pixel
        // starts as normalised 0, and the window's rows land at the padding's offsets.
        let padded = win.2 < s || win.3 < s;
        if padded {
            self.norm.fill_black(o0, o1, o2);
        }
        let (pad_x, pad_y, ww) = (pad_x as usize, pad_y as usize, win.2 as usize);
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
            let at = (y + pad_y) * w + pad_x..(y + pad_y) * w + pad_x + ww;
            let (a, b, c) = (&mut o0[at.clone()], &mut o1[at.clone()], &mut o2[at]);
            if erase
                .iter()
                .any(|(bx, _)| (bx.top as usize..(bx.top + bx.height) as usize).contains(&y))
            {
                let (sa, rest) = staging.split_at_mut(w);
                let (sb, sc) = rest.split_at_mut(w);
                self.norm.row(row, sa, sb, sc, false);
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
                self.norm.gray_row(row, a, b, c);
            } else {
                self.norm.row(row, a, b, c, !padded);
            }
        });
        #[cfg(target_arch = "x86_64")]
        // SAFETY: SSE is baseline on x86_64. Orders the streaming stores of `Normalize::row`.
        unsafe {
            std::arch::x86_64::_mm_sfence()
        };
    }

    /// The mode's geometry for `img` and its random draws before erasing (crop box, then the
    /// filter or the gray-scale coin).
    fn plan<R: Rng + ?Sized>(&self, img: &RgbImage, rng: &mut R) -> Plan {
        let s = self.size;
        let (iw, ih) = (img.width(), img.height());
        match &self.mode {
            Mode::Eval => {
                let full = CropBox {
                    top: 0,
                    left: 0,
                    height: ih,
                    width: iw,
                };
                // OpenCLIP's eval maps `random` to bicubic.
                let filter = if self.interpolation == Interpolation::Bilinear {
                    Filter::Bilinear
                } else {
                    Filter::Bicubic
                };
                eval_plan(self.resize_mode, full, s, filter)
            }
            Mode::Timm { scale, ratio, .. } => {
                let crop = random_resized_crop_params(iw, ih, *scale, *ratio, rng);
                let filter = match self.interpolation {
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
                Plan::whole_output(crop, s, filter, false)
            }
            Mode::Torchvision {
                scale,
                gray_scale_prob,
            } => {
                let crop = random_resized_crop_params(iw, ih, *scale, (3.0 / 4.0, 4.0 / 3.0), rng);
                let gray = *gray_scale_prob > 0.0 && rng.random::<f64>() < *gray_scale_prob;
                Plan::whole_output(crop, s, Filter::Bicubic, gray)
            }
        }
    }
}

/// The eval transform's geometry for the whole image `full` and output side `s`, by resize mode.
fn eval_plan(mode: ResizeMode, full: CropBox, s: u32, filter: Filter) -> Plan {
    let (iw, ih) = (full.width, full.height);
    match mode {
        ResizeMode::Shortest => {
            let (rw, rh) = shortest_side_size(iw, ih, s);
            let (rw, rh) = (rw.max(s), rh.max(s));
            // torchvision center_crop: int(round((H - size) / 2)), half to even.
            let top = py_round((rh - s) as f64 / 2.0) as u32;
            let left = py_round((rw - s) as f64 / 2.0) as u32;
            Plan {
                crop: full,
                resize: (rw, rh),
                win: (left, top, s, s),
                pad: (0, 0),
                filter,
                gray: false,
            }
        }
        ResizeMode::Longest => {
            // ResizeKeepRatio(longest=1): ratio = max(h/s, w/s), sides round(x / ratio) (Python's
            // round, in f64); then CenterCropOrPad: padding (s - side) // 2 before.
            let ratio = (ih as f64 / s as f64).max(iw as f64 / s as f64);
            let side = |x: u32| (py_round(x as f64 / ratio) as u32).clamp(1, s);
            let (rw, rh) = (side(iw), side(ih));
            Plan {
                crop: full,
                resize: (rw, rh),
                win: (0, 0, rw, rh),
                pad: ((s - rw) / 2, (s - rh) / 2),
                filter,
                gray: false,
            }
        }
        ResizeMode::Squash => Plan::whole_output(full, s, filter, false),
    }
}

/// Where one output image comes from: the crop box in the source, the size it is resized to,
/// the window `(x, y, w, h)` of that resize which is the output, where its top-left corner lands
/// in the output (`pad`, non-zero only on `longest`'s padding), the filter, and whether it is
/// made gray.
struct Plan {
    crop: CropBox,
    resize: (u32, u32),
    win: (u32, u32, u32, u32),
    pad: (u32, u32),
    filter: Filter,
    gray: bool,
}

impl Plan {
    /// `crop` resized to `size × size`, all of it the output (the random-resized-crop paths).
    fn whole_output(crop: CropBox, size: u32, filter: Filter, gray: bool) -> Plan {
        Plan {
            crop,
            resize: (size, size),
            win: (0, 0, size, size),
            pad: (0, 0),
            filter,
            gray,
        }
    }
}
