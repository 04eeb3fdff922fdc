//! Builds the eBPF object (`lockrace-ebpf`) with the pinned nightly toolchain through aya-build.
//!
//! The toolchain name is the one `cargo xtask setup` installs (rust-src, LLVM 22 to match
//! bpf-linker). Set `AYA_BUILD_SKIP=1` to build user space alone (e.g. for a quick `cargo check`
//! on a machine without bpf-linker): an empty object is written and loading it fails at run time
//! with a clear error.
use std::{env, fs, path::PathBuf};

/// Keep in sync with xtask/src/setup.rs (EBPF_TOOLCHAIN).
const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";

fn main() -> anyhow::Result<()> {
    println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(out_dir.join("lockrace"), b"")?;
        return Ok(());
    }
    let metadata_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let ebpf_dir = metadata_dir.join("../lockrace-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow::anyhow!("non-utf8 path"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "lockrace-ebpf",
            root_dir: ebpf_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Custom(EBPF_TOOLCHAIN),
    )
}
