//! Builds `tests/c/capi_test.c` against `include/mlff.h` and this crate's cdylib with
//! the system C compiler (`cc`, the linker Rust itself uses here; `CC` overrides) and
//! runs it: the ABI as a C program sees it.

use std::path::PathBuf;
use std::process::Command;

/// The directory holding `libmlff_capi.so` of this build (target/<profile>, or its
/// deps/ where cargo has not copied it up).
fn library_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps directory").to_path_buf();
    let profile = deps.parent().expect("profile directory").to_path_buf();
    [profile, deps]
        .into_iter()
        .find(|d| d.join("libmlff_capi.so").exists())
        .expect("libmlff_capi.so next to the test executable (cargo builds the cdylib with the tests)")
}

#[test]
fn the_c_test_program_passes() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let lib = library_dir();
    let out = std::env::temp_dir().join(format!("mlff_capi_test_{}", std::process::id()));
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let build = Command::new(&cc)
        .args(["-std=c11", "-Wall", "-Wextra", "-Werror", "-o"])
        .arg(&out)
        .arg(crate_dir.join("tests/c/capi_test.c"))
        .arg("-I")
        .arg(crate_dir.join("include"))
        .arg("-L")
        .arg(&lib)
        .arg(format!("-Wl,-rpath,{}", lib.display()))
        .args(["-lmlff_capi", "-lm"])
        .output()
        .unwrap_or_else(|e| panic!("running the C compiler `{cc}`: {e}"));
    assert!(build.status.success(), "compiling capi_test.c failed:\n{}", String::from_utf8_lossy(&build.stderr));
    // MLFF_DEVICE would change what "auto" means; the program names its devices.
    let run = Command::new(&out).env_remove("MLFF_DEVICE").env_remove("MLFF_NUM_THREADS").output().expect("run");
    let _ = std::fs::remove_file(&out);
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "capi_test failed:\n{stdout}\n{}", String::from_utf8_lossy(&run.stderr));
    assert!(stdout.contains(", 0 failed"), "{stdout}");
}
