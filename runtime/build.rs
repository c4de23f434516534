include!("../build/torch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=../build/torch_link.rs");
    emit_torch_link_args();
    torch_shim();
    #[cfg(feature = "mpi")]
    mpi_shim();
}

/// libtorch settings tch does not expose (TF32 on CUDA), in a few lines of
/// C++ against the wheel's headers, as torch-sys compiles its own wrappers.
fn torch_shim() {
    println!("cargo:rerun-if-changed=src/torch_shim.cpp");
    let Some(lib) = torch_lib_dir() else {
        return;
    };
    let include = lib
        .parent()
        .expect("torch/lib has a parent")
        .join("include");
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .file("src/torch_shim.cpp")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        // The PyPI wheels use the C++11 string ABI.
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .warnings(false)
        .compile("dtl_torch_shim");
}

/// `MPI_IN_PLACE` is a macro (a cast pointer whose value differs between
/// MPI implementations), which rsmpi's bindings cannot carry: a three-line C
/// file compiled with the MPI compiler wrapper hands it over.
#[cfg(feature = "mpi")]
fn mpi_shim() {
    println!("cargo:rerun-if-changed=src/comm/mpi_shim.c");
    println!("cargo:rerun-if-env-changed=MPICC");
    let mpicc = std::env::var("MPICC").unwrap_or_else(|_| "mpicc".into());
    cc::Build::new()
        .compiler(&mpicc)
        .file("src/comm/mpi_shim.c")
        .compile("dtl_mpi_shim");
}
