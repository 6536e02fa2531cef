//! clip-model's integration tests: one binary (one link against libtorch), a module per subject.
#[path = "../../../../tests/support/golden.rs"]
mod golden;
mod model;
mod parity;
#[path = "../../../../tests/support/skip.rs"]
mod skip;
mod vit;
mod weights;
