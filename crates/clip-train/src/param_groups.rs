//! Which optimizer group each trainable parameter joins — its weight decay, its learning-rate
//! scale and (for Muon) whether it goes to the AdamW fallback — by one of three rules:
//!
//! - [`Rules::Main`]: OpenCLIP 3.3.0's `--opt adamw` (main.py): no decay for tensors with fewer
//!   than 2 dimensions or names containing `bn`, `ln`, `bias` or `logit_scale`.
//! - [`Rules::Timm`]: OpenCLIP 3.3.0's `--opt timm/NAME`: timm's `param_groups_weight_decay`
//!   with `model.no_weight_decay()` — no decay for 1-D tensors, `*.bias` and those names
//!   (fnmatch patterns); with `--wd 0` everything in one group.
//! - [`Rules::Dev`]: the development branch's `create_optimizer` (open_clip_train/optim.py), which
//!   a run follows as soon as it uses one of that branch's flags: no decay for 1-D tensors, the
//!   model's `no_weight_decay()` names and the `--wd-exclude` patterns (fnmatchcase on the full
//!   name); `--opt-fallback-list` patterns flag groups for Muon's fallback; with
//!   `--image-layer-decay` / `--text-layer-decay` each tower's layer group g of n gets the
//!   learning-rate scale decay^(n−1−g) (the head, last, at 1), everything else 1, and groups are
//!   keyed by (scale, decay, fallback), listed largest scale first.
//!
//! The model's side (its `no_weight_decay()` names, its towers' layer groups) comes in a
//! [`ModelLayout`] from whoever built the model: the optimizer does not reach up to it.

use anyhow::{bail, Result};
use tch::Tensor;

/// What the rules need to know about the model.
#[derive(Debug, Clone, Default)]
pub struct ModelLayout {
    /// `model.no_weight_decay()`.
    pub no_weight_decay: Vec<String>,
    /// The image tower's layer groups (`model.visual.layer_groups()`).
    pub image: TowerLayers,
    /// The text tower's (`_text_layer_groups(model)`).
    pub text: TowerLayers,
}

/// A tower's parameters by ordered layer group, the last the head.
#[derive(Debug, Clone, Default)]
pub struct TowerLayers {
    pub count: usize,
    /// `(name, group)`.
    pub of: Vec<(String, usize)>,
}

/// The development branch's settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DevRules {
    /// `--wd-exclude`.
    pub wd_exclude: Vec<String>,
    /// `--opt-fallback-list`.
    pub fallback: Vec<String>,
    /// `--image-layer-decay` (None, or 1: off).
    pub image_layer_decay: Option<f64>,
    /// `--text-layer-decay`.
    pub text_layer_decay: Option<f64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rules {
    Main,
    Timm,
    Dev(DevRules),
}

/// One optimizer group.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    /// As the development branch names them (`wd`, `no_wd`, `lr_scale=0.75/wd/fallback`).
    pub name: String,
    pub weight_decay: f64,
    /// Multiplies the schedule's learning rate.
    pub lr_scale: f64,
    /// Muon's AdamW fallback (`use_fallback`).
    pub fallback: bool,
}

/// The groups, and the group of each trainable parameter of `named` (in order; tensors not
/// requiring grad are left out, as OpenCLIP leaves out locked towers).
pub fn assign(
    named: &[(String, Tensor)],
    rules: &Rules,
    weight_decay: f64,
    layout: &ModelLayout,
) -> Result<(Vec<Group>, Vec<usize>)> {
    let trainable: Vec<(&String, &Tensor)> = named
        .iter()
        .filter(|(_, t)| t.requires_grad())
        .map(|(n, t)| (n, t))
        .collect();
    let keyed: Vec<(Key, Group)> = match rules {
        Rules::Main => trainable
            .iter()
            .map(|(n, t)| {
                let no_wd = t.dim() < 2
                    || ["bn", "ln", "bias", "logit_scale"]
                        .iter()
                        .any(|s| n.contains(s));
                (key(1.0, no_wd, false), plain(no_wd, false, weight_decay))
            })
            .collect(),
        Rules::Timm => trainable
            .iter()
            .map(|(n, t)| {
                let no_wd = weight_decay == 0.0
                    || t.dim() <= 1
                    || n.ends_with(".bias")
                    || layout.no_weight_decay.iter().any(|p| fnmatch(n, p));
                (key(1.0, no_wd, false), plain(no_wd, false, weight_decay))
            })
            .collect(),
        Rules::Dev(d) => dev_keys(&trainable, d, weight_decay, layout)?,
    };
    let mut groups: Vec<Group> = vec![];
    let mut keys: Vec<Key> = vec![];
    for (k, g) in &keyed {
        if !keys.contains(k) {
            keys.push(*k);
            groups.push(g.clone());
        }
    }
    let mut order: Vec<usize> = (0..groups.len()).collect();
    match rules {
        // main.py and timm list the no-decay group first.
        Rules::Main | Rules::Timm => order.sort_by_key(|&i| !keys[i].1),
        Rules::Dev(d) if layer_decays(d)?.iter().any(Option::is_some) => order.sort_by(|&a, &b| {
            let (a, b) = (&groups[a], &groups[b]);
            b.lr_scale
                .total_cmp(&a.lr_scale)
                .then_with(|| a.name.cmp(&b.name))
        }),
        Rules::Dev(_) => {}
    }
    let index = keyed
        .iter()
        .map(|(k, _)| {
            let at = keys.iter().position(|x| x == k).unwrap();
            order.iter().position(|&i| i == at).unwrap()
        })
        .collect();
    Ok((
        order.into_iter().map(|i| groups[i].clone()).collect(),
        index,
    ))
}

/// What makes two parameters share a group: the learning-rate scale (rounded to 8 places, as
/// the development branch keys it), no decay, fallback.
type Key = (i64, bool, bool);

fn key(scale: f64, no_wd: bool, fallback: bool) -> Key {
    ((scale * 1e8).round() as i64, no_wd, fallback)
}

/// A group without a learning-rate scale.
fn plain(no_wd: bool, fallback: bool, weight_decay: f64) -> Group {
    Group {
        name: format!(
            "{}{}",
            if no_wd { "no_wd" } else { "wd" },
            if fallback { "/fallback" } else { "" }
        ),
        weight_decay: if no_wd { 0.0 } else { weight_decay },
        lr_scale: 1.0,
        fallback,
    }
}

/// The image and text decays in force: each in (0, 1] (else an error naming the flag), 1 (or
/// absent) meaning off.
pub fn layer_decays(d: &DevRules) -> Result<[Option<f64>; 2]> {
    let mut out = [None; 2];
    for (i, (flag, decay)) in [
        ("--image-layer-decay", d.image_layer_decay),
        ("--text-layer-decay", d.text_layer_decay),
    ]
    .into_iter()
    .enumerate()
    {
        match decay {
            Some(x) if !(x > 0.0 && x <= 1.0) => bail!("{flag} must be in (0, 1], got {x}"),
            Some(x) if x != 1.0 => out[i] = Some(x),
            _ => {}
        }
    }
    Ok(out)
}

/// The development branch's group of each parameter (see the module comment).
fn dev_keys(
    trainable: &[(&String, &Tensor)],
    d: &DevRules,
    weight_decay: f64,
    layout: &ModelLayout,
) -> Result<Vec<(Key, Group)>> {
    let [image, text] = layer_decays(d)?;
    let scale = |name: &str| -> f64 {
        let mut s = 1.0;
        for (decay, tower) in [(text, &layout.text), (image, &layout.image)] {
            if let (Some(decay), Some((_, g))) = (decay, tower.of.iter().find(|(n, _)| n == name)) {
                s = decay.powi((tower.count - 1 - g) as i32);
            }
        }
        s
    };
    Ok(trainable
        .iter()
        .map(|(n, t)| {
            let no_wd = t.dim() <= 1
                || layout.no_weight_decay.iter().any(|x| x == *n)
                || d.wd_exclude.iter().any(|p| fnmatch(n, p));
            let fallback = d.fallback.iter().any(|p| fnmatch(n, p));
            let mut g = plain(no_wd, fallback, weight_decay);
            if image.is_none() && text.is_none() {
                return (key(1.0, no_wd, fallback), g);
            }
            let s = scale(n);
            g.name = format!("lr_scale={}/{}", format_4g(s), g.name);
            g.lr_scale = s;
            (key(s, no_wd, fallback), g)
        })
        .collect())
}

/// Python's `f"{x:.4g}"` for the scales in (0, 1].
fn format_4g(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    // %g picks its form by the exponent after rounding to 4 significant digits (9.9996e-05
    // prints as 0.0001).
    let s = format!("{x:.3e}");
    let (m, e) = s.split_once('e').unwrap();
    let exp: i32 = e.parse().unwrap();
    if !(-4..4).contains(&exp) {
        let m = m.trim_end_matches('0').trim_end_matches('.');
        return format!("{m}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs());
    }
    let decimals = (3 - exp) as usize;
    let s = format!("{x:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Python's `fnmatch.fnmatchcase(name, pattern)` (what `fnmatch.fnmatch` is on POSIX): `*` any
/// run of characters (dots included), `?` one, `[seq]` / `[!seq]` a class; the rest literal.
pub fn fnmatch(name: &str, pattern: &str) -> bool {
    let n: Vec<char> = name.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    matches_at(&n, &p)
}

fn matches_at(n: &[char], p: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| matches_at(&n[i..], &p[1..])),
        Some('?') => !n.is_empty() && matches_at(&n[1..], &p[1..]),
        Some('[') => match class(p) {
            Some((len, hit)) => !n.is_empty() && hit(n[0]) && matches_at(&n[1..], &p[len..]),
            // No closing bracket: a literal '['.
            None => n.first() == Some(&'[') && matches_at(&n[1..], &p[1..]),
        },
        Some(c) => n.first() == Some(c) && matches_at(&n[1..], &p[1..]),
    }
}

type ClassTest = Box<dyn Fn(char) -> bool>;

/// A `[...]` class at the start of `p`: its length and its test, as fnmatch.translate reads it
/// (`!` negates, a leading `]` is literal, `a-z` ranges).
fn class(p: &[char]) -> Option<(usize, ClassTest)> {
    let mut i = 1;
    let negate = p.get(i) == Some(&'!');
    if negate {
        i += 1;
    }
    let start = i;
    if p.get(i) == Some(&']') {
        i += 1;
    }
    while i < p.len() && p[i] != ']' {
        i += 1;
    }
    if i >= p.len() {
        return None;
    }
    let body: Vec<char> = p[start..i].to_vec();
    let test = move |c: char| {
        let mut j = 0;
        let mut hit = false;
        while j < body.len() {
            if j + 2 < body.len() && body[j + 1] == '-' {
                hit |= body[j] <= c && c <= body[j + 2];
                j += 3;
            } else {
                hit |= body[j] == c;
                j += 1;
            }
        }
        hit != negate
    };
    Some((i + 1, Box::new(test)))
}

#[cfg(test)]
mod tests {
    use super::{fnmatch, format_4g};

    #[test]
    fn fnmatch_reads_patterns_as_python() {
        assert!(fnmatch("visual.positional_embedding", "*pos*"));
        assert!(fnmatch(
            "visual.trunk.stages.0.blocks.0.conv_dw.bias",
            "*.bias"
        ));
        assert!(!fnmatch("visual.proj", "*.bias"));
        assert!(fnmatch("visual.proj", "visual.proj*"));
        assert!(fnmatch("positional_embedding", "positional_embedding"));
        assert!(!fnmatch(
            "visual.positional_embedding",
            "positional_embedding"
        ));
        assert!(fnmatch("a.b1", "a.b?"));
        assert!(fnmatch("a.b1", "a.b[0-9]"));
        assert!(!fnmatch("a.bx", "a.b[0-9]"));
        assert!(fnmatch("a.bx", "a.b[!0-9]"));
        assert!(fnmatch("a[1", "a[1"));
        assert!(!fnmatch("Visual.proj", "visual.*"));
    }

    #[test]
    fn scales_print_as_python_4g() {
        assert_eq!(format_4g(1.0), "1");
        assert_eq!(format_4g(0.75), "0.75");
        assert_eq!(format_4g(0.421875), "0.4219");
        assert_eq!(format_4g(0.0316406), "0.03164");
        assert_eq!(format_4g(1e-5), "1e-05");
        // Python's values (`'%.4g' % x`): 0.00012345 is 1.23449…e-4 in binary.
        assert_eq!(format_4g(0.00012345), "0.0001234");
        assert_eq!(format_4g(0.000099996), "0.0001");
        assert_eq!(format_4g(0.00099996), "0.001");
        assert_eq!(format_4g(9999.6), "1e+04");
    }
}
