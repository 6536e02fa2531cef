//! A sharded model's state in and out of checkpoints. `--fsdp-checkpoint full` writes today's
//! single file: unit by unit (one group of one unit at a time) every rank takes part in the
//! all-gather of the parameters and both moments, and rank 0 keeps host copies — the whole state
//! once, never twice — which the checkpointer writes without copying again. Any checkpoint (full,
//! DDP's, or sharded of any layout: `checkpoint::load` assembles those) resumes by each rank
//! copying out its own pieces, key by key.

use anyhow::{bail, Context, Result};
use clip_dist::Collectives;
use tch::{Device, Tensor};

use super::layout::FlatParam;
use super::{CheckpointKind, Fsdp};
use crate::checkpoint::TrainState;
use crate::checkpointer::{Checkpointer, Write};
use crate::data::DataPosition;
use crate::optimizer::AdamW;
use crate::rundir::Log;

/// `(key, tensor)` lists: model weights, and optimizer tensors (keys without `optimizer.`).
pub(crate) type Tensors = (Vec<(String, Tensor)>, Vec<(String, Tensor)>);

/// A tensor copied by key out of a state dict.
fn find<'a>(list: &'a [(String, Tensor)], key: &str) -> Option<&'a Tensor> {
    list.iter().find(|(k, _)| k == key).map(|(_, t)| t)
}

impl Fsdp {
    /// Checkpoints the current state as `file` (`--fsdp-checkpoint`): see
    /// [`Checkpointer::save`] for `write` and `then_delete`.
    #[allow(clippy::too_many_arguments)]
    pub fn save(
        &self,
        checkpoints: &mut Checkpointer,
        file: &str,
        write: Write,
        comm: &dyn Collectives,
        state: &TrainState,
        position: &DataPosition,
        opt: &AdamW,
        then_delete: Option<String>,
        log: &mut Log,
    ) -> Result<()> {
        // Nothing non-finite is written (issue 24): every rank checks its own shards on the
        // device before anything is gathered or written; the previous checkpoint stays the
        // newest.
        let (model, optimizer) = self.local_tensors(opt, true, |_, unit, k| format!("{unit}[{k}]"));
        checkpoints.refuse_non_finite(file, comm, state, &model, &optimizer, log)?;
        drop((model, optimizer));
        match self.plan.checkpoint {
            CheckpointKind::Full => {
                let (model, optimizer) = self.gather_full(comm, opt, comm.rank() == 0)?;
                checkpoints.save_copies(
                    file,
                    write,
                    comm,
                    state,
                    position,
                    &model,
                    &optimizer,
                    then_delete,
                    log,
                )
            }
            CheckpointKind::Sharded => {
                let state = checkpoints.with_positions(comm, state, position)?;
                super::sharded::save(self, checkpoints, file, comm, &state, opt, then_delete, log)?;
                if write == Write::Now {
                    comm.barrier()
                        .context("barrier after saving a checkpoint")?;
                }
                Ok(())
            }
        }
    }

    /// The whole state under OpenCLIP's keys, gathered unit by unit; host copies kept only where
    /// `keep` (empty lists elsewhere).
    fn gather_full(&self, comm: &dyn Collectives, opt: &AdamW, keep: bool) -> Result<Tensors> {
        let topology = self.rt.settings.topology;
        let (mut model, mut optimizer) = (vec![], vec![]);
        let inner = self.rt.lock();
        for g in inner.units.iter().flat_map(|u| &u.groups) {
            let device = g.full.device();
            let gather = |t: &Tensor| topology.all_gather(comm, &t.to_device(device));
            let params = gather(&g.shard)?;
            let moments = match g.trainable() {
                true => Some((gather(&g.exp_avg)?, gather(&g.exp_avg_sq)?)),
                false => None,
            };
            if !keep {
                continue;
            }
            // On the CPU the gathered tensors are fresh and nothing writes them: their views are
            // the copies.
            let part = |t: &Tensor, p: &FlatParam| {
                t.narrow(0, p.offset, p.numel)
                    .view(p.shape.as_slice())
                    .to_device(Device::Cpu)
            };
            for p in &g.params {
                model.push((p.key.clone(), part(&params, p)));
                if let (true, Some((m, v))) = (p.trainable, &moments) {
                    optimizer.push((format!("exp_avg.{}", p.key), part(m, p)));
                    optimizer.push((format!("exp_avg_sq.{}", p.key), part(v, p)));
                }
            }
        }
        drop(inner);
        if keep {
            let (m, o) = self.replicated_state(opt);
            model.extend(m);
            optimizer.extend(o);
        }
        Ok((model, optimizer))
    }

    /// The replicated scalars and their moments, copied to the host.
    pub(crate) fn replicated_state(&self, opt: &AdamW) -> Tensors {
        let copy = |t: &Tensor| t.detach().to_device(Device::Cpu).copy();
        let mut model = vec![];
        let mut optimizer = vec![];
        for (k, t) in &self.replicated {
            model.push((k.clone(), copy(t)));
            if let Some(p) = opt.params.iter().find(|p| p.name == *k) {
                for (which, t) in &p.state {
                    optimizer.push((format!("{which}.{k}"), copy(t)));
                }
            }
        }
        (model, optimizer)
    }

    /// Restores a checkpoint's state (whole tensors under OpenCLIP's keys, any layout it was
    /// written in): this rank's pieces of every parameter and moment, the replicated scalars,
    /// AdamW's step count. Strict, as loading without `--fsdp`: every key present with its
    /// shape, no key unknown.
    pub fn load(
        &self,
        model: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
        opt: &mut AdamW,
        step: i64,
    ) -> Result<()> {
        let rank = self.rt.settings.topology.rank;
        let inner = self.rt.lock();
        let mut known: Vec<String> = self.replicated.iter().map(|(k, _)| k.clone()).collect();
        let mut moments = vec![];
        for g in inner.units.iter().flat_map(|u| &u.groups) {
            known.extend(g.params.iter().map(|p| p.key.clone()));
            for p in &g.params {
                let Some(src) = find(model, &p.key) else {
                    bail!("missing key {} in the checkpoint", p.key);
                };
                if src.size() != p.shape {
                    bail!(
                        "{} has shape {:?} in the checkpoint, {:?} in the model",
                        p.key,
                        src.size(),
                        p.shape
                    );
                }
            }
            for piece in g.pieces(rank) {
                let p = &g.params[piece.param];
                let part = |t: &Tensor| t.reshape([-1]).narrow(0, piece.start, piece.len);
                let src = find(model, &p.key).expect("checked above");
                tch::no_grad(|| g.shard.narrow(0, piece.at, piece.len).f_copy_(&part(src)))?;
                if p.trainable {
                    for which in ["exp_avg", "exp_avg_sq"] {
                        let key = format!("{which}.{}", p.key);
                        if let Some(m) = find(optimizer, &key) {
                            moments.push((key, part(m)));
                        }
                    }
                }
            }
        }
        drop(inner);
        if let Some((k, _)) = model.iter().find(|(k, _)| !known.contains(k)) {
            bail!("unexpected key {k} in the checkpoint");
        }
        for (k, t) in &self.replicated {
            let Some(src) = find(model, k) else {
                bail!("missing key {k} in the checkpoint");
            };
            tch::no_grad(|| t.shallow_clone().f_copy_(src))?;
            for which in ["exp_avg", "exp_avg_sq"] {
                let key = format!("{which}.{k}");
                if let Some(m) = find(optimizer, &key) {
                    moments.push((key, m.shallow_clone()));
                }
            }
        }
        opt.load_state(&moments, step)
    }

    /// This rank's own shards, group `k` of unit `u` (named `unit`) named `name(u, unit, k)` (a
    /// sharded checkpoint's `shard.{u}.{k}`), their moments under `exp_avg.` / `exp_avg_sq.`;
    /// with `replicated`, the replicated scalars too.
    pub(crate) fn local_tensors(
        &self,
        opt: &AdamW,
        replicated: bool,
        name: impl Fn(usize, &str, usize) -> String,
    ) -> Tensors {
        let (mut model, mut optimizer) = (vec![], vec![]);
        let inner = self.rt.lock();
        for (u, unit) in inner.units.iter().enumerate() {
            for (k, g) in unit.groups.iter().enumerate() {
                let name = name(u, &unit.name, k);
                model.push((name.clone(), g.shard.shallow_clone()));
                if g.trainable() {
                    optimizer.push((format!("exp_avg.{name}"), g.exp_avg.shallow_clone()));
                    optimizer.push((format!("exp_avg_sq.{name}"), g.exp_avg_sq.shallow_clone()));
                }
            }
        }
        drop(inner);
        if replicated {
            let (m, o) = self.replicated_state(opt);
            model.extend(m);
            optimizer.extend(o);
        }
        (model, optimizer)
    }
}
