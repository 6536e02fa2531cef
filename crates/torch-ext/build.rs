//! Compiles the C++ shim against the same libtorch headers torch-sys found, and passes the
//! libtorch library folder on to dependents (`DEP_TORCH_EXT_LIBTORCH_LIB`) so their build
//! scripts can set an rpath: the binaries then run with no environment variables.
use std::path::PathBuf;

fn main() {
    let lib = PathBuf::from(
        std::env::var("DEP_TCH_LIBTORCH_LIB")
            .expect("torch-sys did not report its libtorch lib dir"),
    );
    let root = lib
        .parent()
        .expect("libtorch lib dir has a parent")
        .to_path_buf();
    let include = root.join("include");
    println!("cargo:rerun-if-changed=src/guard.h");
    println!("cargo:rerun-if-changed=src/tensor_groups.h");
    println!("cargo:rerun-if-changed=src/shim.cpp");
    println!("cargo:rerun-if-changed=src/optim.cpp");
    println!("cargo:rerun-if-changed=src/optim_algos.cpp");
    println!("cargo:rerun-if-changed=src/grad_hooks.cpp");
    println!("cargo:rerun-if-changed=src/profiler.cpp");
    println!("cargo:rerun-if-changed=src/generator.cpp");
    println!("cargo:rerun-if-changed=src/cuda.cpp");
    println!("cargo:rerun-if-changed=src/storage.cpp");
    println!("cargo:rerun-if-changed=src/pinned.cpp");
    println!("cargo:rerun-if-changed=src/finite.cpp");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .std("c++17")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .file("src/shim.cpp")
        .file("src/optim.cpp")
        .file("src/optim_algos.cpp")
        .file("src/grad_hooks.cpp")
        .file("src/profiler.cpp")
        .file("src/generator.cpp")
        .file("src/cuda.cpp")
        .file("src/storage.cpp")
        .file("src/pinned.cpp")
        .file("src/finite.cpp")
        .compile("torch_ext_shim");
    // This crate's own tests need the rpath too.
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    println!("cargo:libtorch_lib={}", lib.display());
    let cuda = lib.join("libtorch_cuda.so").exists();
    println!("cargo:cuda={}", if cuda { "1" } else { "0" });
    // The integration tests link torch_cuda as the binaries do (rpath.rs), so the CUDA backend
    // is registered there; the unit tests do not, and see a libtorch without it.
    println!("cargo:rustc-env=TORCH_EXT_CUDA={}", u8::from(cuda));
    if cuda {
        println!("cargo:rustc-link-arg-tests=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
