//! The evaluations after an epoch (or alone, without training data), as OpenCLIP's `evaluate`:
//! zero-shot ImageNet ([`crate::zeroshot`]) when `--zeroshot-frequency` says so, then
//! `--val-data`'s contrastive metrics ([`crate::val`]) when `--val-frequency` says so. Every rank
//! evaluates a share and the results are combined (the same figures as one process), so no rank
//! waits idle into a timeout (OpenCLIP evaluates on rank 0 while the others wait in a
//! collective); rank 0 logs each rank's share.

use anyhow::Result;
use clip_dist::Collectives;
use clip_model::Clip;

use crate::plan::EvalPlan;
use crate::rundir::Log;

/// Each rank's share of an evaluation, in rank order: (images or samples, batches).
pub type Shares = Vec<(i64, usize)>;

pub struct Evaluator {
    plan: EvalPlan,
    /// `--epochs`: the last epoch is always evaluated.
    epochs: i64,
}

/// OpenCLIP's rule for `--zeroshot-frequency` and `--val-frequency`: after epoch `epoch`
/// (completed epochs) when it is a multiple of the frequency or the last one; never with 0.
pub fn due(epoch: i64, frequency: i64, epochs: i64) -> bool {
    frequency > 0 && (epoch % frequency == 0 || epoch == epochs)
}

impl Evaluator {
    pub fn new(plan: EvalPlan, epochs: i64) -> Evaluator {
        Evaluator { plan, epochs }
    }

    /// Whether any evaluation is due after `epoch` (`--fsdp` gathers the model only then).
    pub fn any_due(&self, epoch: i64) -> bool {
        let p = &self.plan;
        (p.zeroshot.is_some() && due(epoch, p.zeroshot_frequency, self.epochs))
            || (p.val.is_some() && due(epoch, p.val_frequency, self.epochs))
    }

    /// The metrics due after `epoch`, in OpenCLIP's order (empty when nothing is due), on every
    /// rank of `comm` (each called it). `heartbeat` is called after every batch.
    pub fn evaluate(
        &self,
        model: &Clip,
        epoch: i64,
        comm: &dyn Collectives,
        log: &mut Log,
        heartbeat: &mut dyn FnMut() -> Result<()>,
    ) -> Result<Vec<(String, f64)>> {
        let p = &self.plan;
        let mut metrics = Vec::new();
        if let Some(folder) = p
            .zeroshot
            .as_ref()
            .filter(|_| due(epoch, p.zeroshot_frequency, self.epochs))
        {
            log.info("Starting zero-shot imagenet.");
            let (top1, top5, shares) = crate::zeroshot::evaluate(
                model,
                folder,
                &p.transform,
                &p.options,
                comm,
                heartbeat,
            )?;
            log_shares(log, "Zero-shot", "images", &shares);
            log.info("Finished zero-shot imagenet.");
            metrics.push(("imagenet-zeroshot-val-top1".into(), top1));
            metrics.push(("imagenet-zeroshot-val-top5".into(), top5));
        }
        if let Some(val) = p
            .val
            .as_ref()
            .filter(|_| due(epoch, p.val_frequency, self.epochs))
        {
            let mut info = |m: &str| log.info(m);
            let (val_metrics, shares) =
                crate::val::evaluate(model, val, &p.options, epoch, comm, &mut info, heartbeat)?;
            log_shares(log, "Eval", "samples", &shares);
            metrics.extend(val_metrics);
        }
        Ok(metrics)
    }
}

/// Each rank's share of an evaluation, (items, batches) per rank, one line each (only when
/// there are several ranks: a single process logs what OpenCLIP logs).
fn log_shares(log: &mut Log, what: &str, items: &str, shares: &Shares) {
    if shares.len() < 2 {
        return;
    }
    for (r, (n, batches)) in shares.iter().enumerate() {
        let w = shares.len();
        log.info(&format!(
            "{what}: rank {r} of {w}: {n} {items} in {batches} batches"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_follows_openclip() {
        assert!(due(2, 2, 5) && !due(3, 2, 5) && due(5, 2, 5) && !due(2, 0, 2));
        assert!(due(1, 1, 3) && due(3, 7, 3));
    }
}
