// Shared by the build scripts of crates that link libtorch (included with `include!`): an
// rpath to the libtorch that torch-sys linked, so binaries and test executables run with no
// LD_LIBRARY_PATH. On a libtorch with CUDA, torch_cuda is linked with --no-as-needed: nothing
// references its symbols directly, and without it CUDA is silently unavailable at run time.
fn link_libtorch() {
    let lib = std::env::var("DEP_TORCH_EXT_LIBTORCH_LIB").expect("torch-ext reports libtorch");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    if std::env::var("DEP_TORCH_EXT_CUDA").as_deref() == Ok("1") {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
