//! `clip-tool embed`: image and/or text features exactly as OpenCLIP's `encode_image` /
//! `encode_text` return them (not normalised), from preprocessed tensors (`--inputs`) or from
//! image files and strings (`--images` / `--texts`, preprocessed and tokenized as OpenCLIP's
//! eval pipeline does).
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clip_data::transform::{decode_image, ImageTransform, OPENAI_MEAN, OPENAI_STD};
use clip_model::weights;
use tch::{Device, Kind, Tensor};

#[derive(clap::Args)]
pub struct Args {
    /// Built-in model name or path to an OpenCLIP model-config JSON.
    #[arg(long)]
    model: String,
    /// Weights (OpenCLIP epoch_N.pt, state dict, safetensors, clip-train checkpoint); without
    /// it the model is OpenCLIP-initialised from --seed.
    #[arg(long)]
    pretrained: Option<PathBuf>,
    /// safetensors with `image` (f32 [N,3,H,W], preprocessed) and/or `text` (i64 [N,ctx]).
    #[arg(long, conflicts_with_all = ["images", "texts"])]
    inputs: Option<PathBuf>,
    /// Image files, preprocessed with OpenCLIP's eval transform.
    #[arg(long, num_args = 1..)]
    images: Vec<PathBuf>,
    /// Texts, tokenized with OpenCLIP's tokenizer.
    #[arg(long, num_args = 1..)]
    texts: Vec<String>,
    /// Where to write `image_features` / `text_features` (safetensors).
    #[arg(long)]
    output: PathBuf,
    /// cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Rows per forward pass.
    #[arg(long, default_value_t = 32)]
    batch_size: i64,
    /// Seed of the random init when there is no --pretrained.
    #[arg(long, default_value_t = 0)]
    seed: i64,
}

pub fn run(args: Args) -> Result<()> {
    let device = crate::device::tool_device(&args.device)?;
    if args.batch_size < 1 {
        bail!("--batch-size {}: must be at least 1", args.batch_size);
    }
    let (image, text) = read_inputs(&args)?;
    if image.is_none() && text.is_none() {
        bail!("nothing to embed: give --inputs, --images or --texts");
    }
    tch::manual_seed(args.seed);
    let (vs, model) = super::build_model(&args.model, device)?;
    if let Some(p) = &args.pretrained {
        crate::checkpoint::load_weights(&vs, p, model.config())?;
    }
    let cfg = model.config();
    let mut out: Vec<(String, Tensor)> = vec![];
    if let Some(image) = image {
        let s = image.size();
        if s.len() != 4 || s[1] != 3 || image.kind() != Kind::Float {
            bail!(
                "image: expected f32 [N,3,H,W], got {:?} {s:?}",
                image.kind()
            );
        }
        let feats = batched(&image, args.batch_size, device, |x| {
            model.encode_image(x, false)
        });
        out.push(("image_features".into(), feats));
    }
    if let Some(text) = text {
        let s = text.size();
        let ctx = cfg.text.context_length;
        if s.len() != 2 || s[1] != ctx || text.kind() != Kind::Int64 {
            bail!(
                "text: expected i64 [N,{ctx}] token ids, got {:?} {s:?}",
                text.kind()
            );
        }
        let (lo, hi) = (text.min().int64_value(&[]), text.max().int64_value(&[]));
        if lo < 0 || hi >= cfg.text.vocab_size {
            bail!(
                "text: token ids must lie in [0, {}), found {lo}..={hi}",
                cfg.text.vocab_size
            );
        }
        let feats = batched(&text, args.batch_size, device, |x| model.encode_text(x));
        out.push(("text_features".into(), feats));
    }
    weights::save_safetensors(&out, &args.output)?;
    Ok(())
}

/// The (image, text) inputs from --inputs or from --images / --texts.
fn read_inputs(args: &Args) -> Result<(Option<Tensor>, Option<Tensor>)> {
    if let Some(path) = &args.inputs {
        let tensors = Tensor::read_safetensors(path)
            .with_context(|| format!("{}: unreadable safetensors file", path.display()))?;
        let mut image = None;
        let mut text = None;
        for (k, t) in tensors {
            match k.as_str() {
                "image" => image = Some(t),
                "text" => text = Some(t),
                other => bail!(
                    "{}: unexpected tensor {other:?} (expected image and/or text)",
                    path.display()
                ),
            }
        }
        return Ok((image, text));
    }
    let cfg = clip_model::ClipConfig::load(&args.model)?;
    let image = if args.images.is_empty() {
        None
    } else {
        let (h, w) = cfg.vision.image_size;
        if h != w {
            bail!("--images: the eval transform here is square; the model's image_size is {h}x{w}");
        }
        let size = h as u32;
        let transform = ImageTransform::eval(size, OPENAI_MEAN, OPENAI_STD);
        let mut rng = rand::rng();
        let mut pixels = Vec::with_capacity(args.images.len() * 3 * (size * size) as usize);
        for p in &args.images {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            let img = decode_image(&bytes)
                .with_context(|| format!("{}: not a decodable image", p.display()))?;
            pixels.extend(transform.apply(&img, &mut rng));
        }
        let n = args.images.len() as i64;
        Some(Tensor::from_slice(&pixels).reshape([n, 3, size as i64, size as i64]))
    };
    let text = if args.texts.is_empty() {
        None
    } else {
        let tokenizer = crate::tokenizer::for_model(&cfg, &args.model)?;
        for w in crate::tokenizer::warnings(&tokenizer) {
            eprintln!("clip-tool: note: {w}");
        }
        let ctx = cfg.text.context_length;
        let texts: Vec<&str> = args.texts.iter().map(String::as_str).collect();
        let ids = tokenizer.tokenize(&texts);
        Some(Tensor::from_slice(&ids).reshape([texts.len() as i64, ctx]))
    };
    Ok((image, text))
}

/// `f` over row chunks of `x` on `device`, without autograd, concatenated back on the CPU.
fn batched(x: &Tensor, batch: i64, device: Device, f: impl Fn(&Tensor) -> Tensor) -> Tensor {
    tch::no_grad(|| {
        let parts: Vec<Tensor> = x
            .split(batch, 0)
            .iter()
            .map(|c| f(&c.to_device(device)).to_device(Device::Cpu))
            .collect();
        Tensor::cat(&parts, 0)
    })
}
