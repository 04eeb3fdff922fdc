//! `cargo xtask setup [--for run|vm|screenshot|test|bench] [--dry-run]`: make this machine able
//! to do one thing (by default `run`: build lockrace and run `lockrace run`) and nothing more.
//!
//! Setup is a plan computed apart from its execution. [`probe`] reads what is there (one
//! `dpkg-query` call, rustup's toolchain directory, `bpf-linker --version`, the mount table: no
//! network, no compiler, a few milliseconds) into a [`State`]; [`plan`] is a pure function of a
//! [`Profile`] and that state: each [`Step`] is present, or missing with the exact commands that
//! install it; `--dry-run` prints the plan, otherwise [`execute`] runs it and re-checks each step.
//!
//! Invariants: a profile installs only what its command needs (`run` never names QEMU, Chromium,
//! busybox or the test programs); setup never removes a package: apt is asked to simulate the
//! install first and setup stops, naming the packages apt would remove (unless what it would
//! remove came from backports: then the clashing packages are taken from the same backports
//! suite, see [`crate::backports`]), and every `apt-get install` carries `--no-remove` so apt
//! itself aborts rather than remove one; running setup
//! twice changes nothing the second time; a step that cannot work (not root and no sudo, not
//! Debian) fails with a one-line error that says what to do instead.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow, bail};

use crate::{
    backports,
    cmd::{self, Io},
};

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

/// Debian packages for building lockrace: bpf-linker is compiled against, and at run time
/// dynamically linked to, LLVM 22. Every profile has them.
pub const BUILD_PACKAGES: &[(&str, &str)] = &[
    ("llvm-22-dev", "bpf-linker links LLVM 22"),
    ("libpolly-22-dev", "bpf-linker links LLVM 22"),
    ("libzstd-dev", "bpf-linker links LLVM 22"),
    ("zlib1g-dev", "bpf-linker links LLVM 22"),
    (
        "g++",
        "bpf-linker's llvm-sys compiles C and links libstdc++",
    ),
];

/// What `cargo xtask vm` adds: QEMU and the VM's userland.
pub const VM_PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-x86", "cargo xtask vm boots other kernels"),
    ("busybox-static", "cargo xtask vm: the VM's userland"),
];

/// What the HTML report's headless screenshots add (`cargo xtask screenshot`, the browser test).
pub const BROWSER_PACKAGES: &[(&str, &str)] = &[
    (
        "chromium",
        "the HTML report's browser test and cargo xtask screenshot",
    ),
    (
        "fonts-dejavu-core",
        "readable text in the HTML report's headless screenshots",
    ),
];

/// Programs the tests run (lockrace/tests, xtask's own tests), besides the VM and the browser.
pub const TEST_PACKAGES: &[(&str, &str)] = &[
    (
        "python3",
        "tests drive lock holders and interop peers in Python",
    ),
    (
        "util-linux",
        "tests run flock(1) and setpriv(1) as real lock takers",
    ),
    ("sqlite3", "tests trace a real program taking POSIX locks"),
    (
        "stress-ng",
        "tests trace a real program taking every lock flavour",
    ),
    ("cpio", "tests check the VM's initramfs with cpio(1)"),
];

const TRACEFS: &str = "/sys/kernel/tracing";

/// What setup prepares the machine for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Profile {
    /// Build lockrace and run `lockrace run` (`cargo xtask run`): LLVM 22 for bpf-linker, the
    /// pinned eBPF nightly, bpf-linker, tracefs.
    Run,
    /// `run` plus QEMU and busybox (`cargo xtask vm`).
    Vm,
    /// `run` plus Chromium and fonts (`cargo xtask screenshot`).
    Screenshot,
    /// Everything `cargo xtask test` needs: `vm`, `screenshot`, rustfmt, clippy and the
    /// programs the tests run.
    Test,
    /// `run` plus bpftrace and perf (`cargo xtask bench`).
    Bench,
}

impl Profile {
    pub const ALL: [Profile; 5] = [
        Profile::Run,
        Profile::Vm,
        Profile::Screenshot,
        Profile::Test,
        Profile::Bench,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Profile::Run => "run",
            Profile::Vm => "vm",
            Profile::Screenshot => "screenshot",
            Profile::Test => "test",
            Profile::Bench => "bench",
        }
    }

    /// The Debian packages of this profile, in install order, with why each is needed.
    pub fn packages(self) -> Vec<(&'static str, &'static str)> {
        let groups: &[&[(&str, &str)]] = match self {
            Profile::Run => &[BUILD_PACKAGES],
            Profile::Vm => &[BUILD_PACKAGES, VM_PACKAGES],
            Profile::Screenshot => &[BUILD_PACKAGES, BROWSER_PACKAGES],
            Profile::Test => &[BUILD_PACKAGES, TEST_PACKAGES, VM_PACKAGES, BROWSER_PACKAGES],
            Profile::Bench => &[BUILD_PACKAGES, crate::bench::BENCH_PACKAGES],
        };
        groups.iter().flat_map(|g| g.iter().copied()).collect()
    }

    /// rustfmt and clippy: only `cargo xtask test` runs them.
    fn wants_fmt_and_clippy(self) -> bool {
        self == Profile::Test
    }
}

/// Every package any profile names (the one dpkg query of [`probe`]).
fn all_packages() -> Vec<&'static str> {
    let mut names: Vec<&str> = Vec::new();
    for p in Profile::ALL {
        for (n, _) in p.packages() {
            if !names.contains(&n) {
                names.push(n);
            }
        }
    }
    names
}

// ---- what is there ---------------------------------------------------------------------------

/// The eBPF toolchain as found under rustup's toolchains/.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Toolchain {
    Missing,
    NoRustSrc,
    Ready,
}

/// bpf-linker as found in PATH or cargo's bin directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Linker {
    Missing,
    /// Found but `--version` does not answer.
    Broken(PathBuf),
    /// Found, with this version, and whether it is in PATH.
    Found {
        path: PathBuf,
        version: (u32, u32, u32),
        in_path: bool,
    },
}

/// Everything [`plan`] decides from: what this machine has, probed by [`probe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// We run as root (no sudo needed).
    pub root: bool,
    /// sudo is in PATH.
    pub sudo: bool,
    /// None: no dpkg-query (not Debian/Ubuntu). Else the installed packages among those asked.
    pub installed: Option<Vec<String>>,
    /// None: no rustup. Else `rustup component list --installed`.
    pub components: Option<String>,
    /// cargo-fmt and cargo-clippy are in PATH (enough without rustup).
    pub fmt_and_clippy_in_path: bool,
    pub toolchain: Toolchain,
    pub linker: Linker,
    pub tracefs: bool,
}

#[cfg(test)]
impl State {
    /// A fresh Debian machine with rustup and sudo and nothing else (for tests and examples).
    pub fn fresh() -> State {
        State {
            root: false,
            sudo: true,
            installed: Some(Vec::new()),
            components: Some(
                "cargo-x86_64-unknown-linux-gnu\nrustc-x86_64-unknown-linux-gnu\n".into(),
            ),
            fmt_and_clippy_in_path: false,
            toolchain: Toolchain::Missing,
            linker: Linker::Missing,
            tracefs: false,
        }
    }
}

/// Reads this machine's state; changes nothing and needs no root.
pub fn probe() -> Result<State> {
    // rustup without a default toolchain fails here: then no component is installed.
    let components = cmd::which("rustup").map(|_| {
        cmd::stdout_of(Command::new("rustup").args(["component", "list", "--installed"]))
            .unwrap_or_default()
    });
    Ok(State {
        root: cmd::is_root(),
        sudo: cmd::which("sudo").is_some(),
        installed: installed_packages(&all_packages())?,
        components,
        fmt_and_clippy_in_path: cmd::which("cargo-fmt").is_some()
            && cmd::which("cargo-clippy").is_some(),
        toolchain: match toolchain_dir(EBPF_TOOLCHAIN) {
            None => Toolchain::Missing,
            Some(dir) if has_rust_src(&dir) => Toolchain::Ready,
            Some(_) => Toolchain::NoRustSrc,
        },
        linker: match find_bpf_linker() {
            None => Linker::Missing,
            Some(path) => match bpf_linker_version(&path) {
                None => Linker::Broken(path),
                Some(version) => Linker::Found {
                    path,
                    version,
                    in_path: cmd::which("bpf-linker").is_some(),
                },
            },
        },
        tracefs: tracefs_mounted(),
    })
}

/// The packages among `names` that dpkg reports installed (one dpkg-query call); None when
/// there is no dpkg-query.
fn installed_packages(names: &[&str]) -> Result<Option<Vec<String>>> {
    if cmd::which("dpkg-query").is_none() {
        return Ok(None);
    }
    let mut query = Command::new("dpkg-query");
    query.args(["-W", "-f=${Package} ${Status}\\n"]).args(names);
    // dpkg-query exits 1 when some package is unknown; its stdout still lists the known ones.
    let ran = cmd::exec(&mut query, Io::Capture)?;
    if !ran.status.success() && ran.status.code() != Some(1) {
        return Err(cmd::failure(&cmd::display(&query), ran.status, &ran.stderr));
    }
    let missing = not_installed(names, &ran.stdout);
    Ok(Some(
        names
            .iter()
            .filter(|n| !missing.iter().any(|m| m == *n))
            .map(|n| n.to_string())
            .collect(),
    ))
}

/// Pure part of the dpkg query: `dpkg_output` has one `NAME STATUS` line per known package.
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

// ---- the plan --------------------------------------------------------------------------------

/// What one step does when its part is missing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// `apt-get update`, a simulated install (stop if apt would remove anything), then `apt-get
    /// install -y --no-install-recommends --no-remove PACKAGES`.
    Apt(Vec<String>),
    /// `rustup component add ...`.
    Components(Vec<String>),
    /// `rustup toolchain install EBPF_TOOLCHAIN --profile minimal --component rust-src`.
    Toolchain,
    /// `rustup component add rust-src --toolchain EBPF_TOOLCHAIN`.
    RustSrc,
    /// `cargo install bpf-linker` against LLVM 22.
    Linker,
    /// `mount -t tracefs tracefs /sys/kernel/tracing`.
    Tracefs,
}

/// One step's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Already there (what was found).
    Present(String),
    /// Missing (what, for the user), and the action that installs it.
    Missing(String, Action),
    /// Missing and setup cannot install it here: the one-line reason, with a hint.
    Impossible(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Step {
    pub name: String,
    pub status: Status,
}

/// The steps of one profile on one machine, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub profile: Profile,
    pub root: bool,
    pub sudo: bool,
    pub steps: Vec<Step>,
}

/// The plan for `profile` on a machine in `state` (pure).
pub fn plan(profile: Profile, state: &State) -> Plan {
    let mut steps = Vec::new();
    let names: Vec<&str> = profile.packages().iter().map(|(n, _)| *n).collect();
    steps.push(Step {
        name: format!("apt packages ({})", names.join(" ")),
        status: apt_status(&names, state.installed.as_deref()),
    });
    if profile.wants_fmt_and_clippy() {
        steps.push(Step {
            name: "rustfmt + clippy".into(),
            status: fmt_clippy_status(state),
        });
    }
    steps.push(Step {
        name: format!("eBPF toolchain {EBPF_TOOLCHAIN} + rust-src"),
        status: match (&state.toolchain, &state.components) {
            (Toolchain::Ready, _) => Status::Present("present".into()),
            (_, None) => Status::Impossible(
                "rustup not found (hint: install it from https://rustup.rs, then rerun setup)"
                    .into(),
            ),
            (Toolchain::NoRustSrc, Some(_)) => {
                Status::Missing("rust-src missing".into(), Action::RustSrc)
            }
            (Toolchain::Missing, Some(_)) => {
                Status::Missing("not installed (about 10 s)".into(), Action::Toolchain)
            }
        },
    });
    steps.push(Step {
        name: "bpf-linker".into(),
        status: linker_status(&state.linker),
    });
    steps.push(Step {
        name: format!("tracefs at {TRACEFS}"),
        status: if state.tracefs {
            Status::Present("mounted".into())
        } else {
            Status::Missing("not mounted".into(), Action::Tracefs)
        },
    });
    Plan {
        profile,
        root: state.root,
        sudo: state.sudo,
        steps,
    }
}

fn apt_status(names: &[&str], installed: Option<&[String]>) -> Status {
    let Some(installed) = installed else {
        return Status::Impossible(format!(
            "no dpkg-query: setup installs packages with apt on Debian/Ubuntu (hint: install \
             the equivalents of {} yourself)",
            names.join(" ")
        ));
    };
    let missing: Vec<String> = names
        .iter()
        .filter(|n| !installed.iter().any(|i| i == *n))
        .map(|n| n.to_string())
        .collect();
    if missing.is_empty() {
        Status::Present("all present".into())
    } else {
        Status::Missing(
            format!("missing {}", missing.join(" ")),
            Action::Apt(missing),
        )
    }
}

fn fmt_clippy_status(state: &State) -> Status {
    match &state.components {
        None if state.fmt_and_clippy_in_path => Status::Present("present, no rustup".into()),
        None => Status::Impossible(
            "rustup not found (hint: install it from https://rustup.rs, then rerun setup)".into(),
        ),
        Some(list) => {
            let missing = missing_components(list, &["rustfmt", "clippy"]);
            if missing.is_empty() {
                Status::Present("present".into())
            } else {
                Status::Missing(
                    format!("missing {}", missing.join(" ")),
                    Action::Components(missing),
                )
            }
        }
    }
}

fn linker_status(linker: &Linker) -> Status {
    let build = format!("{BPF_LINKER_VERSION} for LLVM 22 (about 4 minutes)");
    match linker {
        Linker::Found {
            version: v,
            in_path,
            path,
        } if wanted_linker(*v) => Status::Present(if *in_path {
            format!("{}.{}.{}", v.0, v.1, v.2)
        } else {
            format!(
                "{}.{}.{} at {}, not in PATH; cargo finds it when run through rustup",
                v.0,
                v.1,
                v.2,
                path.display()
            )
        }),
        Linker::Found {
            path, version: v, ..
        } => Status::Missing(
            format!(
                "{} is {}.{}.{}: building {build}",
                path.display(),
                v.0,
                v.1,
                v.2
            ),
            Action::Linker,
        ),
        Linker::Broken(path) => Status::Missing(
            format!("{} does not run: building {build}", path.display()),
            Action::Linker,
        ),
        Linker::Missing => Status::Missing(format!("missing: building {build}"), Action::Linker),
    }
}

/// The arguments of the install itself, after `apt-get`.
pub fn apt_install_args(packages: &[String]) -> Vec<String> {
    let mut a: Vec<String> = ["install", "-y", "--no-install-recommends", "--no-remove"]
        .map(String::from)
        .to_vec();
    a.extend(packages.iter().cloned());
    a
}

/// The commands of one action, exactly as they run (root through sudo when needed).
pub fn commands(action: &Action, root: bool, sudo: bool) -> Result<Vec<Command>> {
    let as_root = |program: &str, envs: &[(&str, &str)], why: &str| {
        cmd::root_command(root, sudo, program.as_ref(), envs, false, why)
    };
    Ok(match action {
        Action::Apt(packages) => {
            let why = format!("installing {}", packages.join(" "));
            let mut update = as_root("apt-get", &[], &why)?;
            update.arg("update");
            let mut install = as_root("apt-get", &[("DEBIAN_FRONTEND", "noninteractive")], &why)?;
            install.args(apt_install_args(packages));
            vec![update, install]
        }
        Action::Components(c) => {
            let mut add = Command::new("rustup");
            add.args(["component", "add"]).args(c);
            vec![add]
        }
        Action::Toolchain => {
            let mut c = Command::new("rustup");
            c.args([
                "toolchain",
                "install",
                EBPF_TOOLCHAIN,
                "--profile",
                "minimal",
                "--component",
                "rust-src",
            ]);
            vec![c]
        }
        Action::RustSrc => {
            let mut c = Command::new("rustup");
            c.args([
                "component",
                "add",
                "rust-src",
                "--toolchain",
                EBPF_TOOLCHAIN,
            ]);
            vec![c]
        }
        Action::Linker => {
            let mut c = Command::new("cargo");
            c.env("LLVM_PREFIX", LLVM_PREFIX).args([
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
            vec![c]
        }
        Action::Tracefs => {
            let mut m = as_root("mount", &[], "mounting tracefs")?;
            m.args(["-t", "tracefs", "tracefs", TRACEFS]);
            vec![m]
        }
    })
}

/// The plan as `--dry-run` prints it: one line per step, the commands of the missing ones.
pub fn render(plan: &Plan) -> String {
    let mut s = format!(
        "setup --for {} (dry run: nothing is installed or changed)\n",
        plan.profile.name()
    );
    let mut todo = 0;
    for step in &plan.steps {
        match &step.status {
            Status::Present(what) => {
                let _ = writeln!(s, "setup: {} ... ok ({what})", step.name);
            }
            Status::Impossible(why) => {
                todo += 1;
                let _ = writeln!(s, "setup: {} ... cannot install: {why}", step.name);
            }
            Status::Missing(what, action) => {
                todo += 1;
                let _ = writeln!(s, "setup: {} ... {what}; would run:", step.name);
                match commands(action, plan.root, plan.sudo) {
                    Ok(cmds) => {
                        for c in cmds {
                            let _ = writeln!(s, "    {}", cmd::display(&c));
                        }
                    }
                    Err(e) => {
                        let _ = writeln!(s, "    (cannot: {e})");
                    }
                }
                if matches!(action, Action::Apt(_)) {
                    let _ = writeln!(
                        s,
                        "    (setup first simulates this install with `-s` and stops if apt would remove a \
                         package)"
                    );
                }
            }
        }
    }
    if todo == 0 {
        s.push_str("setup: nothing to do\n");
    } else {
        let _ = writeln!(s, "setup: {todo} step(s) to do");
    }
    s
}

// ---- running the plan ------------------------------------------------------------------------

/// Makes the machine ready for `profile`: probe, plan, execute.
pub fn ensure(profile: Profile) -> Result<()> {
    execute(&plan(profile, &probe()?))
}

/// `cargo xtask setup [--for P] [--dry-run]`.
pub fn setup_command(profile: Profile, dry_run: bool) -> Result<()> {
    let plan = plan(profile, &probe()?);
    if dry_run {
        print!("{}", render(&plan));
        Ok(())
    } else {
        execute(&plan)
    }
}

/// What `cargo xtask bench` calls before adding its own packages with [`install_packages`]:
/// the `run` profile (together: the `bench` profile).
pub fn setup() -> Result<()> {
    ensure(Profile::Run)
}

/// Runs each step of `plan` in order; stops at the first that fails.
pub fn execute(plan: &Plan) -> Result<()> {
    for step in &plan.steps {
        match &step.status {
            Status::Present(what) => println!("setup: {} ... ok ({what})", step.name),
            Status::Impossible(why) => bail!("setup: {}: {why}", step.name),
            Status::Missing(what, action) => {
                println!("setup: {} ... {what}, installing", step.name);
                let done = run_action(action, plan.root, plan.sudo)?;
                println!("setup: {} ... ok (installed {done})", step.name);
            }
        }
    }
    Ok(())
}

/// Runs one action and checks that its part is there afterwards; what was installed.
fn run_action(action: &Action, root: bool, sudo: bool) -> Result<String> {
    let cmds = commands(action, root, sudo)?;
    match action {
        Action::Apt(packages) => {
            apt_install(packages, cmds, root, sudo)?;
            let names: Vec<&str> = packages.iter().map(String::as_str).collect();
            let still = match installed_packages(&names)? {
                Some(ok) => names
                    .iter()
                    .filter(|n| !ok.iter().any(|o| o == *n))
                    .map(|n| n.to_string())
                    .collect(),
                None => packages.clone(),
            };
            if !still.is_empty() {
                bail!(
                    "apt-get install finished but {} still missing",
                    still.join(" ")
                );
            }
            Ok(packages.join(" "))
        }
        Action::Components(c) => {
            for mut cmd in cmds {
                cmd::run(&mut cmd, Io::Inherit)?;
            }
            Ok(c.join(" "))
        }
        Action::Toolchain | Action::RustSrc => {
            for mut cmd in cmds {
                cmd::run(&mut cmd, Io::Inherit)?;
            }
            match toolchain_dir(EBPF_TOOLCHAIN) {
                Some(dir) if has_rust_src(&dir) => Ok(EBPF_TOOLCHAIN.into()),
                _ => bail!(
                    "rustup finished but {EBPF_TOOLCHAIN} with rust-src is not under {} (hint: \
                     check RUSTUP_HOME)",
                    rustup_home()
                        .unwrap_or_default()
                        .join("toolchains")
                        .display()
                ),
            }
        }
        Action::Linker => {
            for mut cmd in cmds {
                cmd::run(&mut cmd, Io::Inherit)
                    .with_context(|| format!("building bpf-linker against {LLVM_PREFIX}"))?;
            }
            match find_bpf_linker().and_then(|p| bpf_linker_version(&p)) {
                Some(v) if wanted_linker(v) => Ok(format!("{}.{}.{}", v.0, v.1, v.2)),
                _ => bail!(
                    "cargo install finished but no working bpf-linker {BPF_LINKER_VERSION} is in \
                     PATH or {}",
                    cargo_bin_dir().unwrap_or_default().display()
                ),
            }
        }
        Action::Tracefs => {
            for mut cmd in cmds {
                cmd::run(&mut cmd, Io::Capture).map_err(|e| {
                    anyhow!("{e} (hint: as root, run `mount -t tracefs tracefs {TRACEFS}`)")
                })?;
            }
            if !tracefs_mounted() {
                bail!("mount succeeded but {TRACEFS}/events is still missing");
            }
            Ok("(mounted)".into())
        }
    }
}

/// `apt-get update`, then a simulated install that must remove nothing, then the install.
///
/// When the only obstacle is a package this machine took from backports (the install would
/// remove it), the wanted packages that clash are taken from the same backports suite instead
/// ([`backports::fit`]), so that the versions fit and nothing is removed.
fn apt_install(packages: &[String], cmds: Vec<Command>, root: bool, sudo: bool) -> Result<()> {
    let mut cmds = cmds.into_iter();
    let (Some(mut update), Some(mut install)) = (cmds.next(), cmds.next()) else {
        bail!("internal: an apt action has two commands");
    };
    cmd::run(&mut update, Io::Inherit)?;
    // The simulation needs no root and prints what apt would do; --no-remove makes it fail
    // (status 100) when the install needs a removal, after listing the packages it would remove.
    let mut simulate = Command::new("apt-get");
    simulate
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-s"])
        .args(apt_install_args(packages));
    let sim = cmd::exec(&mut simulate, Io::Capture)?;
    let removed = apt_removals(&sim.stdout);
    if !removed.is_empty() {
        let Some(specs) = backports::fit(packages, &removed, root, sudo)? else {
            return Err(apt_refusal(packages, &removed, &sim.stdout, &sim.stderr));
        };
        println!(
            "setup: installing {} would remove {}, which came from backports; installing {} \
             instead, which fits",
            packages.join(" "),
            removed.join(" "),
            specs.join(" ")
        );
        install = cmd::root_command(
            root,
            sudo,
            "apt-get".as_ref(),
            &[("DEBIAN_FRONTEND", "noninteractive")],
            false,
            "installing packages",
        )?;
        install.args(apt_install_args(&specs));
    } else if !sim.status.success() {
        return Err(apt_refusal(packages, &removed, &sim.stdout, &sim.stderr));
    }
    let ran = cmd::exec(&mut install, Io::Inherit)?;
    if !ran.status.success() {
        bail!(
            "`{}` failed ({}) (hint: setup never removes a package; read apt's message above, \
             then install {} yourself)",
            cmd::display(&install),
            cmd::describe(ran.status),
            packages.join(" ")
        );
    }
    Ok(())
}

/// The packages apt says it would remove: the indented lines after `The following packages
/// will be REMOVED:`, and `Remv NAME [...]` lines of a simulation.
pub fn apt_removals(apt_output: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut in_block = false;
    for line in apt_output.lines() {
        if line.starts_with("The following packages will be REMOVED") {
            in_block = true;
            continue;
        }
        if in_block {
            if line.starts_with(' ') {
                out.extend(
                    line.split_whitespace()
                        .map(|p| p.trim_end_matches('*').to_string()),
                );
                continue;
            }
            in_block = false;
        }
        if let Some(rest) = line.strip_prefix("Remv ")
            && let Some(name) = rest.split_whitespace().next()
        {
            out.push(name.to_string());
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The one-line error for an install apt would only do by removing packages (or refuses).
pub fn apt_refusal(
    packages: &[String],
    removed: &[String],
    stdout: &str,
    stderr: &str,
) -> anyhow::Error {
    let wanted = packages.join(" ");
    if !removed.is_empty() {
        anyhow!(
            "installing {wanted} would remove {}, and setup never removes a package (hint: see \
             why with `apt-get install -s {wanted}`; resolve the conflict yourself, e.g. install \
             versions that fit together, then rerun setup)",
            removed.join(" ")
        )
    } else {
        let tail = cmd::stderr_tail(&format!("{stdout}\n{stderr}"), 2);
        anyhow!(
            "apt cannot install {wanted}: {tail} (hint: `apt-get install -s {wanted}` shows why)"
        )
    }
}

/// What `cargo xtask bench` calls for its own packages: installs the missing ones among
/// `packages` with the same apt steps as the plan (never removing a package).
pub fn install_packages(step: &str, packages: &[(&str, &str)]) -> Result<()> {
    let names: Vec<&str> = packages.iter().map(|(name, _)| *name).collect();
    let installed = installed_packages(&names)?;
    execute(&Plan {
        profile: Profile::Bench,
        root: cmd::is_root(),
        sudo: cmd::which("sudo").is_some(),
        steps: vec![Step {
            name: format!("{step} ({})", names.join(" ")),
            status: apt_status(&names, installed.as_deref()),
        }],
    })
}

// ---- rust components -------------------------------------------------------------------------

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

    /// Every command line of a plan, as shown.
    fn shown(p: &Plan) -> Vec<String> {
        p.steps
            .iter()
            .filter_map(|s| match &s.status {
                Status::Missing(_, a) => Some(commands(a, p.root, p.sudo).unwrap()),
                _ => None,
            })
            .flatten()
            .map(|c| cmd::display(&c))
            .collect()
    }

    /// A few machines: fresh, fresh as root, everything installed, half installed.
    fn machines() -> Vec<State> {
        let fresh = State::fresh();
        let root = State {
            root: true,
            sudo: false,
            ..fresh.clone()
        };
        let all = State {
            installed: Some(all_packages().iter().map(|s| s.to_string()).collect()),
            components: Some(
                "rustfmt-x86_64-unknown-linux-gnu\nclippy-x86_64-unknown-linux-gnu\n".into(),
            ),
            toolchain: Toolchain::Ready,
            linker: Linker::Found {
                path: "/root/.cargo/bin/bpf-linker".into(),
                version: (0, 13, 0),
                in_path: true,
            },
            tracefs: true,
            ..fresh.clone()
        };
        let half = State {
            installed: Some(vec!["llvm-22-dev".into(), "qemu-system-x86".into()]),
            toolchain: Toolchain::NoRustSrc,
            linker: Linker::Found {
                path: "/usr/local/bin/bpf-linker".into(),
                version: (0, 9, 15),
                in_path: true,
            },
            ..fresh.clone()
        };
        vec![fresh, root, all, half]
    }

    const NOT_FOR_RUN: [&str; 8] = [
        "qemu",
        "chromium",
        "busybox",
        "sqlite3",
        "stress-ng",
        "cpio",
        "fonts",
        "bpftrace",
    ];

    #[test]
    fn the_run_plan_names_only_what_run_needs() {
        for state in machines() {
            let p = plan(Profile::Run, &state);
            let text = format!("{}\n{}", render(&p), shown(&p).join("\n"));
            for bad in NOT_FOR_RUN {
                assert!(!text.contains(bad), "{bad} in the run plan:\n{text}");
            }
            assert!(text.contains("llvm-22-dev"), "{text}");
        }
        // On a fresh machine: the exact commands.
        let p = plan(Profile::Run, &State::fresh());
        assert_eq!(
            shown(&p),
            [
                "sudo apt-get update",
                "sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y \
                 --no-install-recommends --no-remove llvm-22-dev libpolly-22-dev libzstd-dev \
                 zlib1g-dev g++",
                "rustup toolchain install nightly-2026-05-19 --profile minimal --component rust-src",
                "LLVM_PREFIX=/usr/lib/llvm-22 cargo install bpf-linker --locked --force --version \
                 0.13.0 --no-default-features --features llvm-22",
                "sudo mount -t tracefs tracefs /sys/kernel/tracing",
            ]
        );
        assert!(!p.steps.iter().any(|s| s.name.contains("clippy")));
    }

    #[test]
    fn no_plan_removes_anything_and_every_install_refuses_removals() {
        for state in machines() {
            for profile in Profile::ALL {
                let p = plan(profile, &state);
                for line in shown(&p) {
                    let words: Vec<&str> = line.split_whitespace().collect();
                    for bad in ["remove", "purge", "autoremove", "uninstall", "-r", "-P"] {
                        assert!(!words.contains(&bad), "{bad} in {line:?}");
                    }
                    if let Some(i) = words.iter().position(|w| *w == "apt-get") {
                        match words[i + 1] {
                            "update" => {}
                            "install" => assert!(
                                words.contains(&"--no-remove") && words.contains(&"-y"),
                                "{line}"
                            ),
                            other => panic!("apt-get {other} in a plan: {line}"),
                        }
                    }
                    assert!(!line.contains("dpkg "), "{line}");
                }
            }
        }
    }

    #[test]
    fn profiles_nest_as_documented() {
        let names = |p: Profile| -> Vec<&str> { p.packages().iter().map(|(n, _)| *n).collect() };
        let run = names(Profile::Run);
        for p in Profile::ALL {
            for n in &run {
                assert!(names(p).contains(n), "{n} missing from {p:?}");
            }
        }
        let test = names(Profile::Test);
        for n in names(Profile::Vm).iter().chain(&names(Profile::Screenshot)) {
            assert!(test.contains(n), "{n} missing from the test profile");
        }
        for want in [
            "qemu-system-x86",
            "busybox-static",
            "cpio",
            "chromium",
            "fonts-dejavu-core",
            "sqlite3",
            "stress-ng",
            "util-linux",
            "python3",
        ] {
            assert!(test.contains(&want), "{want} missing from the test profile");
        }
        assert!(names(Profile::Bench).contains(&"bpftrace"));
        assert!(!test.contains(&"bpftrace"));
        assert!(!names(Profile::Vm).contains(&"chromium"));
        // Only the test profile asks for rustfmt and clippy.
        for p in Profile::ALL {
            let has = plan(p, &State::fresh())
                .steps
                .iter()
                .any(|s| s.name == "rustfmt + clippy");
            assert_eq!(has, p == Profile::Test, "{p:?}");
        }
    }

    #[test]
    fn a_ready_machine_has_nothing_to_do_and_a_half_ready_one_only_its_gaps() {
        let all = &machines()[2];
        for profile in Profile::ALL {
            let p = plan(profile, all);
            assert!(shown(&p).is_empty(), "{profile:?}: {:?}", shown(&p));
            assert!(
                render(&p).ends_with("setup: nothing to do\n"),
                "{}",
                render(&p)
            );
        }
        let half = &machines()[3];
        let p = plan(Profile::Vm, half);
        let cmds = shown(&p);
        assert!(
            cmds[1]
                .ends_with("--no-remove libpolly-22-dev libzstd-dev zlib1g-dev g++ busybox-static"),
            "{cmds:?}"
        );
        assert_eq!(
            cmds[2],
            "rustup component add rust-src --toolchain nightly-2026-05-19"
        );
        let text = render(&p);
        assert!(
            text.contains("/usr/local/bin/bpf-linker is 0.9.15: building 0.13.0"),
            "{text}"
        );
        // As root: no sudo in front.
        let p = plan(Profile::Run, &machines()[1]);
        assert_eq!(shown(&p)[0], "apt-get update");
    }

    #[test]
    fn what_setup_cannot_do_is_said_in_one_line() {
        let no_dpkg = State {
            installed: None,
            components: None,
            ..State::fresh()
        };
        let p = plan(Profile::Test, &no_dpkg);
        let text = render(&p);
        assert!(text.contains("cannot install: no dpkg-query"), "{text}");
        assert!(text.contains("rustup not found"), "{text}");
        let err = execute(&p).unwrap_err().to_string();
        assert!(
            err.contains("no dpkg-query") && !err.contains('\n'),
            "{err}"
        );
        let no_sudo = State {
            sudo: false,
            ..State::fresh()
        };
        let text = render(&plan(Profile::Run, &no_sudo));
        assert!(
            text.contains("(cannot: installing llvm-22-dev libpolly-22-dev libzstd-dev zlib1g-dev g++ needs root and sudo is not installed"),
            "{text}"
        );
    }

    #[test]
    fn apt_removals_are_read_from_its_own_words() {
        // apt 2.6.1 (Debian 12), `apt-get install -s --no-remove busybox` with busybox-static
        // installed: status 100.
        let refused = "\
Reading package lists...
Building dependency tree...
Reading state information...
The following packages will be REMOVED:
  busybox-static
The following NEW packages will be installed:
  busybox
0 upgraded, 1 newly installed, 1 to remove and 136 not upgraded.
";
        assert_eq!(apt_removals(refused), ["busybox-static"]);
        let sim = "\
The following packages will be REMOVED:
  qemu-utils* libfoo1
The following NEW packages will be installed:
  qemu-system-x86
Remv qemu-utils [1:8.2+dfsg-1~bpo12+1]
Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18 Debian:12.15/oldstable [amd64])
";
        assert_eq!(apt_removals(sim), ["libfoo1", "qemu-utils"]);
        assert!(apt_removals("Inst sqlite3 (3.40.1-2 Debian:12 [amd64])\n").is_empty());
        let err = apt_refusal(
            &["qemu-system-x86".into()],
            &apt_removals(sim),
            sim,
            "E: Packages need to be removed but remove is disabled.",
        )
        .to_string();
        assert!(
            err.starts_with(
                "installing qemu-system-x86 would remove libfoo1 qemu-utils, and setup never \
                 removes a package (hint: "
            ),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let other = apt_refusal(
            &["nosuchpkg".into()],
            &[],
            "",
            "E: Unable to locate package nosuchpkg\n",
        )
        .to_string();
        assert_eq!(
            other,
            "apt cannot install nosuchpkg: E: Unable to locate package nosuchpkg (hint: \
             `apt-get install -s nosuchpkg` shows why)"
        );
    }

    /// The real apt on this machine: a simulated install that needs a removal fails with
    /// --no-remove, and the removal is named. busybox and busybox-static conflict; when neither
    /// or both are installed the case does not arise, and the test says so.
    #[test]
    fn this_machines_apt_refuses_a_removal_under_no_remove() {
        if cmd::which("apt-get").is_none() {
            eprintln!("no apt-get here: nothing to check");
            return;
        }
        let installed = installed_packages(&["busybox-static", "busybox"]).unwrap();
        let Some(installed) = installed else { return };
        let other = match installed.as_slice() {
            [one] if one == "busybox-static" => "busybox",
            [one] if one == "busybox" => "busybox-static",
            _ => {
                eprintln!("neither or both busybox flavours installed: no conflict to simulate");
                return;
            }
        };
        let mut sim = Command::new("apt-get");
        sim.arg("-s").args(apt_install_args(&[other.to_string()]));
        let ran = cmd::exec(&mut sim, Io::Capture).unwrap();
        assert_eq!(ran.status.code(), Some(100), "{}{}", ran.stdout, ran.stderr);
        assert!(ran.stderr.contains("remove is disabled"), "{}", ran.stderr);
        assert_eq!(apt_removals(&ran.stdout), [installed[0].clone()]);
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
