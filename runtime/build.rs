include!("../build/torch_link.rs");

fn main() {
    println!("cargo:rerun-if-changed=../build/torch_link.rs");
    emit_torch_link_args();
    #[cfg(feature = "mpi")]
    mpi_shim();
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
