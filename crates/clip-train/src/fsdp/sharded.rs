//! `--fsdp-checkpoint sharded`: every rank of the first shard group writes its own shards (one
//! clip-train checkpoint file each, with its CRC-32, written atomically) into
//! `checkpoints/NAME.shards/`, and when all are written rank 0 writes the index
//! `checkpoints/NAME.safetensors` atomically: the checkpoint exists (for `--resume latest`,
//! `--remote-sync`, `--delete-previous-checkpoint`) exactly when its index does, and the index
//! lists the files it needs. Shard files are named by step, so rewriting `epoch_latest` never
//! touches the files the previous index lists; files no index lists are removed after.
//!
//! The index's layout (every unit's groups: each parameter's key, shape and offset, the shard
//! length) is all a reader needs: [`assemble`] puts whole tensors back together under OpenCLIP's
//! keys, which any run — FSDP on any number of ranks, or DDP — loads as it loads a full checkpoint.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use clip_dist::Collectives;
use serde::{Deserialize, Serialize};
use tch::Tensor;

use super::state::Tensors;
use super::Fsdp;
use crate::checkpoint::{self, Snapshot, TrainState};
use crate::checkpointer::Checkpointer;
use crate::optimizer::AdamW;
use crate::rundir::Log;

#[derive(Serialize, Deserialize)]
struct Layout {
    /// Ranks per shard group: one file each.
    ranks: usize,
    files: Vec<ShardFile>,
    units: Vec<UnitLayout>,
    /// Whole tensors in the first file (`logit_scale`, `logit_bias`).
    replicated: Vec<String>,
}

#[derive(Serialize, Deserialize)]
struct ShardFile {
    name: String,
    bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct UnitLayout {
    name: String,
    groups: Vec<GroupLayout>,
}

#[derive(Serialize, Deserialize)]
struct GroupLayout {
    numel: i64,
    shard_len: i64,
    params: Vec<ParamLayout>,
}

#[derive(Serialize, Deserialize)]
struct ParamLayout {
    key: String,
    shape: Vec<i64>,
    offset: i64,
    trainable: bool,
}

fn layout_of(f: &Fsdp, files: Vec<ShardFile>) -> Layout {
    let inner = f.rt.lock();
    let units = inner
        .units
        .iter()
        .map(|u| UnitLayout {
            name: u.name.clone(),
            groups: u
                .groups
                .iter()
                .map(|g| GroupLayout {
                    numel: g.numel,
                    shard_len: g.shard_len,
                    params: g
                        .params
                        .iter()
                        .map(|p| ParamLayout {
                            key: p.key.clone(),
                            shape: p.shape.clone(),
                            offset: p.offset,
                            trainable: p.trainable,
                        })
                        .collect(),
                })
                .collect(),
        })
        .collect();
    Layout {
        ranks: f.rt.settings.topology.ranks,
        files,
        units,
        replicated: f.replicated.iter().map(|(k, _)| k.clone()).collect(),
    }
}

/// Writes the sharded checkpoint `file` (`state` holds every rank's data position): each rank of
/// the first shard group its file, then rank 0 the index once every file is in. A rank's failed
/// write is logged by rank 0 and leaves no index (the previous checkpoint stays the newest), as
/// a failed background write of a full checkpoint does.
#[allow(clippy::too_many_arguments)]
pub(super) fn save(
    f: &Fsdp,
    checkpoints: &mut Checkpointer,
    file: &str,
    comm: &dyn Collectives,
    state: &TrainState,
    opt: &AdamW,
    then_delete: Option<String>,
    log: &mut Log,
) -> Result<()> {
    let topology = f.rt.settings.topology;
    let index = checkpoints.dir().join(file);
    let shards = index.with_extension("shards");
    let name = |r: usize| format!("s{}.rank{r}-of-{}.safetensors", state.step, topology.ranks);
    let rank = comm.rank();
    let outcome = if rank < topology.ranks {
        let (model, optimizer) =
            f.local_tensors(opt, rank == 0, |u, _, k| format!("shard.{u}.{k}"));
        let path = shards.join(name(rank));
        let written = std::fs::create_dir_all(&shards)
            .map_err(anyhow::Error::from)
            // Written before training goes on: the shards themselves, no copy (on a GPU, host
            // copies).
            .and_then(|()| Snapshot::of_copies(&model, &optimizer, state)?.write(&path))
            .and_then(|()| Ok(std::fs::metadata(&path)?.len()));
        match written {
            Ok(bytes) => format!("ok {bytes}"),
            Err(e) => format!("rank {rank}: {e:#}"),
        }
    } else {
        String::new()
    };
    let outcomes = comm.all_gather_bytes(outcome.as_bytes())?;
    if rank != 0 {
        return Ok(());
    }
    let mut files = vec![];
    for (r, o) in outcomes.iter().take(topology.ranks).enumerate() {
        let o = String::from_utf8_lossy(o);
        match o.strip_prefix("ok ").and_then(|b| b.parse().ok()) {
            Some(bytes) => files.push(ShardFile {
                name: name(r),
                bytes,
            }),
            None => {
                log.error(&format!(
                    "checkpoint {} was not written: {o}; the newest checkpoint is still {}",
                    index.display(),
                    checkpoints.newest_name()
                ));
                return Ok(());
            }
        }
    }
    let layout = serde_json::to_string(&layout_of(f, files))?;
    checkpoint::write_index(&index, state, &layout)?;
    remove_unlisted(&index, &layout);
    if let Some(old) = then_delete {
        checkpoint::remove_checkpoint(&checkpoints.dir().join(old));
    }
    checkpoints.written(index, log);
    Ok(())
}

/// The files in `index`'s shard folder that its layout does not list (older writes of the same
/// name, e.g. `epoch_latest`).
fn remove_unlisted(index: &Path, layout: &str) {
    let Ok(layout) = serde_json::from_str::<Layout>(layout) else {
        return;
    };
    let dir = index.with_extension("shards");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // Temp files of writes in progress start with a dot: never this process's to remove.
        if !name.starts_with('.') && !layout.files.iter().any(|f| f.name == name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The files a sharded checkpoint's index at `index` lists, relative to the checkpoints folder
/// (`NAME.shards/FILE`); None for any other file.
pub fn listed_files(index: &Path) -> Option<Vec<String>> {
    let meta = checkpoint::read_metadata(index).ok()?;
    let layout: Layout = serde_json::from_str(meta.get("layout")?).ok()?;
    let folder = index.with_extension("shards");
    let folder = folder.file_name()?.to_string_lossy().into_owned();
    Some(
        layout
            .files
            .iter()
            .map(|f| format!("{folder}/{}", f.name))
            .collect(),
    )
}

/// Takes the tensor `key` out of `list`.
fn take(list: &mut Vec<(String, Tensor)>, key: &str, file: &Path) -> Result<Tensor> {
    let i = list
        .iter()
        .position(|(k, _)| k == key)
        .ok_or_else(|| anyhow!("{}: no tensor {key}", file.display()))?;
    Ok(list.swap_remove(i).1)
}

/// The whole state of the sharded checkpoint whose index is at `index` (`meta`: its header),
/// under OpenCLIP's keys: every shard file read and verified (its CRC-32, its size, its step), each
/// group's shards concatenated and cut back into parameters and moments.
pub fn assemble(index: &Path, meta: &HashMap<String, String>) -> Result<Tensors> {
    let layout: Layout = serde_json::from_str(checkpoint::index_layout(index, meta)?)
        .with_context(|| format!("{}: unreadable layout", index.display()))?;
    let state: TrainState = serde_json::from_str(&meta["state"])?;
    let dir = index.with_extension("shards");
    let mut files = vec![];
    for f in &layout.files {
        let path = dir.join(&f.name);
        let bytes = std::fs::metadata(&path)
            .with_context(|| format!("{}: a shard of {}", path.display(), index.display()))?
            .len();
        if bytes != f.bytes {
            bail!(
                "{}: {bytes} bytes, the index says {}",
                path.display(),
                f.bytes
            );
        }
        let loaded = checkpoint::load(&path)?;
        if loaded.state.step != state.step {
            bail!(
                "{}: a shard of step {}, the index's is {}",
                path.display(),
                loaded.state.step,
                state.step
            );
        }
        files.push((path, loaded));
    }
    let (mut model, mut optimizer) = (vec![], vec![]);
    for (u, unit) in layout.units.iter().enumerate() {
        for (k, g) in unit.groups.iter().enumerate() {
            let name = format!("shard.{u}.{k}");
            let mut cat = |moment: Option<&str>| -> Result<Tensor> {
                let parts = files
                    .iter_mut()
                    .map(|(path, l)| match moment {
                        None => take(&mut l.model, &name, path),
                        Some(m) => take(&mut l.optimizer, &format!("{m}.{name}"), path),
                    })
                    .collect::<Result<Vec<_>>>()?;
                Ok(Tensor::cat(&parts, 0))
            };
            let flat = cat(None)?;
            let moments = match g.params.iter().any(|p| p.trainable) {
                true => Some((cat(Some("exp_avg"))?, cat(Some("exp_avg_sq"))?)),
                false => None,
            };
            if flat.size() != [g.shard_len * layout.ranks as i64] || g.numel > flat.numel() as i64 {
                bail!(
                    "{}: unit {} has {} elements, the layout says {}",
                    index.display(),
                    unit.name,
                    flat.numel(),
                    g.numel
                );
            }
            let part = |t: &Tensor, p: &ParamLayout| {
                let numel = p.shape.iter().product::<i64>();
                t.narrow(0, p.offset, numel).view(p.shape.as_slice())
            };
            for p in &g.params {
                model.push((p.key.clone(), part(&flat, p)));
                if let (true, Some((m, v))) = (p.trainable, &moments) {
                    optimizer.push((format!("exp_avg.{}", p.key), part(m, p)));
                    optimizer.push((format!("exp_avg_sq.{}", p.key), part(v, p)));
                }
            }
        }
    }
    let (path, first) = files
        .first_mut()
        .ok_or_else(|| anyhow!("{}: lists no shard files", index.display()))?;
    for k in &layout.replicated {
        model.push((k.clone(), take(&mut first.model, k, path)?));
        for m in ["exp_avg", "exp_avg_sq"] {
            let key = format!("{m}.{k}");
            if let Ok(t) = take(&mut first.optimizer, &key, path) {
                optimizer.push((key, t));
            }
        }
    }
    Ok((model, optimizer))
}
