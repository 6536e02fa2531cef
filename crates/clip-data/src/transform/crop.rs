//! Crop maths: the random-resized-crop box draw, the shortest-side resize size, and the resized
//! crop of a box (crop-then-resize like `F.resized_crop`) on the resampler.

use image::RgbImage;
use rand::Rng;

use super::resample::{self, Filter};

/// An integer crop box in source pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CropBox {
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}

/// Python's `int(round(x))` (round half to even).
pub(super) fn py_round(x: f64) -> i64 {
    x.round_ties_even() as i64
}

/// `random.uniform(a, b)`.
pub(super) fn uniform<R: Rng + ?Sized>(rng: &mut R, a: f64, b: f64) -> f64 {
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

pub(super) fn check_window(
    img: &RgbImage,
    crop: CropBox,
    out_w: u32,
    out_h: u32,
    win: (u32, u32, u32, u32),
) {
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
