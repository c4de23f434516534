include!("../build/torch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=../build/torch_link.rs");
    emit_torch_link_args();
}
