//! clip-train's integration tests: one binary (one link against libtorch), a module per subject,
//! shared helpers in `common` (and, shared with the other crates, `golden` and `skip`).
mod clip_tool;
mod common;
mod crash;
mod distributed;
mod flags;
mod fsdp;
#[path = "../../../../tests/support/golden.rs"]
mod golden;
mod gpu_check;
mod guards;
mod nonfinite;
mod optim_golden;
mod optim_train;
mod optimizer;
mod plan;
mod prefetch;
mod pretrained_image;
#[path = "../../../../tests/support/procs.rs"]
mod procs;
mod profile;
mod remote_sync;
mod resume_data;
#[path = "../../../../tests/support/s3.rs"]
mod s3_server;
mod scheduler;
mod siglip;
mod sim_ranks;
#[path = "../../../../tests/support/skip.rs"]
mod skip;
mod slurm;
mod step;
mod tensorboard;
mod timm_vit;
mod train;
mod train_csv;
mod train_options;
mod train_wds;
mod val;
mod wandb;
mod zeroshot;
