// Shared by the build scripts of the `dtl` binary and the runtime crate
// (`include!`d): link-args from a dependency's build script do not reach the
// final binaries, so each package that links libtorch emits them itself.
//
// It gives the binary an rpath to the virtualenv's torch/lib (and lib/, where
// Open MPI lives) so it starts without LD_LIBRARY_PATH, and links
// libtorch_cuda with --no-as-needed: nothing references its symbols directly,
// so without this the linker drops it and CUDA is never registered.

fn venv_dir() -> std::path::PathBuf {
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    match std::env::var("DTL_VENV") {
        Ok(v) if !v.is_empty() => std::path::PathBuf::from(v),
        _ => manifest.join(".venv"),
    }
}

fn torch_lib_dir() -> Option<std::path::PathBuf> {
    if let Ok(libtorch) = std::env::var("LIBTORCH") {
        let lib = std::path::PathBuf::from(libtorch).join("lib");
        if lib.is_dir() {
            return Some(lib);
        }
    }
    let lib = venv_dir().join("lib");
    let entries = std::fs::read_dir(&lib).ok()?;
    let mut found: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("site-packages/torch/lib"))
        .filter(|p| p.is_dir())
        .collect();
    found.sort();
    found.pop()
}

fn emit_torch_link_args() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=DTL_VENV");
    let Some(torch_lib) = torch_lib_dir() else {
        println!(
            "cargo:warning=torch/lib not found under {}; run scripts/setup.sh",
            venv_dir().display()
        );
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", torch_lib.display());
    let venv_lib = venv_dir().join("lib");
    if venv_lib.join("libmpi.so.40").exists() {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", venv_lib.display());
    }
    if torch_lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", torch_lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
