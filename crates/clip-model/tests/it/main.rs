//! clip-model's integration tests: one binary (one link against libtorch), a module per subject.
#[path = "../../../../tests/support/golden.rs"]
mod golden;
mod model;
mod parity;
#[path = "../../../../tests/support/skip.rs"]
mod skip;
mod timm_vit;
mod vit;
mod weights;

/// libtorch's CPU generator is one per process and the tests run on several threads: a test
/// that seeds it and then draws (drop-path and patch-dropout masks, compared across two
/// forwards) holds this lock, and so does every test that draws from it (a model's random
/// init), so no other thread draws in between.
static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn rng_lock() -> std::sync::MutexGuard<'static, ()> {
    RNG.lock().unwrap_or_else(|e| e.into_inner())
}
