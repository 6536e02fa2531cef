//! The real sample processor: decode + OpenCLIP/timm image transform + the model's tokenizer.

use std::sync::Arc;

use crate::loader::Processor;
use crate::text::TextTokenizer;
use crate::transform::{decode_image, AugCfg, ImageTransform, Interpolation, ResizeMode};
use anyhow::Result;
use rand_pcg::Pcg64;

/// OpenAI CLIP normalisation (OpenCLIP's default `--image-mean/--image-std`).
pub use crate::transform::{OPENAI_MEAN, OPENAI_STD};

pub struct ClipProcessor {
    transform: ImageTransform,
    tokenizer: Arc<TextTokenizer>,
    size: usize,
}

impl ClipProcessor {
    /// Training transform (`--aug-cfg` already parsed).
    pub fn train(
        image_size: u32,
        aug: &AugCfg,
        mean: [f32; 3],
        std: [f32; 3],
        tokenizer: Arc<TextTokenizer>,
    ) -> Self {
        ClipProcessor {
            transform: ImageTransform::train(image_size, aug, mean, std),
            tokenizer,
            size: image_size as usize,
        }
    }
    /// Eval transform (resize + centre crop).
    pub fn eval(
        image_size: u32,
        mean: [f32; 3],
        std: [f32; 3],
        tokenizer: Arc<TextTokenizer>,
    ) -> Self {
        ClipProcessor {
            transform: ImageTransform::eval(image_size, mean, std),
            tokenizer,
            size: image_size as usize,
        }
    }

    /// `--image-interpolation` and `--image-resize-mode` (which only the eval transform reads).
    pub fn with_image_options(mut self, interpolation: Interpolation, mode: ResizeMode) -> Self {
        self.transform = self
            .transform
            .with_interpolation(interpolation)
            .with_resize_mode(mode);
        self
    }
}

impl Processor for ClipProcessor {
    fn image_into(&self, bytes: &[u8], rng: &mut Pcg64, out: &mut [f32]) -> Result<()> {
        let img = decode_image(bytes)?;
        if img.width() == 0 || img.height() == 0 {
            anyhow::bail!("empty image");
        }
        self.transform.apply_into(&img, rng, out);
        Ok(())
    }
    fn text(&self, caption: &str, out: &mut [i64]) {
        self.tokenizer.tokenize_into(caption, out);
    }
    fn image_size(&self) -> usize {
        self.size
    }
    fn context_length(&self) -> usize {
        self.tokenizer.context_length()
    }
}
