//! torch-ext's integration tests: one binary (one link against libtorch).
mod cuda;
mod profiler;
mod shim;
