//! rpath to libtorch (shared with the other libtorch crates). Nothing of the build machine's
//! paths reaches the code: `nccl.rs` finds NCCL from the torch install it runs against.
include!("../torch-ext/rpath.rs");

fn main() {
    link_libtorch();
}
