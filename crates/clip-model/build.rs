include!("../torch-ext/rpath.rs");

fn main() {
    link_libtorch();
}
