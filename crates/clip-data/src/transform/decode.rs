//! Image bytes → RGB8, as OpenCLIP's webdataset `decode("pilrgb")` (PIL `.convert("RGB")`: alpha
//! dropped, gray replicated).

use anyhow::{Context, Result};
use image::RgbImage;

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
