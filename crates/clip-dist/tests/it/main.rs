//! clip-dist's integration tests: one binary (one link against libtorch), a module per subject.
mod env;
mod multiprocess;
mod store;
