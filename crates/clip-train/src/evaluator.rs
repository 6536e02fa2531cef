//! The evaluations after an epoch (or alone, without training data), as OpenCLIP's `evaluate`:
//! zero-shot ImageNet ([`crate::zeroshot`]) when `--zeroshot-frequency` says so, then
//! `--val-data`'s contrastive metrics ([`crate::val`]) when `--val-frequency` says so. Rank 0
//! evaluates; the other ranks wait at their next collective while rank 0 heartbeats.

use anyhow::Result;
use clip_model::Clip;

use crate::plan::EvalPlan;
use crate::rundir::Log;

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

    /// The metrics due after `epoch`, in OpenCLIP's order (empty when nothing is due).
    /// `heartbeat` is called after every batch.
    pub fn evaluate(
        &self,
        model: &Clip,
        epoch: i64,
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
            let (top1, top5) =
                crate::zeroshot::evaluate(model, folder, &p.transform, &p.options, heartbeat)?;
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
            metrics.extend(crate::val::evaluate(
                model, val, &p.options, epoch, &mut info, heartbeat,
            )?);
        }
        Ok(metrics)
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
