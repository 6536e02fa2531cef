//! The run's checkpoint manager: what `--resume` starts from and when a checkpoint is written,
//! across ranks. Rank 0 picks the file to resume (and tells the others), rank 0 writes, every
//! rank's data position goes into each checkpoint, and every rank waits until the file is
//! complete. The file format itself is [`crate::checkpoint`]'s.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clip_dist::{Collectives, WorldInfo};
use tch::Tensor;

use crate::checkpoint::{self, Loaded, TrainState};
use crate::data::{DataPosition, SavedPositions};
use crate::ddp;
use crate::plan::Resume;
use crate::rundir::Log;

pub struct Checkpointer {
    dir: PathBuf,
    world: WorldInfo,
}

/// A checkpoint to continue from, with this rank's data position taken out of it.
pub struct Resumed {
    pub path: PathBuf,
    pub loaded: Loaded,
    pub position: Option<DataPosition>,
}

impl Checkpointer {
    pub fn new(dir: PathBuf, world: WorldInfo) -> Checkpointer {
        Checkpointer { dir, world }
    }

    fn master(&self) -> bool {
        self.world.rank == 0
    }

    /// The checkpoint to continue from (None: start fresh). Rank 0 first removes the temp files
    /// of writes that never finished; for `--resume latest` it picks the newest checkpoint that
    /// verifies and broadcasts the path, so every rank loads the same file.
    pub fn resume(
        &self,
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
            Resume::File(path) => Some((path.clone(), checkpoint::load(path)?)),
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
        Ok(Some(Resumed {
            path,
            loaded,
            position,
        }))
    }

    /// `--resume latest`: rank 0's pick, loaded on every rank.
    fn pick_latest(
        &self,
        comm: &dyn Collectives,
        log: &mut Log,
    ) -> Result<Option<(PathBuf, Loaded)>> {
        let found = if self.master() {
            checkpoint::load_latest(&self.dir, |w| log.warn(&w))
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

    /// This rank's data position in a checkpoint (a multi-rank one holds every rank's).
    fn rank_position(&self, state: &TrainState) -> Result<Option<DataPosition>> {
        Ok(match &state.data_position {
            None => None,
            Some(SavedPositions::One(p)) => Some(p.clone()),
            Some(SavedPositions::Ranks { ranks }) => {
                if ranks.len() != self.world.world_size && state.step_in_epoch > 0 {
                    bail!(
                        "saved mid-epoch by {} ranks, resumed by {}: resume with the same world size (or from an epoch checkpoint)",
                        ranks.len(),
                        self.world.world_size
                    );
                }
                ranks.get(self.world.rank).cloned()
            }
        })
    }

    /// Writes `file`: rank 0 writes the weights, the optimizer tensors and the state with every
    /// rank's data position; all ranks return once the file is complete.
    pub fn save(
        &self,
        file: &str,
        comm: &dyn Collectives,
        state: &TrainState,
        position: &DataPosition,
        model: &[(String, Tensor)],
        optimizer: &[(String, Tensor)],
    ) -> Result<PathBuf> {
        let path = self.dir.join(file);
        let mut state = state.clone();
        state.data_position = Some(if self.world.world_size > 1 {
            let mine = serde_json::to_string(position)?;
            let ranks = ddp::all_gather_strings(comm, &mine)?
                .iter()
                .map(|s| serde_json::from_str(s))
                .collect::<Result<Vec<DataPosition>, _>>()?;
            SavedPositions::Ranks { ranks }
        } else {
            SavedPositions::One(position.clone())
        });
        if self.master() {
            checkpoint::save(&path, model, optimizer, &state)?;
        }
        comm.barrier()
            .context("barrier after saving a checkpoint")?;
        Ok(path)
    }

    /// `--delete-previous-checkpoint`: removes epoch `epoch`'s checkpoint (rank 0).
    pub fn delete_epoch(&self, epoch: i64) {
        if self.master() {
            // Already gone is fine: only the newest matters.
            let _ = std::fs::remove_file(self.dir.join(format!("epoch_{epoch}.safetensors")));
        }
    }
}
