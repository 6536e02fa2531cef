//! Weights in and out, by OpenCLIP state-dict key. Model variables are named exactly as
//! OpenCLIP's state dict, so loading is a lookup by name: no rename tables.
//!
//! Reads: OpenCLIP training checkpoints (`epoch_N.pt`: a torch.save'd dict whose `state_dict`
//! has `module.` prefixes under DDP), plain torch.save'd state dicts (`.pt` / `.bin`), and
//! `.safetensors`. A file that holds more than the model's tensors (a training checkpoint with
//! its optimizer state) is narrowed by the caller that knows its layout. Writes: safetensors
//! that `open_clip.create_model(name, pretrained=FILE)` loads strictly.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{nn::VarStore, Tensor};

use crate::config::{ClipConfig, TimmTrunk, VisionTower};
use crate::timm_vit::resample_abs_pos_embed;

/// The on-disk formats this module reads, told apart by their first bytes, not their names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// torch.save's zip container (PyTorch ≥ 1.6).
    TorchZip,
    Safetensors,
}

pub fn detect_format(path: &Path) -> Result<Format> {
    let mut head = [0u8; 9];
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let n = f
        .read(&mut head)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if n >= 4 && head[..4] == *b"PK\x03\x04" {
        return Ok(Format::TorchZip);
    }
    // safetensors: an 8-byte little-endian header length, then a JSON object.
    if n == 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    if n >= 2 && head[0] == 0x80 {
        bail!(
            "{}: a legacy (pre-1.6, non-zip) torch.save file; re-save it with a current torch or convert it to safetensors",
            path.display()
        );
    }
    bail!(
        "{}: not a checkpoint clip-train reads (expected a torch.save zip or safetensors file{})",
        path.display(),
        if n == 0 { "; the file is empty" } else { "" }
    )
}

/// The tensors a checkpoint holds, keyed as OpenCLIP's state dict (`module.` stripped).
pub fn read_state_dict(path: &Path) -> Result<Vec<(String, Tensor)>> {
    let tensors = match detect_format(path)? {
        Format::TorchZip => {
            torch_ext::load_pickle(path)
                .with_context(|| format!("{}: unreadable torch.save file", path.display()))?
                .tensors
        }
        Format::Safetensors => Tensor::read_safetensors(path)
            .with_context(|| format!("{}: unreadable safetensors file", path.display()))?,
    };
    // OpenCLIP strips `module.` when the first key has it (a DDP-wrapped model's state dict).
    let ddp = tensors
        .first()
        .is_some_and(|(k, _)| k.starts_with("module."));
    let out: Vec<(String, Tensor)> = tensors
        .into_iter()
        .map(|(k, t)| {
            let k = if ddp {
                k.strip_prefix("module.").map(str::to_owned).unwrap_or(k)
            } else {
                k
            };
            (k, t)
        })
        .collect();
    if out.is_empty() {
        bail!("{}: holds no tensors", path.display());
    }
    Ok(out)
}

/// Copies `state_dict` into the variables of `vs` by name. Strict: every variable must be
/// present with its shape and no key may be left over; otherwise one error line lists the
/// missing, unexpected and mis-shaped keys (a few of each, with counts).
pub fn load_state_dict(vs: &VarStore, state_dict: Vec<(String, Tensor)>) -> Result<()> {
    let vars: BTreeMap<String, Tensor> = vs.variables().into_iter().collect();
    let given: BTreeMap<String, Tensor> = state_dict.into_iter().collect();
    let missing: Vec<&String> = vars.keys().filter(|k| !given.contains_key(*k)).collect();
    let unexpected: Vec<&String> = given.keys().filter(|k| !vars.contains_key(*k)).collect();
    let misshaped: Vec<String> = vars
        .iter()
        .filter_map(|(k, v)| {
            let g = given.get(k)?;
            (g.size() != v.size())
                .then(|| format!("{k}: checkpoint {:?} vs model {:?}", g.size(), v.size()))
        })
        .collect();
    if !missing.is_empty() || !unexpected.is_empty() || !misshaped.is_empty() {
        let mut parts = vec![];
        if !missing.is_empty() {
            parts.push(format!("{} missing ({})", missing.len(), few(&missing)));
        }
        if !unexpected.is_empty() {
            parts.push(format!(
                "{} unexpected ({})",
                unexpected.len(),
                few(&unexpected)
            ));
        }
        if !misshaped.is_empty() {
            parts.push(format!(
                "{} mis-shaped ({})",
                misshaped.len(),
                few(&misshaped)
            ));
        }
        bail!("state dict does not fit the model: {}", parts.join("; "));
    }
    tch::no_grad(|| {
        for (k, v) in &vars {
            let mut v = v.shallow_clone();
            v.copy_(&given[k].to_device(v.device()).to_kind(v.kind()));
        }
    });
    Ok(())
}

fn few<T: std::fmt::Display>(items: &[T]) -> String {
    const SHOWN: usize = 6;
    let mut s = items
        .iter()
        .take(SHOWN)
        .map(|k| k.to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if items.len() > SHOWN {
        s.push_str(&format!(", … {} more", items.len() - SHOWN));
    }
    s
}

/// Reads the weights at `path` into `vs` (strict), naming the file in any error.
pub fn load_weights(vs: &VarStore, path: &Path) -> Result<()> {
    let sd = read_state_dict(path)?;
    load_state_dict(vs, sd).with_context(|| format!("{}", path.display()))
}

/// Writes `tensors` as safetensors, atomically: a temporary file beside `path`, fsynced, then
/// renamed over it (and the folder fsynced), so a crash leaves the old file or the new one.
pub fn save_safetensors(tensors: &[(String, Tensor)], path: &Path) -> Result<()> {
    let cpu: Vec<(String, Tensor)> = tensors
        .iter()
        .map(|(k, t)| {
            (
                k.clone(),
                t.detach().to_device(tch::Device::Cpu).contiguous(),
            )
        })
        .collect();
    write_atomically(path, |tmp| {
        Tensor::write_safetensors(&cpu, tmp).map_err(anyhow::Error::from)
    })
}

/// The variables of `vs` by name, sorted, ready for [`save_safetensors`].
pub fn named_variables(vs: &VarStore) -> Vec<(String, Tensor)> {
    let mut v: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Runs `write` on a temporary path beside `path`, then fsyncs and renames it into place.
pub fn write_atomically(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .with_context(|| format!("{}: not a file path", path.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| -> Result<()> {
        write(&tmp)?;
        File::open(&tmp)?.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

/// OpenCLIP's `resize_pos_embed` and `resize_text_pos_embed`, which `load_checkpoint` applies to
/// every pretrained state dict: a ViT's `visual.positional_embedding` made for another grid
/// (another image size, e.g. `--force-image-size`) is resized to `cfg`'s — the class token's row
/// kept, the square grid of patch rows resampled bicubically with antialiasing — and the text
/// tower's `positional_embedding` (CustomTextCLIP: `text.positional_embedding`) for another
/// context length (`--force-context-length`) linearly. A timm ViT trunk's `visual.trunk.pos_embed`
/// for another grid (a 384 px checkpoint fine-tuned at 512, `--force-image-size`) is resampled as
/// timm's `resample_abs_pos_embed` does (what OpenCLIP's `set_input_size` and timm's checkpoint
/// filter call): the prefix tokens' rows kept, the square grid bicubic with antialiasing.
/// Anything else is left for the strict load to judge.
pub fn resize_pos_embeds(state_dict: &mut [(String, Tensor)], cfg: &ClipConfig) -> Result<()> {
    let text_pos = if cfg.custom_text {
        "text.positional_embedding"
    } else {
        "positional_embedding"
    };
    for (k, t) in state_dict.iter_mut() {
        match (k.as_str(), &cfg.vision.tower) {
            ("visual.positional_embedding", VisionTower::Vit(v)) => {
                if let Some(resized) = resize_vit_pos_embed(t, v.grid_size(cfg.vision.image_size))?
                {
                    *t = resized;
                }
            }
            ("visual.trunk.pos_embed", VisionTower::Timm(timm)) if t.dim() == 3 => {
                let TimmTrunk::Vit(v) = &timm.trunk else {
                    continue;
                };
                let prefix = if v.no_embed_class {
                    0
                } else {
                    v.num_prefix_tokens()
                };
                let rows = t.size()[1];
                let old = ((rows - prefix).max(0) as f64).sqrt() as i64;
                let square = old > 0 && old * old == rows - prefix;
                if rows != v.pos_embed_len() && square && t.size()[2] == v.embed_dim {
                    *t = resample_abs_pos_embed(t, v.grid_size(), (old, old), prefix);
                }
            }
            (k, _) if k == text_pos && t.dim() == 2 => {
                let (n, w) = (t.size()[0], t.size()[1]);
                let ctx = cfg.text.context_length;
                if n != ctx && w == cfg.text.width {
                    *t = t
                        .reshape([1, n, w])
                        .permute([0, 2, 1])
                        .f_upsample_linear1d([ctx], false, None)?
                        .permute([0, 2, 1])
                        .get(0)
                        .contiguous();
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// OpenCLIP's `convert_to_custom_text_state_dict`, which `load_checkpoint` applies when a state
/// dict has a root `positional_embedding` and the model has none (a CLIP checkpoint loaded into a
/// CustomTextCLIP, `cfg.custom_text`): if the state dict holds a `text_projection` (a bias-free
/// one: OpenCLIP looks for that key alone), every key starting with `text_projection`,
/// `positional_embedding`, `token_embedding`, `transformer` or `ln_final` moves under `text.`.
/// Otherwise the keys stay, for the strict load to judge, as OpenCLIP's does.
pub fn convert_to_custom_text(state_dict: &mut [(String, Tensor)], cfg: &ClipConfig) {
    let has = |key: &str| state_dict.iter().any(|(k, _)| k == key);
    if !cfg.custom_text || !has("positional_embedding") || !has("text_projection") {
        return;
    }
    const TEXT: [&str; 5] = [
        "text_projection",
        "positional_embedding",
        "token_embedding",
        "transformer",
        "ln_final",
    ];
    for (k, _) in state_dict.iter_mut() {
        if TEXT.iter().any(|p| k.starts_with(p)) {
            *k = format!("text.{k}");
        }
    }
}

/// The class-token row and a square grid of patch rows resized to `grid`; None when the rows
/// already fit (or are not a class token plus a square grid: the strict load reports them).
fn resize_vit_pos_embed(t: &Tensor, grid: (i64, i64)) -> Result<Option<Tensor>> {
    let size = t.size();
    let [rows, w] = size.as_slice() else {
        return Ok(None);
    };
    let old = ((rows - 1) as f64).sqrt() as i64;
    if *rows == grid.0 * grid.1 + 1 || old * old != rows - 1 {
        return Ok(None);
    }
    let img = t
        .narrow(0, 1, rows - 1)
        .reshape([1, old, old, *w])
        .permute([0, 3, 1, 2])
        .f_internal_upsample_bicubic2d_aa([grid.0, grid.1], false, None, None)?
        .permute([0, 2, 3, 1])
        .reshape([grid.0 * grid.1, *w]);
    Ok(Some(Tensor::cat(&[t.narrow(0, 0, 1), img], 0)))
}
