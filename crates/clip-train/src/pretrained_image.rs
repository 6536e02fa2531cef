//! `--pretrained-image`: timm's pretrained weights for the image trunk, as OpenCLIP's factory has
//! timm load them (`timm.create_model(name, pretrained=True)`: the model's default pretrained tag)
//! when no `--pretrained` CLIP weights are given. clip-train never downloads: the file must be in
//! the local Hugging Face cache, where timm itself keeps it (`huggingface-cli download
//! timm/NAME.TAG` puts it there); otherwise the plan refuses the run, naming what to fetch.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use clip_model::{weights, Clip};
use tch::{nn::VarStore, Tensor};

/// timm's default pretrained tag (`timm.models.get_pretrained_cfg(name)`, timm 1.0) of each trunk
/// clip-model builds.
const DEFAULT_TAGS: &[(&str, &str)] = &[
    ("convnext_tiny", "in12k_ft_in1k"),
    ("convnext_small", "in12k_ft_in1k"),
    ("convnext_base", "fb_in22k_ft_in1k"),
    ("convnext_large", "fb_in22k_ft_in1k"),
    ("convnext_xlarge", "fb_in22k_ft_in1k"),
    ("convnext_xxlarge", "clip_laion2b_soup_ft_in1k"),
];

/// The hub cache folder, as `huggingface_hub` resolves it: `HF_HUB_CACHE`, else `HF_HOME/hub`,
/// else `$XDG_CACHE_HOME/huggingface/hub`, else `~/.cache/huggingface/hub`.
fn hub_cache(env: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    if let Some(dir) = env("HF_HUB_CACHE") {
        return dir.into();
    }
    if let Some(home) = env("HF_HOME") {
        return Path::new(&home).join("hub");
    }
    let cache = env("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(&env("HOME").unwrap_or_default()).join(".cache"));
    cache.join("huggingface").join("hub")
}

/// The cached `model.safetensors` of timm's default weights for `timm_model_name` (the snapshot
/// `refs/main` names), or an error saying what to fetch. `env` reads the environment.
pub fn locate(timm_model_name: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<PathBuf> {
    let Some((_, tag)) = DEFAULT_TAGS.iter().find(|(n, _)| *n == timm_model_name) else {
        bail!("--pretrained-image: timm has no pretrained weights for {timm_model_name}");
    };
    let repo = format!("timm/{timm_model_name}.{tag}");
    let dir = hub_cache(env).join(format!("models--timm--{timm_model_name}.{tag}"));
    let revision = std::fs::read_to_string(dir.join("refs").join("main")).ok();
    revision
        .map(|r| dir.join("snapshots").join(r.trim()).join("model.safetensors"))
        .filter(|f| f.is_file())
        .ok_or_else(|| {
            anyhow!(
                "--pretrained-image: {repo} is not in the Hugging Face cache ({}) and clip-train does not download; fetch it there (huggingface-cli download {repo}) or give CLIP weights with --pretrained",
                dir.display()
            )
        })
}

/// Loads timm's trunk weights at `path` into `model`'s `visual.trunk.` (the classifier
/// `head.fc.*` dropped, as timm drops it for OpenCLIP's trunk), every other parameter kept;
/// strictly: a trunk key missing from the file, or a file key the trunk lacks, is an error.
pub fn load(vs: &VarStore, model: &Clip, path: &Path) -> Result<()> {
    let trunk = weights::read_state_dict(path)?
        .into_iter()
        .filter(|(k, _)| !k.starts_with("head.fc."))
        .map(|(k, t)| (format!("visual.trunk.{k}"), t));
    let kept = model
        .named_parameters()
        .iter()
        .filter(|(k, _)| !k.starts_with("visual.trunk.") || k.starts_with("visual.trunk.head.fc."))
        .map(|(k, t)| (k.clone(), t.detach().copy()));
    let state_dict: Vec<(String, Tensor)> = kept.chain(trunk).collect();
    weights::load_state_dict(vs, state_dict)
        .with_context(|| format!("--pretrained-image {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn the_cache_folder_is_huggingface_hubs() {
        let hub = |vars: &[(&str, &str)]| hub_cache(&env_of(vars));
        assert_eq!(
            hub(&[("HOME", "/h")]),
            Path::new("/h/.cache/huggingface/hub")
        );
        assert_eq!(
            hub(&[("HOME", "/h"), ("XDG_CACHE_HOME", "/x")]),
            Path::new("/x/huggingface/hub")
        );
        assert_eq!(
            hub(&[("HOME", "/h"), ("HF_HOME", "/hf")]),
            Path::new("/hf/hub")
        );
        assert_eq!(
            hub(&[("HF_HOME", "/hf"), ("HF_HUB_CACHE", "/c")]),
            Path::new("/c")
        );
    }

    #[test]
    fn the_snapshot_main_names_is_found_and_a_missing_one_named() {
        let dir = std::env::temp_dir().join(format!("clip-hf-cache-{}", std::process::id()));
        let repo = dir.join("models--timm--convnext_base.fb_in22k_ft_in1k");
        let cache = dir.display().to_string();
        let vars = [("HF_HUB_CACHE", cache.as_str())];
        let err = locate("convnext_base", &env_of(&vars))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("timm/convnext_base.fb_in22k_ft_in1k is not in the Hugging Face cache")
                && err.contains("does not download"),
            "{err}"
        );
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/abc123")).unwrap();
        std::fs::write(repo.join("refs/main"), "abc123\n").unwrap();
        let file = repo.join("snapshots/abc123/model.safetensors");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(locate("convnext_base", &env_of(&vars)).unwrap(), file);
        let err = locate("convnext_test_tiny", &env_of(&vars)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--pretrained-image: timm has no pretrained weights for convnext_test_tiny"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
