//! Builds the eBPF object (`lockrace-ebpf`'s `lockrace` binary, for bpfel-unknown-none) with the
//! pinned nightly and copies it to `OUT_DIR/lockrace`, where `capture::loader` includes it.
//!
//! This is aya-build 0.2.0's recipe, run here so that the build is quiet: aya-build forwards
//! every line of the nested cargo as a `cargo:warning=` (two `warning: lockrace@…` lines in every
//! build). Here the nested cargo writes to this script's stderr, which cargo shows only with
//! `-vv` or when the build fails; on failure the script also fails with a one-line error.
//! Recipe (as aya-build): `rustup run TOOLCHAIN cargo build --package lockrace-ebpf --bins
//! --release --target bpfel-unknown-none -Z build-std=core`, `CARGO_ENCODED_RUSTFLAGS` =
//! `--cfg=bpf_target_arch="ARCH"`, `-Cdebuginfo=2`, `-Clink-arg=--btf`, `RUSTC` and
//! `RUSTC_WORKSPACE_WRAPPER` removed (they name the host toolchain), a target dir of its own
//! under OUT_DIR (cargo would otherwise wait on its own lock), and a rerun when anything under
//! lockrace-ebpf/ changes (the build-dependency on lockrace-ebpf covers its library and
//! lockrace-common).
//!
//! The toolchain name is the one `cargo xtask setup` installs (rust-src, LLVM 22 to match
//! bpf-linker). Set `AYA_BUILD_SKIP=1` to build user space alone (e.g. for a quick `cargo check`
//! on a machine without bpf-linker): an empty object is written and loading it fails at run time
//! with a clear error.
use std::{
    env, fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context, anyhow, bail};

/// Keep in sync with xtask/src/setup.rs (EBPF_TOOLCHAIN).
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";

/// The eBPF package and the name of its object (its `[[bin]]`, and the file in OUT_DIR).
const EBPF_PACKAGE: &str = "lockrace-ebpf";
const OBJECT: &str = "lockrace";

fn var(name: &str) -> anyhow::Result<String> {
    env::var(name).with_context(|| format!("{name} not set"))
}

fn main() {
    // Not `main() -> Result`: its error would carry a backtrace under RUST_BACKTRACE.
    if let Err(e) = build() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn build() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = PathBuf::from(var("OUT_DIR")?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(out_dir.join(OBJECT), b"")?;
        return Ok(());
    }
    let ebpf_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?).join("../lockrace-ebpf");
    println!("cargo:rerun-if-changed={}", ebpf_dir.display());

    let target = match var("CARGO_CFG_TARGET_ENDIAN")?.as_str() {
        "little" => "bpfel-unknown-none",
        "big" => "bpfeb-unknown-none",
        other => bail!("unsupported endian {other}"),
    };
    let mut arch = var("CARGO_CFG_TARGET_ARCH")?;
    if arch.starts_with("riscv64") {
        arch = "riscv64".into();
    }
    let target_dir = out_dir.join("aya-build/target").join(EBPF_PACKAGE);

    let mut cargo = match find_in_path("rustup") {
        Some(rustup) => {
            let mut c = Command::new(rustup);
            c.args(["run", EBPF_TOOLCHAIN, "cargo"]);
            c
        }
        None => {
            // As aya-build: without rustup, try the current toolchain, and say so.
            println!(
                "cargo:warning=rustup not found: building the eBPF programs with the current \
                 toolchain instead of {EBPF_TOOLCHAIN}"
            );
            Command::new("cargo")
        }
    };
    cargo
        .args(["build", "--package", EBPF_PACKAGE, "--bins", "--release"])
        .args(["--target", target, "-Z", "build-std=core"])
        .arg("--target-dir")
        .arg(&target_dir)
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            [
                format!("--cfg=bpf_target_arch=\"{arch}\""),
                "-Cdebuginfo=2".into(),
                "-Clink-arg=--btf".into(),
            ]
            .join("\x1f"),
        )
        .env_remove("RUSTC")
        .env_remove("RUSTC_WORKSPACE_WRAPPER")
        .current_dir(&ebpf_dir)
        .stdin(Stdio::null())
        // Our stdout is cargo's channel for `cargo:` directives: the nested cargo's output all
        // goes to stderr, which cargo keeps and shows with -vv or on failure.
        .stdout(std::io::stderr())
        .stderr(std::io::stderr());
    eprintln!("building the eBPF programs: {cargo:?}");
    let status = cargo
        .status()
        .with_context(|| format!("cannot run {cargo:?}"))?;
    if !status.success() {
        return Err(anyhow!(
            "building the eBPF programs ({EBPF_PACKAGE}, {EBPF_TOOLCHAIN}, {target}) failed \
             ({status}); the compiler's output is above (hint: `cargo xtask setup` installs the \
             toolchain and bpf-linker; AYA_BUILD_SKIP=1 builds user space alone)"
        ));
    }
    let built = target_dir.join(target).join("release").join(OBJECT);
    let dst = out_dir.join(OBJECT);
    fs::copy(&built, &dst)
        .with_context(|| format!("copying {} to {}", built.display(), dst.display()))?;
    Ok(())
}

/// The first `name` in PATH that is a file.
fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| Path::is_file(p))
}
