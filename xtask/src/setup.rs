//! `cargo xtask setup`: make this machine able to build, run and test lockrace.
//!
//! Each step first detects cheaply whether its part is already there (no network, no compiler,
//! a few milliseconds) and installs only what is missing, printing one `setup: <step> ... <what>`
//! line. Invariants: running it twice changes nothing the second time; a step that cannot work
//! (not root and no sudo, not Debian) fails with a one-line error that says what to do instead.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::cmd::{self, Io};

/// The nightly that builds the eBPF crate (with rust-src, for `-Z build-std=core`).
///
/// MUST match `EBPF_TOOLCHAIN` in lockrace/build.rs (a unit test below checks it). It is pinned,
/// not a floating `nightly`, because rustc's LLVM major must equal the one bpf-linker is built
/// against, and bpf-linker is built against Debian's llvm-22: this nightly ships LLVM 22, whereas
/// a `rustup update` of a floating nightly moves to a newer LLVM and breaks the eBPF link.
pub const EBPF_TOOLCHAIN: &str = "nightly-2026-05-19";

/// bpf-linker release installed by setup; any 0.13.x found is accepted.
pub const BPF_LINKER_VERSION: &str = "0.13.0";
/// The LLVM that bpf-linker links (Debian's llvm-22-dev); without LLVM_PREFIX the build fails
/// with `-lLLVM` not found.
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Debian packages setup installs, with why each is needed.
pub const APT_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links LLVM 22"),
    ("libpolly-22-dev", "bpf-linker links LLVM 22"),
    ("libzstd-dev", "bpf-linker links LLVM 22"),
    ("zlib1g-dev", "bpf-linker links LLVM 22"),
    (
        "g++",
        "bpf-linker's llvm-sys compiles C and links libstdc++",
    ),
    ("python3", "tests"),
    ("util-linux", "tests use flock(1) and lslocks(8)"),
    ("sqlite3", "tests trace a real program taking POSIX locks"),
    (
        "stress-ng",
        "tests trace a real program taking every lock flavour",
    ),
    ("qemu-system-x86", "cargo xtask vm boots other kernels"),
    ("busybox-static", "cargo xtask vm: the VM's userland"),
    ("cpio", "tests check the VM's initramfs with cpio(1)"),
    (
        "chromium",
        "tests load the HTML report in a headless browser; cargo xtask screenshot",
    ),
    (
        "fonts-dejavu-core",
        "readable text in the HTML report's headless screenshots",
    ),
];

const TRACEFS: &str = "/sys/kernel/tracing";

/// Runs every step in order; stops at the first that fails.
pub fn setup() -> Result<()> {
    apt_packages()?;
    rust_components()?;
    ebpf_toolchain()?;
    bpf_linker()?;
    tracefs()?;
    Ok(())
}

fn present(step: &str, what: &str) {
    println!("setup: {step} ... ok ({what})");
}

fn installing(step: &str, what: &str) {
    println!("setup: {step} ... missing, {what}");
}

fn installed(step: &str, what: &str) {
    println!("setup: {step} ... ok (installed {what})");
}

// ---- apt packages ----------------------------------------------------------------------------

fn apt_packages() -> Result<()> {
    install_packages("apt packages", APT_PACKAGES)
}

/// Installs the missing ones among `packages` with apt-get (`cargo xtask bench` adds its own).
pub fn install_packages(step: &str, packages: &[(&str, &str)]) -> Result<()> {
    let names: Vec<&str> = packages.iter().map(|(name, _)| *name).collect();
    let missing = missing_packages(&names)?;
    if missing.is_empty() {
        present(step, &format!("present: {}", names.join(" ")));
        return Ok(());
    }
    installing(step, &format!("installing {}", missing.join(" ")));
    let why = format!("installing {}", missing.join(" "));
    let mut update = cmd::as_root("apt-get", &[], false, &why)?;
    cmd::run(update.args(["update"]), Io::Inherit)?;
    let mut install = cmd::as_root(
        "apt-get",
        &[("DEBIAN_FRONTEND", "noninteractive")],
        false,
        &why,
    )?;
    install.args(["install", "-y", "--no-install-recommends"]);
    install.args(&missing);
    cmd::run(&mut install, Io::Inherit)?;
    let still = missing_packages(&names)?;
    if !still.is_empty() {
        bail!(
            "apt-get install finished but {} still missing",
            still.join(" ")
        );
    }
    installed(step, &missing.join(" "));
    Ok(())
}

/// The packages among `names` that dpkg does not report as installed (one dpkg-query call).
fn missing_packages(names: &[&str]) -> Result<Vec<String>> {
    let mut query = Command::new("dpkg-query");
    query.args(["-W", "-f=${Package} ${Status}\\n"]).args(names);
    // dpkg-query exits 1 when some package is unknown; its stdout still lists the known ones.
    let ran = cmd::exec(&mut query, Io::Capture).map_err(|e| {
        anyhow!(
            "{e} (hint: setup installs packages with apt on Debian/Ubuntu; elsewhere install the \
             equivalents of: {})",
            names.join(" ")
        )
    })?;
    if !ran.status.success() && ran.status.code() != Some(1) {
        return Err(cmd::failure(&cmd::display(&query), ran.status, &ran.stderr));
    }
    Ok(not_installed(names, &ran.stdout))
}

/// Pure part of [`missing_packages`]: `dpkg_output` has one `NAME STATUS` line per known package.
pub fn not_installed(names: &[&str], dpkg_output: &str) -> Vec<String> {
    let ok: Vec<&str> = dpkg_output
        .lines()
        .filter_map(|line| line.split_once(' '))
        .filter(|(_, status)| status.trim() == "install ok installed")
        .map(|(name, _)| name.split(':').next().unwrap_or(name))
        .collect();
    names
        .iter()
        .filter(|n| !ok.contains(n))
        .map(|n| n.to_string())
        .collect()
}

// ---- rust components -------------------------------------------------------------------------

fn rust_components() -> Result<()> {
    const STEP: &str = "rustfmt + clippy";
    if cmd::which("rustup").is_none() {
        if cmd::which("cargo-fmt").is_some() && cmd::which("cargo-clippy").is_some() {
            present(STEP, "present, no rustup");
            return Ok(());
        }
        bail!("rustup not found (hint: install it from https://rustup.rs, then rerun setup)");
    }
    let list = cmd::stdout_of(Command::new("rustup").args(["component", "list", "--installed"]))?;
    let missing = missing_components(&list, &["rustfmt", "clippy"]);
    if missing.is_empty() {
        present(STEP, "present");
        return Ok(());
    }
    installing(STEP, &format!("adding {}", missing.join(" ")));
    cmd::run(
        Command::new("rustup")
            .args(["component", "add"])
            .args(&missing),
        Io::Inherit,
    )?;
    installed(STEP, &missing.join(" "));
    Ok(())
}

/// The components of `wanted` absent from `rustup component list --installed` output, whose
/// lines are `NAME-TARGET` (e.g. `clippy-x86_64-unknown-linux-gnu`).
pub fn missing_components(installed: &str, wanted: &[&str]) -> Vec<String> {
    wanted
        .iter()
        .filter(|w| {
            !installed.lines().any(|l| {
                l.trim()
                    .strip_prefix(**w)
                    .is_some_and(|r| r.starts_with('-'))
            })
        })
        .map(|w| w.to_string())
        .collect()
}

// ---- eBPF toolchain --------------------------------------------------------------------------

fn rustup_home() -> Option<PathBuf> {
    std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".rustup")))
}

/// The installed directory of `toolchain` (`NAME-HOST` under rustup's toolchains/), if any.
fn toolchain_dir(toolchain: &str) -> Option<PathBuf> {
    let dir = rustup_home()?.join("toolchains");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    pick_toolchain_dir(&names, toolchain).map(|n| dir.join(n))
}

/// Among the toolchain directory names, the one for `toolchain` on some host (`NAME-ARCH-...`).
pub fn pick_toolchain_dir<'a>(names: &'a [String], toolchain: &str) -> Option<&'a str> {
    let mut hits: Vec<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| {
            n.strip_prefix(toolchain)
                .and_then(|rest| rest.strip_prefix('-'))
                // The host part starts with an arch, never with a digit of a date.
                .is_some_and(|host| host.starts_with(|c: char| c.is_ascii_alphabetic()))
        })
        .collect();
    hits.sort_unstable();
    hits.first().copied()
}

fn has_rust_src(toolchain_dir: &Path) -> bool {
    toolchain_dir
        .join("lib/rustlib/src/rust/library/core")
        .is_dir()
}

fn ebpf_toolchain() -> Result<()> {
    let step = format!("eBPF toolchain {EBPF_TOOLCHAIN} + rust-src");
    match toolchain_dir(EBPF_TOOLCHAIN) {
        Some(dir) if has_rust_src(&dir) => {
            present(&step, "present");
            return Ok(());
        }
        Some(_) => {
            installing(&step, "adding rust-src");
            cmd::run(
                Command::new("rustup").args([
                    "component",
                    "add",
                    "rust-src",
                    "--toolchain",
                    EBPF_TOOLCHAIN,
                ]),
                Io::Inherit,
            )?;
        }
        None => {
            installing(&step, "installing (about 10 s)");
            cmd::run(
                Command::new("rustup").args([
                    "toolchain",
                    "install",
                    EBPF_TOOLCHAIN,
                    "--profile",
                    "minimal",
                    "--component",
                    "rust-src",
                ]),
                Io::Inherit,
            )?;
        }
    }
    match toolchain_dir(EBPF_TOOLCHAIN) {
        Some(dir) if has_rust_src(&dir) => {
            installed(&step, EBPF_TOOLCHAIN);
            Ok(())
        }
        _ => bail!(
            "rustup finished but {EBPF_TOOLCHAIN} with rust-src is not under {} (hint: check \
             RUSTUP_HOME)",
            rustup_home()
                .unwrap_or_default()
                .join("toolchains")
                .display()
        ),
    }
}

// ---- bpf-linker ------------------------------------------------------------------------------

fn cargo_bin_dir() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|home| home.join("bin"))
}

/// Where bpf-linker is: PATH first, then cargo's bin directory.
fn find_bpf_linker() -> Option<PathBuf> {
    cmd::which("bpf-linker").or_else(|| {
        cargo_bin_dir()
            .map(|d| d.join("bpf-linker"))
            .filter(|p| cmd::is_executable(p))
    })
}

/// `(major, minor, patch)` from `bpf-linker --version` output (`bpf-linker 0.13.0`).
pub fn parse_bpf_linker_version(out: &str) -> Option<(u32, u32, u32)> {
    let v = out.split_whitespace().nth(1)?;
    let mut parts = v.split(['.', '-', '+']).map(|p| p.parse::<u32>());
    Some((
        parts.next()?.ok()?,
        parts.next()?.ok()?,
        parts.next()?.ok()?,
    ))
}

/// The version of the bpf-linker at `path`, if it runs.
fn bpf_linker_version(path: &Path) -> Option<(u32, u32, u32)> {
    let out = cmd::stdout_of(Command::new(path).arg("--version")).ok()?;
    parse_bpf_linker_version(&out)
}

fn wanted_linker(v: (u32, u32, u32)) -> bool {
    let want = parse_bpf_linker_version(&format!("bpf-linker {BPF_LINKER_VERSION}"));
    want.is_some_and(|w| (v.0, v.1) == (w.0, w.1))
}

fn bpf_linker() -> Result<()> {
    const STEP: &str = "bpf-linker";
    let found = find_bpf_linker().map(|p| {
        let v = bpf_linker_version(&p);
        (p, v)
    });
    match &found {
        Some((path, Some(v))) if wanted_linker(*v) => {
            present(STEP, &format!("present: {}.{}.{}", v.0, v.1, v.2));
            if cmd::which("bpf-linker").is_none() {
                println!(
                    "setup: note: {} is not in PATH; cargo finds it when run through rustup",
                    path.display()
                );
            }
            return Ok(());
        }
        Some((path, Some(v))) => installing(
            STEP,
            &format!(
                "{} is {}.{}.{}, replacing it with {BPF_LINKER_VERSION} for LLVM 22 (about 4 \
                 minutes)",
                path.display(),
                v.0,
                v.1,
                v.2
            ),
        ),
        Some((path, None)) => installing(
            STEP,
            &format!(
                "{} does not run, reinstalling {BPF_LINKER_VERSION} for LLVM 22 (about 4 minutes)",
                path.display()
            ),
        ),
        None => installing(
            STEP,
            &format!("installing {BPF_LINKER_VERSION} for LLVM 22 (about 4 minutes)"),
        ),
    }
    let mut install = Command::new("cargo");
    install.env("LLVM_PREFIX", LLVM_PREFIX).args([
        "install",
        "bpf-linker",
        "--locked",
        "--force",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        "llvm-22",
    ]);
    cmd::run(&mut install, Io::Inherit)
        .with_context(|| format!("building bpf-linker against {LLVM_PREFIX}"))?;
    match find_bpf_linker().and_then(|p| bpf_linker_version(&p)) {
        Some(v) if wanted_linker(v) => {
            installed(STEP, &format!("{}.{}.{}", v.0, v.1, v.2));
            Ok(())
        }
        _ => bail!(
            "cargo install finished but no working bpf-linker {BPF_LINKER_VERSION} is in PATH or {}",
            cargo_bin_dir().unwrap_or_default().display()
        ),
    }
}

// ---- tracefs ---------------------------------------------------------------------------------

/// True when `mounts` (the text of /proc/self/mounts) has tracefs mounted at `at`.
pub fn tracefs_in_mounts(mounts: &str, at: &str) -> bool {
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() >= 3 && f[1] == at && f[2] == "tracefs"
    })
}

fn tracefs_mounted() -> bool {
    // /sys/kernel/tracing is root-only (mode 700), so a normal user cannot see events/ in it:
    // the mount table answers for everyone.
    Path::new(TRACEFS).join("events").is_dir()
        || std::fs::read_to_string("/proc/self/mounts")
            .is_ok_and(|m| tracefs_in_mounts(&m, TRACEFS))
}

fn tracefs() -> Result<()> {
    let step = format!("tracefs at {TRACEFS}");
    if tracefs_mounted() {
        present(&step, "mounted");
        return Ok(());
    }
    installing(&step, "mounting it");
    let mut mount = cmd::as_root("mount", &[], false, "mounting tracefs")?;
    mount.args(["-t", "tracefs", "tracefs", TRACEFS]);
    cmd::run(&mut mount, Io::Capture)
        .map_err(|e| anyhow!("{e} (hint: as root, run `mount -t tracefs tracefs {TRACEFS}`)"))?;
    if !tracefs_mounted() {
        bail!("mount succeeded but {TRACEFS}/events is still missing");
    }
    installed(&step, "(mounted)");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `const NAME: &str = "...";` in Rust source, if present exactly once.
    fn str_const<'a>(src: &'a str, name: &str) -> Option<&'a str> {
        let prefix = format!("const {name}: &str = \"");
        let mut hits = src.lines().filter_map(|l| {
            let l = l.trim_start();
            let l = l.strip_prefix("pub ").unwrap_or(l);
            l.strip_prefix(prefix.as_str())?.split('"').next()
        });
        let first = hits.next()?;
        hits.next().is_none().then_some(first)
    }

    #[test]
    fn ebpf_toolchain_matches_lockrace_build_rs() {
        let build_rs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../lockrace/build.rs");
        let src = std::fs::read_to_string(&build_rs).unwrap();
        assert_eq!(
            str_const(&src, "EBPF_TOOLCHAIN"),
            Some(EBPF_TOOLCHAIN),
            "{} and xtask/src/setup.rs must pin the same eBPF toolchain",
            build_rs.display()
        );
        // The reader itself: this file's constant is found, a missing one is not.
        let this = include_str!("setup.rs");
        assert_eq!(str_const(this, "EBPF_TOOLCHAIN"), Some(EBPF_TOOLCHAIN));
        assert_eq!(str_const(this, "NO_SUCH_CONST"), None);
    }

    #[test]
    fn not_installed_lists_unknown_and_half_installed_packages() {
        let dpkg = "\
llvm-22-dev install ok installed
zlib1g-dev:amd64 install ok installed
sqlite3 deinstall ok config-files
";
        assert_eq!(
            not_installed(&["llvm-22-dev", "zlib1g-dev", "sqlite3", "stress-ng"], dpkg),
            vec!["sqlite3".to_string(), "stress-ng".to_string()]
        );
        assert!(not_installed(&["llvm-22-dev"], dpkg).is_empty());
    }

    #[test]
    fn missing_components_matches_whole_names() {
        let list = "cargo-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\n\
                    rust-docs-x86_64-unknown-linux-gnu\n";
        assert_eq!(
            missing_components(list, &["rustfmt", "clippy"]),
            vec!["rustfmt".to_string()]
        );
        assert!(
            missing_components(
                "rustfmt-aarch64-unknown-linux-gnu\nclippy-aarch64-unknown-linux-gnu",
                &["rustfmt", "clippy"]
            )
            .is_empty()
        );
    }

    #[test]
    fn toolchain_dir_needs_the_exact_date() {
        let names: Vec<String> = [
            "stable-x86_64-unknown-linux-gnu",
            "nightly-x86_64-unknown-linux-gnu",
            "nightly-2026-05-19-x86_64-unknown-linux-gnu",
            "nightly-2026-05-190-x86_64-unknown-linux-gnu",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            pick_toolchain_dir(&names, "nightly-2026-05-19"),
            Some("nightly-2026-05-19-x86_64-unknown-linux-gnu")
        );
        assert_eq!(pick_toolchain_dir(&names, "nightly-2026-05-20"), None);
        assert_eq!(
            pick_toolchain_dir(&names, "nightly"),
            Some("nightly-x86_64-unknown-linux-gnu")
        );
    }

    #[test]
    fn bpf_linker_version_is_parsed_and_checked() {
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.13.0\n"),
            Some((0, 13, 0))
        );
        assert_eq!(
            parse_bpf_linker_version("bpf-linker 0.9.15-dev"),
            Some((0, 9, 15))
        );
        assert_eq!(parse_bpf_linker_version("error: nope"), None);
        assert_eq!(parse_bpf_linker_version(""), None);
        assert!(wanted_linker((0, 13, 2)));
        assert!(!wanted_linker((0, 9, 15)));
    }

    #[test]
    fn tracefs_is_found_only_at_its_mount_point() {
        let mounts = "\
sysfs /sys sysfs rw,nosuid 0 0
tracefs /sys/kernel/debug/tracing tracefs rw 0 0
";
        assert!(!tracefs_in_mounts(mounts, TRACEFS));
        let mounted = format!("{mounts}tracefs /sys/kernel/tracing tracefs rw,relatime 0 0\n");
        assert!(tracefs_in_mounts(&mounted, TRACEFS));
    }
}
