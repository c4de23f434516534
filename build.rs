include!("build/torch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=build/torch_link.rs");
    if std::env::var_os("CARGO_FEATURE_RUNTIME").is_some() {
        emit_torch_link_args();
    }
}
