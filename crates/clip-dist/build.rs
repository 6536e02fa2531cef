//! rpath to libtorch (shared with the other libtorch crates), and the libtorch lib folder as a
//! compile-time constant: pip's NCCL lives beside it (`nccl.rs` falls back to it).
include!("../torch-ext/rpath.rs");

fn main() {
    link_libtorch();
    let lib = std::env::var("DEP_TORCH_EXT_LIBTORCH_LIB").expect("torch-ext reports libtorch");
    println!("cargo:rustc-env=CLIP_DIST_LIBTORCH_LIB={lib}");
}
