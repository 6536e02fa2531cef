//! The model cut into *units*, the pieces a sharded trainer (clip-train's `--fsdp`, FSDP2's
//! `fully_shard` modules) gathers before they compute and frees after: every residual block of
//! either transformer and every ConvNeXt block is a unit, and the rest of each tower (embeddings,
//! stem, downsampling layers, final norms, projections) is that tower's root unit. `logit_scale`
//! and `logit_bias` belong to no unit.
//!
//! The model knows nothing of sharding: it calls [`UnitHooks`] around each unit's forward, when
//! hooks are installed ([`crate::Clip::set_unit_hooks`]), and the trainer does the rest. Units are
//! numbered in forward order: the image tower's root 0, its blocks 1..=n, the text tower's root
//! n + 1, its blocks after it ([`crate::Clip::units`] lists them in that order).

use std::cell::RefCell;
use std::sync::Arc;

use tch::Tensor;

/// What runs around a unit's forward.
pub trait UnitHooks: Send + Sync {
    /// Before unit `unit` computes, and again inside a checkpointed block's recompute during the
    /// backward: when it returns the unit's parameters hold their values.
    fn before(&self, unit: usize);
    /// After unit `unit`'s forward produced `out` (not called after a recompute): may free the
    /// unit's parameters, and returns `out` (possibly with a gradient hook attached, so that the
    /// backward can gather them again before it reaches the unit).
    fn after(&self, unit: usize, out: Tensor) -> Tensor;
}

/// Installed hooks, shared by the towers.
pub type Hooks = Arc<dyn UnitHooks>;

/// One unit: its name (the state-dict prefix of a block, `visual` / `text` for a root) and its
/// parameters, `(state-dict key, tensor)` in the model's state-dict order.
pub struct Unit {
    pub name: String,
    pub params: Vec<(String, Tensor)>,
}

/// A tower's hooks and the id of its first block.
#[derive(Default)]
pub(crate) struct BlockHooks(RefCell<Option<(Hooks, usize)>>);

impl BlockHooks {
    pub(crate) fn set(&self, hooks: Option<(Hooks, usize)>) {
        *self.0.borrow_mut() = hooks;
    }

    pub(crate) fn get(&self) -> Option<(Hooks, usize)> {
        self.0.borrow().clone()
    }
}

/// Block `unit` of a tower on `x`: `f(x)`, through `torch_ext::checkpoint` when `checkpointed`
/// (`params`: the tensors `f` reads), with the hooks around it. In a checkpointed block the
/// recompute calls `before` again (its parameters were gathered for the backward already, so that
/// one finds nothing to do unless they were freed).
pub(crate) fn run_block<F>(
    x: &Tensor,
    params: impl FnOnce() -> Vec<Tensor>,
    checkpointed: bool,
    hooks: Option<(&Hooks, usize)>,
    f: F,
) -> Tensor
where
    F: Fn(&Tensor) -> Tensor + 'static,
{
    if let Some((h, unit)) = hooks {
        h.before(unit);
    }
    let y = if checkpointed {
        let inner = hooks.map(|(h, unit)| (Arc::clone(h), unit));
        torch_ext::checkpoint(x, &params(), move |t| {
            if let Some((h, unit)) = &inner {
                h.before(*unit);
            }
            f(t)
        })
        .expect("checkpointed block")
    } else {
        f(x)
    };
    match hooks {
        Some((h, unit)) => h.after(unit, y),
        None => y,
    }
}

/// A root unit's forward: `f()` with the hooks around it.
pub(crate) fn run_root(hooks: Option<&Hooks>, unit: usize, f: impl FnOnce() -> Tensor) -> Tensor {
    if let Some(h) = hooks {
        h.before(unit);
    }
    let y = f();
    match hooks {
        Some(h) => h.after(unit, y),
        None => y,
    }
}

/// Which unit a state-dict key belongs to: `(tower, block)` with tower 0 the image tower and 1
/// the text tower (CLIP's root keys, or CustomTextCLIP's under `text.`), block `None` for the
/// tower's root; `None` for `logit_scale` / `logit_bias`.
/// `convnext_depths`: a ConvNeXt trunk's blocks per stage (its blocks are numbered across stages);
/// a timm ViT trunk's blocks are `trunk.blocks.N`.
pub(crate) fn unit_of(key: &str, convnext_depths: &[i64]) -> Option<(usize, Option<usize>)> {
    if key == "logit_scale" || key == "logit_bias" {
        return None;
    }
    let index = |rest: &str| rest.split('.').next()?.parse::<usize>().ok();
    if let Some(rest) = key.strip_prefix("visual.") {
        if let Some(rest) = rest.strip_prefix("transformer.resblocks.") {
            return Some((0, index(rest)));
        }
        if let Some(rest) = rest.strip_prefix("trunk.blocks.") {
            return Some((0, index(rest)));
        }
        if let Some(rest) = rest.strip_prefix("trunk.stages.") {
            let stage = index(rest)?;
            let before: i64 = convnext_depths.iter().take(stage).sum();
            let block = rest
                .split_once(".blocks.")
                .and_then(|(_, b)| index(b))
                .map(|b| before as usize + b);
            return Some((0, block));
        }
        return Some((0, None));
    }
    let text = key.strip_prefix("text.").unwrap_or(key);
    match text.strip_prefix("transformer.resblocks.") {
        Some(rest) => Some((1, index(rest))),
        None => Some((1, None)),
    }
}

#[cfg(test)]
mod tests {
    use super::unit_of;

    #[test]
    fn keys_map_to_their_units() {
        let d = [1, 1, 2, 1];
        assert_eq!(unit_of("logit_scale", &d), None);
        assert_eq!(unit_of("visual.conv1.weight", &d), Some((0, None)));
        assert_eq!(
            unit_of("visual.transformer.resblocks.3.ln_1.weight", &d),
            Some((0, Some(3)))
        );
        assert_eq!(
            unit_of("visual.trunk.stages.2.blocks.1.gamma", &d),
            Some((0, Some(3)))
        );
        assert_eq!(
            unit_of("visual.trunk.stages.2.downsample.1.weight", &d),
            Some((0, None))
        );
        assert_eq!(unit_of("visual.head.proj.weight", &d), Some((0, None)));
        assert_eq!(
            unit_of("visual.trunk.blocks.11.attn.qkv.weight", &[]),
            Some((0, Some(11)))
        );
        assert_eq!(
            unit_of("visual.trunk.attn_pool.latent", &[]),
            Some((0, None))
        );
        assert_eq!(
            unit_of("transformer.resblocks.0.attn.in_proj_bias", &d),
            Some((1, Some(0)))
        );
        assert_eq!(unit_of("token_embedding.weight", &d), Some((1, None)));
        assert_eq!(unit_of("text_projection", &d), Some((1, None)));
        // CustomTextCLIP's keys.
        assert_eq!(
            unit_of("text.transformer.resblocks.1.mlp.c_fc.bias", &d),
            Some((1, Some(1)))
        );
        assert_eq!(unit_of("text.text_projection.bias", &d), Some((1, None)));
        assert_eq!(unit_of("logit_bias", &d), None);
    }
}
