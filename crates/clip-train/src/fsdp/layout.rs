//! How a unit's parameters are laid out across the ranks of a shard group: FSDP's flat
//! parameter. A unit's parameters of one storage dtype form a *group*: concatenated in the
//! unit's state-dict order into one flat vector of N elements, padded with zeros to R·S
//! (S = ⌈N / R⌉, R ranks in the shard group), and rank r owns elements [r·S, (r+1)·S) — its
//! *shard*, in the parameters' own dtype, with its gradient and AdamW moments beside it.
//!
//! The module's parameter tensors stay the model's leaves (autograd and the model code see the
//! same tensors as without sharding), but their data become views into the group's `full`
//! buffer of R·S elements in the gather dtype, whose memory is given only while the unit is
//! gathered (`torch_ext::storage`). The layout depends on R, not on the rank: a checkpoint of
//! any layout is read back element by element through the parameters' keys.

use anyhow::{bail, Result};
use tch::{Device, Kind, Tensor};

/// One parameter of a group.
pub(crate) struct FlatParam {
    /// Its state-dict key.
    pub key: String,
    /// The model's leaf (its data a view into the group's `full` buffer).
    pub tensor: Tensor,
    pub shape: Vec<i64>,
    /// Its first element in the group's flat vector.
    pub offset: i64,
    pub numel: i64,
    /// Requires grad (not locked): has AdamW moments and a gradient.
    pub trainable: bool,
}

/// The part of one parameter a rank's shard holds: elements `[start, start + len)` of the
/// parameter (flattened), at `at` in the shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub param: usize,
    pub start: i64,
    pub at: i64,
    pub len: i64,
}

/// A unit's parameters of one storage dtype, and this rank's shard of them.
pub(crate) struct Group {
    pub params: Vec<FlatParam>,
    /// Elements of all parameters (unpadded).
    pub numel: i64,
    /// Elements per rank.
    pub shard_len: i64,
    /// The parameters' own dtype: the shard's, its gradient's and its moments'.
    pub storage: Kind,
    /// The dtype the parameters are gathered (and computed) in.
    pub gather: Kind,
    /// This rank's elements of the parameters (the master weights AdamW updates).
    pub shard: Tensor,
    /// Their gradient, averaged over the ranks and summed over the step's backwards.
    pub grad: Tensor,
    pub exp_avg: Tensor,
    pub exp_avg_sq: Tensor,
    /// R·S elements in `gather`: the parameters' data are views into it; its memory is there
    /// only while the unit is gathered.
    pub full: Tensor,
}

/// Elements per rank for `numel` elements over `ranks` ranks.
pub(crate) fn shard_len(numel: i64, ranks: usize) -> i64 {
    (numel + ranks as i64 - 1) / ranks as i64
}

/// The pieces of `params` (offsets and sizes) that elements `[lo, lo + len)` of the flat vector
/// hold, with `at` relative to `lo`.
pub(crate) fn pieces_in(params: &[(i64, i64)], lo: i64, len: i64) -> Vec<Piece> {
    let hi = lo + len;
    params
        .iter()
        .enumerate()
        .filter_map(|(i, &(offset, numel))| {
            let (a, b) = (offset.max(lo), (offset + numel).min(hi));
            (a < b).then_some(Piece {
                param: i,
                start: a - offset,
                at: a - lo,
                len: b - a,
            })
        })
        .collect()
}

impl Group {
    /// Takes rank `rank`'s shard of `params` (all of `storage` dtype, on `device`) and points
    /// their data at a released `full` buffer in `gather` dtype. `shard_device`: where the shard,
    /// its gradient and moments live (the host with `--fsdp-offload-cpu`).
    pub(crate) fn new(
        params: Vec<(String, Tensor)>,
        ranks: usize,
        rank: usize,
        gather: Kind,
        shard_device: Device,
    ) -> Result<Group> {
        let storage = params[0].1.kind();
        let device = params[0].1.device();
        let mut offset = 0;
        let mut flat_params = Vec::with_capacity(params.len());
        for (key, t) in params {
            if t.kind() != storage {
                bail!(
                    "FSDP group of {storage:?} parameters got {key} in {:?}",
                    t.kind()
                );
            }
            let numel = t.numel() as i64;
            flat_params.push(FlatParam {
                key,
                shape: t.size(),
                trainable: t.requires_grad(),
                tensor: t,
                offset,
                numel,
            });
            offset += numel;
        }
        let numel = offset;
        let shard_len = shard_len(numel, ranks);
        let full = tch::no_grad(|| -> Result<Tensor> {
            let mut parts: Vec<Tensor> = flat_params
                .iter()
                .map(|p| p.tensor.detach().reshape([-1]))
                .collect();
            parts.push(Tensor::zeros(
                [shard_len * ranks as i64 - numel],
                (storage, device),
            ));
            Ok(Tensor::cat(&parts, 0))
        })?;
        // Gradients and moments only where AdamW steps something (locked units have none).
        let moments = match flat_params.iter().any(|p| p.trainable) {
            true => shard_len,
            false => 0,
        };
        let place = |t: Tensor| match shard_device == device {
            true => Ok(t),
            false => super::host(&t, device),
        };
        let opts = (storage, device);
        let shard = place(full.narrow(0, rank as i64 * shard_len, shard_len).copy())?;
        drop(full);
        let full = Tensor::empty([shard_len * ranks as i64], (gather, device));
        tch::no_grad(|| {
            for p in &flat_params {
                let mut t = p.tensor.shallow_clone();
                t.set_data(&full.narrow(0, p.offset, p.numel).view(p.shape.as_slice()));
            }
        });
        torch_ext::storage::release(&full)?;
        Ok(Group {
            params: flat_params,
            numel,
            shard_len,
            storage,
            gather,
            grad: place(Tensor::zeros([moments], opts))?,
            exp_avg: place(Tensor::zeros([moments], opts))?,
            exp_avg_sq: place(Tensor::zeros([moments], opts))?,
            shard,
            full,
        })
    }

    /// The parameters' `(offset, numel)`.
    pub(crate) fn extents(&self) -> Vec<(i64, i64)> {
        self.params.iter().map(|p| (p.offset, p.numel)).collect()
    }

    /// The pieces of rank `rank`'s shard.
    pub(crate) fn pieces(&self, rank: usize) -> Vec<Piece> {
        pieces_in(
            &self.extents(),
            rank as i64 * self.shard_len,
            self.shard_len,
        )
    }

    /// Whether AdamW steps any of its parameters (it has a gradient and moments).
    pub(crate) fn trainable(&self) -> bool {
        self.grad.numel() > 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_each_shard_exactly() {
        // Three parameters of 5, 2 and 4 elements over 3 ranks: 11 → S = 4, one padding element.
        let params = [(0, 5), (5, 2), (7, 4)];
        assert_eq!(shard_len(11, 3), 4);
        let p = |param, start, at, len| Piece {
            param,
            start,
            at,
            len,
        };
        assert_eq!(pieces_in(&params, 0, 4), vec![p(0, 0, 0, 4)]);
        assert_eq!(
            pieces_in(&params, 4, 4),
            vec![p(0, 4, 0, 1), p(1, 0, 1, 2), p(2, 0, 3, 1)]
        );
        assert_eq!(pieces_in(&params, 8, 4), vec![p(2, 1, 0, 3)]);
    }

    #[test]
    fn a_group_shards_and_points_the_parameters_at_a_released_buffer() {
        let a = Tensor::arange(6, (Kind::Float, Device::Cpu)).view([2, 3]);
        let b = Tensor::from_slice(&[10f32, 11.0]).set_requires_grad(true);
        let params = vec![
            ("a".to_string(), a.shallow_clone()),
            ("b".into(), b.shallow_clone()),
        ];
        let g = Group::new(params, 3, 2, Kind::Float, Device::Cpu).unwrap();
        // 8 elements over 3 ranks: S = 3; rank 2 holds elements 6, 7 and one of padding.
        assert_eq!((g.numel, g.shard_len), (8, 3));
        assert_eq!(Vec::<f32>::try_from(&g.shard).unwrap(), vec![10., 11., 0.]);
        assert_eq!(
            g.pieces(2),
            vec![Piece {
                param: 1,
                start: 0,
                at: 0,
                len: 2
            }]
        );
        assert!(!g.params[0].trainable && g.params[1].trainable);
        // The model's tensors keep shape and dtype, without memory until gathered.
        assert_eq!(a.size(), vec![2, 3]);
        assert_eq!(torch_ext::storage::nbytes(&a).unwrap(), 0);
        let gathered = Tensor::arange(9, (Kind::Float, Device::Cpu));
        torch_ext::storage::fill_from(&g.full, gathered).unwrap();
        assert_eq!(Vec::<f32>::try_from(&b).unwrap(), vec![6., 7.]);
        assert!(b.requires_grad() && b.is_leaf());
    }
}
