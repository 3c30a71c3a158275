//! Compiles `kernels-gpu` to one PTX module and embeds it (our `cuda_builder`).
//!
//! crates.io's `cuda_builder` / `rustc_codegen_nvvm` need LLVM 7 through `llvm-config`,
//! which nothing here provides, so we use rustc's own `nvptx64-nvidia-cuda` target from a
//! pinned nightly with `-Zbuild-std=core`. With fat LTO the emitted `.s` is a single
//! self-contained PTX module; `-C linker=/bin/true` skips the bitcode linker that
//! rustup cannot install here.
//!
//! This script belongs to the `mlff-host` package (`host/Cargo.toml` names it), so the
//! PTX lands in the crate that loads it. Environment:
//! - `MLFF_CUDA_ARCH` (default `sm_90`): the PTX target architecture;
//! - `MLFF_PTX_TOOLCHAIN` (default below): the nightly that compiles the kernels;
//! - `MLFF_NO_TOOLCHAIN_INSTALL=1`: never install that nightly (offline or managed
//!   machines); a missing one is then an error that says what to install.
//!
//! A missing nightly (or its `rust-src`) is installed with `rustup toolchain install`,
//! which works under `RUSTUP_AUTO_INSTALL=0` (that switch only stops implicit installs),
//! so a fresh clone builds with one `cargo` command. A `rust-toolchain.toml` would not
//! do: it would move the whole host build onto the nightly.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const DEFAULT_TOOLCHAIN: &str = "nightly-2026-05-19";
const DEFAULT_ARCH: &str = "sm_90";
const KERNEL_CRATE: &str = "mlff_kernels";
/// Set to `1` to forbid installing the pinned nightly from the build.
const NO_INSTALL_ENV: &str = "MLFF_NO_TOOLCHAIN_INSTALL";

fn main() {
    if let Err(message) = build_ptx() {
        // A build script's panic message is what cargo shows the user.
        panic!("\n\nmlff: building the GPU kernels (PTX) failed:\n{message}\n");
    }
}

fn build_ptx() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR").map_err(|e| e.to_string())?);
    let workspace = manifest_dir.parent().ok_or("host crate has no parent directory")?.to_path_buf();
    let kernel_dir = workspace.join("kernels-gpu");
    let out_dir = PathBuf::from(env::var("OUT_DIR").map_err(|e| e.to_string())?);

    println!("cargo:rerun-if-changed={}", kernel_dir.join("src").display());
    println!("cargo:rerun-if-changed={}", kernel_dir.join("Cargo.toml").display());
    println!("cargo:rerun-if-changed={}", workspace.join("build.rs").display());
    println!("cargo:rerun-if-env-changed=MLFF_CUDA_ARCH");
    println!("cargo:rerun-if-env-changed=MLFF_PTX_TOOLCHAIN");
    println!("cargo:rerun-if-env-changed={NO_INSTALL_ENV}");

    let toolchain = env::var("MLFF_PTX_TOOLCHAIN").unwrap_or_else(|_| DEFAULT_TOOLCHAIN.to_string());
    let arch = env::var("MLFF_CUDA_ARCH").unwrap_or_else(|_| DEFAULT_ARCH.to_string());
    if !arch.starts_with("sm_") || arch[3..].parse::<u32>().is_err() {
        return Err(format!("MLFF_CUDA_ARCH={arch:?} is not of the form sm_NN (e.g. sm_90)"));
    }
    if let Err(missing) = check_toolchain(&toolchain) {
        if env::var(NO_INSTALL_ENV).is_ok_and(|v| v != "0" && !v.is_empty()) {
            return Err(format!("{missing}\n({NO_INSTALL_ENV} is set, so the build did not install it)"));
        }
        install_toolchain(&toolchain, &missing)?;
        check_toolchain(&toolchain)?;
    }

    // The outer build holds the lock on its target dir, so the nested cargo gets its own.
    let target_dir = workspace.join("target").join("ptx-kernels");
    let mut cargo = nested_command(&toolchain, "cargo");
    cargo
        .args(["rustc", "--release", "--target", "nvptx64-nvidia-cuda", "-Zbuild-std=core"])
        .args(["--crate-type", "cdylib", "--manifest-path"])
        .arg(kernel_dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .args(["--", "-C", &format!("target-cpu={arch}"), "-C", "linker=/bin/true", "--emit=asm"])
        .env("CARGO_PROFILE_RELEASE_LTO", "fat")
        .env("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "1")
        .env("CARGO_PROFILE_RELEASE_PANIC", "abort")
        .env("CARGO_PROFILE_RELEASE_OPT_LEVEL", "3")
        .env("CARGO_PROFILE_RELEASE_DEBUG", "false");
    let output = cargo.output().map_err(|e| format!("could not run rustup: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "the nested `cargo +{toolchain} rustc --target nvptx64-nvidia-cuda` failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }

    let asm = target_dir.join("nvptx64-nvidia-cuda/release/deps").join(format!("{KERNEL_CRATE}.s"));
    let ptx = std::fs::read_to_string(&asm).map_err(|e| format!("no PTX at {}: {e}", asm.display()))?;
    check_ptx(&ptx, &arch)?;
    write_if_changed(&out_dir.join("kernels.ptx"), &ptx)?;
    write_if_changed(&out_dir.join("kernels_arch.txt"), &arch)?;
    Ok(())
}

/// `rustup run TOOLCHAIN TOOL`, without the variables the outer build set (they would
/// point the nested build at the outer toolchain, flags and target dir).
fn nested_command(toolchain: &str, tool: &str) -> Command {
    let mut command = Command::new("rustup");
    command.args(["run", toolchain, tool]);
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy();
        let outer = key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_NET_OFFLINE";
        if outer
            || matches!(
                key.as_ref(),
                "RUSTUP_TOOLCHAIN"
                    | "RUSTC"
                    | "RUSTDOC"
                    | "RUSTFLAGS"
                    | "RUSTC_WRAPPER"
                    | "RUSTC_WORKSPACE_WRAPPER"
                    | "RUSTC_BOOTSTRAP"
            )
        {
            command.env_remove(key.as_ref());
        }
    }
    command
}

fn install_hint(toolchain: &str) -> String {
    format!("install it with:\n    rustup toolchain install {toolchain} --component rust-src --profile minimal")
}

/// Installs the pinned nightly with `rust-src`, telling the user (cargo shows build-script
/// warnings; stderr shows with `-vv`).
fn install_toolchain(toolchain: &str, why: &str) -> Result<(), String> {
    let note = format!(
        "mlff: installing the kernel toolchain {toolchain} with rust-src (once; set {NO_INSTALL_ENV}=1 to opt out): {}",
        why.lines().next().unwrap_or_default()
    );
    println!("cargo:warning={note}");
    eprintln!("{note}");
    let output = Command::new("rustup")
        .args([
            "toolchain",
            "install",
            toolchain,
            "--component",
            "rust-src",
            "--profile",
            "minimal",
            "--no-self-update",
        ])
        .env_remove("RUSTUP_TOOLCHAIN")
        .output()
        .map_err(|e| format!("{why}\ncould not run rustup to install it: {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{why}\n`rustup toolchain install {toolchain}` failed:\n{}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

fn check_toolchain(toolchain: &str) -> Result<(), String> {
    let sysroot = nested_rustc(toolchain, &["--print", "sysroot"]).map_err(|e| {
        format!(
            "the pinned toolchain `{toolchain}` that compiles the kernels is not usable ({e});\n{}",
            install_hint(toolchain)
        )
    })?;
    let rust_src = Path::new(sysroot.trim()).join("lib/rustlib/src/rust/library/core");
    if !rust_src.exists() {
        return Err(format!(
            "the toolchain `{toolchain}` lacks the `rust-src` component (needed by -Zbuild-std);\n{}",
            install_hint(toolchain)
        ));
    }
    Ok(())
}

fn nested_rustc(toolchain: &str, args: &[&str]) -> Result<String, String> {
    let output =
        nested_command(toolchain, "rustc").args(args).output().map_err(|e| format!("could not run rustup: {e}"))?;
    if !output.status.success() {
        return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The module must be self-contained (no function left for a linker we do not run)
/// and for the requested architecture.
fn check_ptx(ptx: &str, arch: &str) -> Result<(), String> {
    let externs: Vec<&str> = ptx.lines().filter(|l| l.trim_start().starts_with(".extern .func")).collect();
    if !externs.is_empty() {
        return Err(format!(
            "the PTX declares external functions, which no linker will resolve (use the \
             kernel crate's own math instead of libm/intrinsics that lower to calls):\n{}",
            externs.join("\n")
        ));
    }
    if !ptx.lines().any(|l| l.trim() == format!(".target {arch}")) {
        return Err(format!("the PTX is not for {arch}"));
    }
    if !ptx.contains(".entry") {
        return Err("the PTX has no kernel entry points".into());
    }
    Ok(())
}

fn write_if_changed(path: &Path, contents: &str) -> Result<(), String> {
    if std::fs::read_to_string(path).ok().as_deref() == Some(contents) {
        return Ok(());
    }
    std::fs::write(path, contents).map_err(|e| format!("cannot write {}: {e}", path.display()))
}
