//! torch-ext's integration tests: one binary (one link against libtorch).
mod profiler;
mod shim;
