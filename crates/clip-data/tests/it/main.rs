//! clip-data's integration tests: one binary, a module per subject, shared helpers in `common`.
mod common;
#[path = "../../../../tests/support/golden.rs"]
mod golden;
mod hf_tokenizer;
mod loader;
mod pipeline;
#[path = "../../../../tests/support/procs.rs"]
mod procs;
mod s3;
#[path = "../../../../tests/support/s3.rs"]
mod s3_server;
#[path = "../../../../tests/support/skip.rs"]
mod skip;
mod tokenizer;
mod tools;
mod transform;
