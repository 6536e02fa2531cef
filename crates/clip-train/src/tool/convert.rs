//! `clip-tool convert IN OUT.safetensors`: the weights of any checkpoint clip-train reads (an
//! OpenCLIP `epoch_N.pt`, a plain state dict, safetensors, a clip-train checkpoint) written as
//! OpenCLIP-keyed safetensors, which `open_clip.create_model(name, pretrained=OUT)` loads.
use std::path::PathBuf;

use anyhow::{bail, Result};
use clip_model::weights;

#[derive(clap::Args)]
pub struct Args {
    /// Checkpoint to read.
    input: PathBuf,
    /// Safetensors file to write (atomically).
    output: PathBuf,
    /// Check the weights against this model (built-in name or config JSON) strictly first.
    #[arg(long)]
    model: Option<String>,
}

pub fn run(args: Args) -> Result<()> {
    if args.output.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!(
            "{}: the output must be a .safetensors file",
            args.output.display()
        );
    }
    let tensors = crate::checkpoint::read_weights(&args.input)?;
    if let Some(model) = &args.model {
        let (vs, clip) = crate::tool::build_model(model, tch::Device::Cpu)?;
        let mut copy: Vec<_> = tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.shallow_clone()))
            .collect();
        // OpenCLIP's loader moves CLIP keys under `text.` for a CustomTextCLIP; so does the check.
        weights::convert_to_custom_text(&mut copy, clip.config());
        weights::load_state_dict(&vs, copy)
            .map_err(|e| e.context(format!("{} does not fit {model}", args.input.display())))?;
    }
    weights::save_safetensors(&tensors, &args.output)?;
    eprintln!(
        "wrote {} tensors to {}",
        tensors.len(),
        args.output.display()
    );
    Ok(())
}
