//! clip-train: OpenCLIP's training launcher on libtorch. `params` (the flags) → `plan` (validated
//! once) → `trainer` (the loop, built from the parts beside it). docs/ARCHITECTURE.md maps them.

pub mod buckets;
pub mod checkpoint;
pub mod checkpointer;
pub mod control;
pub mod csv_data;
pub mod data;
pub mod ddp;
pub mod device;
pub mod divergence;
pub mod evaluator;
pub mod fault;
pub mod fsdp;
pub mod loss;
pub mod metrics;
pub mod nonfinite;
pub mod optim_spec;
pub mod optimizer;
pub mod param_groups;
pub mod params;
pub mod plan;
pub mod precision;
pub mod prefetch;
pub mod pretrained_image;
pub mod pyfmt;
pub mod remote_sync;
pub mod rundir;
pub mod scaler;
pub mod scheduler;
pub mod siglip;
pub mod step;
pub mod synthetic;
pub mod tensorboard;
pub mod timing;
pub mod tokenizer;
pub mod tool;
pub mod trainer;
pub mod val;
pub mod wandb;
pub mod zeroshot;
mod zeroshot_metadata;

/// Exit status after a preemption signal made the run checkpoint and stop: slurm scripts
/// requeue on it (EX_TEMPFAIL).
pub const EXIT_PREEMPTED: i32 = 75;

/// Exit status for a refused command line (argparse's).
pub const EXIT_USAGE: i32 = 2;
