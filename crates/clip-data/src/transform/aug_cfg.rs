//! `--aug-cfg key=value ...`: OpenCLIP's `AugmentationCfg`, its values read as Python literals.

use crate::pyliteral::PyLiteral;
use anyhow::{anyhow, bail, Result};

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
        // (A literal like 1e999 is an inf in Python, as here.)
        if cfg.scale.0 <= 0.0
            || cfg.scale.0 > cfg.scale.1
            || cfg.ratio.0 <= 0.0
            || cfg.ratio.0 > cfg.ratio.1
            || !cfg.scale.1.is_finite()
            || !cfg.ratio.1.is_finite()
        {
            bail!(
                "aug-cfg scale/ratio must be positive, finite (min, max) ranges, got scale={:?} ratio={:?}",
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
