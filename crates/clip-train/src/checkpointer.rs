//! The run's checkpoint manager: what `--resume` starts from and when a checkpoint is written,
//! across ranks. Rank 0 picks the file to resume (and tells the others), rank 0 writes, every
//! rank's data position goes into each checkpoint. Rank 0 writes in the background: the tensors
//! are copied to host memory between two steps and a writer thread puts them on disk while
//! training goes on; the preemption checkpoint is complete before the run exits. The file format
//! itself is [`crate::checkpoint`]'s.

use std::path::{Path, PathBuf};
use std::thread::JoinHandle;

use anyhow::{bail, Context, Result};
use clip_dist::{Collectives, WorldInfo};
use tch::Tensor;

use crate::checkpoint::{self, Loaded, Snapshot, TrainState};
use crate::data::{DataPosition, SavedPositions};
use crate::ddp;
use crate::plan::Resume;
use crate::remote_sync::Remote;
use crate::rundir::Log;

pub struct Checkpointer {
    dir: PathBuf,
    world: WorldInfo,
    /// Rank 0's checkpoint being written in the background.
    pending: Option<Pending>,
    /// The newest checkpoint known complete: written by this run, or resumed from.
    newest: Option<PathBuf>,
    /// `--remote-sync`'s copy of the run, where `--resume latest` also looks.
    remote: Option<Remote>,
}

/// How [`Checkpointer::save`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Write {
    /// On the writer thread while training goes on.
    Background,
    /// Complete on disk (and every rank past a barrier) before `save` returns.
    Now,
}

struct Pending {
    path: PathBuf,
    handle: JoinHandle<Result<()>>,
}

/// A checkpoint to continue from, with this rank's data position taken out of it.
pub struct Resumed {
    pub path: PathBuf,
    pub loaded: Loaded,
    pub position: Option<DataPosition>,
}

impl Checkpointer {
    pub fn new(dir: PathBuf, world: WorldInfo, remote: Option<Remote>) -> Checkpointer {
        Checkpointer {
            dir,
            world,
            pending: None,
            newest: None,
            remote,
        }
    }

    fn master(&self) -> bool {
        self.world.rank == 0
    }

    /// The checkpoints folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The checkpoint to continue from (None: start fresh). Rank 0 first removes the temp files
    /// of writes that never finished; for `--resume latest` it picks the newest checkpoint that
    /// verifies and broadcasts the path, so every rank loads the same file.
    pub fn resume(
        &mut self,
        resume: &Resume,
        comm: &dyn Collectives,
        log: &mut Log,
    ) -> Result<Option<Resumed>> {
        if self.master() {
            for stale in checkpoint::remove_stale_temp_files(&self.dir) {
                log.warn(&format!(
                    "removed {}: a checkpoint write that never finished",
                    stale.display()
                ));
            }
        }
        let loaded = match resume {
            Resume::Fresh => None,
            Resume::File(path) => Some((path.clone(), checkpoint::load_finite(path)?)),
            Resume::Latest => self.pick_latest(comm, log)?,
        };
        let Some((path, loaded)) = loaded else {
            return Ok(None);
        };
        let position = self
            .rank_position(&loaded.state)
            .with_context(|| path.display().to_string())?;
        log.info(&format!(
            "=> resuming checkpoint '{}' (epoch {}, step {})",
            path.display(),
            loaded.state.epoch,
            loaded.state.step
        ));
        self.newest = Some(path.clone());
        Ok(Some(Resumed {
            path,
            loaded,
            position,
        }))
    }

    /// `--resume latest`: rank 0's pick, loaded on every rank. With `--remote-sync`, rank 0
    /// first fetches the remote's newest checkpoint when it is newer than every local one (the
    /// local directory may be gone with its node).
    fn pick_latest(
        &self,
        comm: &dyn Collectives,
        log: &mut Log,
    ) -> Result<Option<(PathBuf, Loaded)>> {
        let found = if self.master() {
            let local = checkpoint::load_latest(&self.dir, |w| log.warn(&w));
            let local_step = local.as_ref().map_or(-1, |(_, l)| l.state.step);
            let remote = self.remote.as_ref().and_then(|r| {
                std::fs::create_dir_all(&self.dir).ok()?;
                r.fetch_newer(&self.dir, local_step, log)
            });
            remote.or(local)
        } else {
            None
        };
        let picked = found
            .as_ref()
            .map(|(path, _)| path.display().to_string())
            .unwrap_or_default();
        let picked = ddp::broadcast_string(comm, &picked)?;
        if picked.is_empty() {
            log.info(&format!(
                "No latest resume checkpoint found in {}.",
                self.dir.display()
            ));
            return Ok(None);
        }
        if found.is_some() {
            return Ok(found);
        }
        let path = PathBuf::from(picked);
        let loaded = checkpoint::load(&path)
            .with_context(|| format!("rank 0 resumes from {}", path.display()))?;
        Ok(Some((path, loaded)))
    }

    /// This rank's data position in a checkpoint (a multi-rank one holds every rank's); `None`
    /// for a mid-epoch checkpoint of another world size, whose epoch the trainer splits anew.
    fn rank_position(&self, state: &TrainState) -> Result<Option<DataPosition>> {
        Ok(match &state.data_position {
            None => None,
            Some(SavedPositions::One(p)) => Some(p.clone()),
            Some(SavedPositions::Ranks { ranks }) => {
                if ranks.len() != self.world.world_size && state.step_in_epoch > 0 {
                    return Ok(None);
                }
                ranks.get(self.world.rank).cloned()
            }
        })
    }

    /// Checkpoints `file`: every rank's data position is gathered to rank 0, which copies the
    /// weights, optimizer tensors and state to host memory and writes them on a writer thread
    /// while training goes on (`Write::Background`), or before returning, all ranks waiting
    /// (`Write::Now`: the preemption checkpoint). A save first waits for the previous write.
    /// `then_delete` (`--delete-previous-checkpoint`) is removed once the new file is complete.
    ///
    /// Only finite weights are saved: a state holding a NaN or an inf fails the run on every
    /// rank (see [`Checkpointer::refuse_non_finite`]) before anything is written or deleted.
    #[allow(clippy::too_many_arguments)]
    pub fn save(
        &mut self,
        file: &str,
        write: Write,
        comm: &dyn Collectives,
        state: &TrainState,
        position: &DataPosition,
        model: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
        then_delete: Option<String>,
        log: &mut Log,
    ) -> Result<()> {
        self.refuse_non_finite(file, comm, state, model, optimizer, log)?;
        let take = |s: &TrainState| Snapshot::take(model, optimizer, s);
        self.save_with(file, write, comm, state, position, &take, then_delete, log)
    }

    /// [`Checkpointer::save`] of host copies made for it (`--fsdp`'s gathered shards: rank 0's
    /// only, empty elsewhere), which are written as they are. The caller has refused a
    /// non-finite state already ([`Checkpointer::refuse_non_finite`] over every rank's shards,
    /// before gathering them).
    #[allow(clippy::too_many_arguments)]
    pub fn save_copies(
        &mut self,
        file: &str,
        write: Write,
        comm: &dyn Collectives,
        state: &TrainState,
        position: &DataPosition,
        model: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
        then_delete: Option<String>,
        log: &mut Log,
    ) -> Result<()> {
        let take = |s: &TrainState| Snapshot::of_copies(model, optimizer, s);
        self.save_with(file, write, comm, state, position, &take, then_delete, log)
    }

    /// `state` with every rank's data position in it (a collective).
    pub fn with_positions(
        &self,
        comm: &dyn Collectives,
        state: &TrainState,
        position: &DataPosition,
    ) -> Result<TrainState> {
        let mut state = state.clone();
        // Every rank's position to rank 0, which writes them (up the control tree: rank 0 takes
        // a few messages, not one round trip per rank).
        state.data_position = Some(if self.world.world_size > 1 {
            let mine = serde_json::to_string(position)?;
            let ranks = ddp::gather_strings(comm, &mine)?
                .iter()
                .map(|s| serde_json::from_str(s))
                .collect::<Result<Vec<DataPosition>, _>>()?;
            SavedPositions::Ranks { ranks }
        } else {
            SavedPositions::One(position.clone())
        });
        Ok(state)
    }

    /// A checkpoint written by the caller (`--fsdp-checkpoint sharded`, every rank its shard):
    /// logged, and the newest from now on.
    pub fn written(&mut self, path: PathBuf, log: &mut Log) {
        log.info(&format!("Saved checkpoint {}", path.display()));
        self.newest = Some(path);
    }

    #[allow(clippy::too_many_arguments)]
    fn save_with(
        &mut self,
        file: &str,
        write: Write,
        comm: &dyn Collectives,
        state: &TrainState,
        position: &DataPosition,
        take: &dyn Fn(&TrainState) -> Result<Snapshot>,
        then_delete: Option<String>,
        log: &mut Log,
    ) -> Result<()> {
        let state = self.with_positions(comm, state, position)?;
        if self.master() {
            self.wait(log);
            let snapshot = take(&state)?;
            let path = self.dir.join(file);
            let then_delete = then_delete.map(|f| self.dir.join(f));
            let target = path.clone();
            let handle = std::thread::Builder::new()
                .name("checkpoint-writer".into())
                .spawn(move || {
                    snapshot.write(&target)?;
                    drop(snapshot);
                    if let Some(old) = then_delete {
                        checkpoint::remove_checkpoint(&old);
                    }
                    Ok(())
                })
                .context("cannot start the checkpoint writer thread")?;
            self.pending = Some(Pending { path, handle });
            if write == Write::Now {
                self.wait(log);
            }
        }
        if write == Write::Now {
            comm.barrier()
                .context("barrier after saving a checkpoint")?;
        }
        Ok(())
    }

    /// Fails, naming the newest finite checkpoint, when the state to save holds a NaN or an inf:
    /// it would become the newest checkpoint, delete the previous one, be synced by
    /// `--remote-sync` and be resumed from. One fused check on the device per rank (every rank's
    /// weights are the same, or with `--fsdp` each rank checks its own shards) and an agreement,
    /// so that every rank stops here together.
    pub fn refuse_non_finite(
        &mut self,
        file: &str,
        comm: &dyn Collectives,
        state: &TrainState,
        model: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
        log: &mut Log,
    ) -> Result<()> {
        let culprit = checkpoint::first_non_finite(model, optimizer)?;
        if !ddp::any(comm, culprit.is_some())? {
            return Ok(());
        }
        self.wait(log);
        let what = match culprit {
            Some(key) => format!("{key} holds a NaN or an inf"),
            None => "another rank's weights are not finite".into(),
        };
        let msg = format!(
            "checkpoint {file} not written: {what} after step {}: the run diverged, stopping; newest finite checkpoint: {}",
            state.step,
            self.newest_name()
        );
        log.error(&msg);
        bail!(msg)
    }

    /// Logs the write in progress once it is done (a no-op while it runs); between steps.
    pub fn poll(&mut self, log: &mut Log) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| p.handle.is_finished())
        {
            self.wait(log);
        }
    }

    /// Waits for the write in progress and logs how it ended. A failed write is an error in the
    /// log, not the run's end: the file was written atomically, so the previous checkpoint is
    /// intact and stays the newest.
    pub fn wait(&mut self, log: &mut Log) {
        let Some(Pending { path, handle }) = self.pending.take() else {
            return;
        };
        let result = handle
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the writer thread panicked")));
        match result {
            Ok(()) => {
                log.info(&format!("Saved checkpoint {}", path.display()));
                self.newest = Some(path);
            }
            Err(e) => log.error(&format!(
                "checkpoint {} was not written: {e:#}; the newest checkpoint is still {}",
                path.display(),
                self.newest_name()
            )),
        }
    }

    /// The newest complete checkpoint of this run (written, or resumed from), for messages.
    pub fn newest_name(&self) -> String {
        self.newest
            .as_ref()
            .map_or("none (no checkpoint written yet)".into(), |p| {
                p.display().to_string()
            })
    }
}
