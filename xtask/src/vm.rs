//! `cargo xtask vm (--kernel PATH | --debian VERSION)... [--host] [-- RUN-ARGS]`: run the traced
//! `lockrace run RUN-ARGS` on other kernels, each booted in QEMU with a busybox initramfs, and
//! end with one table comparing them (and the host's kernel with `--host`).
//!
//! Per kernel: the image comes from `--kernel` (a bzImage) or from Debian's
//! `linux-image-VERSION-cloud-amd64-unsigned` (`apt-get download` + `dpkg -x`, cached under
//! target/vm/cache/); QEMU boots it with TCG (`-accel tcg -cpu max`; `--kvm` opts into KVM,
//! which hangs with nested guests on some hosts, so it is never probed automatically), no
//! network, `-no-reboot` and `panic=-1`, so a panic ends QEMU at once. The VM's /init runs
//! lockrace and prints the report framed and checksummed on the serial console; the host
//! follows the console ([`console`]), shows the phases as they happen, and stores
//! target/vm/LABEL/report.json and target/vm/LABEL/console.log. `--cpus N` sets the vCPUs (1 to
//! 8); `--sched-features A,NO_B` has /init write them to the guest's
//! /sys/kernel/debug/sched/features before the run ([`sched`]; LABEL gains `.A.NO_B`). Every
//! run leaves target/vm/LABEL/meta.json (how it ran, the scheduler features in force as the
//! guest read them back, the figures or the reason) and target/vm/matrix.json (all rows).
//!
//! Exit contract (for `git bisect run`): 0 when every kernel completed its run and produced a
//! report; 125 ("skip": this commit cannot be tested) on anything else, with the reason on one
//! line: a kernel path that does not exist, a kernel that cannot be fetched, a boot failure, a
//! kernel panic, a scheduler feature the guest kernel does not have (the line names the ones it
//! has), lockrace failing in the VM (e.g. a missing tracepoint), a corrupted report, or the time
//! limit. Invariant: a report.json left in target/vm/LABEL/ is always from the last
//! run of that kernel (the old one is removed before booting).
use std::{
    io::{BufRead, BufReader, Read, Write},
    path::{Path, PathBuf},
    process::{Command, ExitCode, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;

use crate::{
    cmd::{self, Io},
    setup, workspace,
};

mod console;
mod initramfs;
mod matrix;
mod sched;

use console::{Console, Seen};
use matrix::{Figures, Row};

/// The exit status `git bisect run` reads as "cannot test this commit".
pub const EXIT_SKIP: u8 = 125;

#[derive(Args, Debug, Clone, PartialEq)]
pub struct VmArgs {
    /// Boot this kernel image (a bzImage, e.g. arch/x86/boot/bzImage of a kernel tree).
    /// Repeatable.
    #[arg(long, value_name = "PATH")]
    pub kernel: Vec<PathBuf>,
    /// Boot Debian's cloud kernel of this ABI version (e.g. 6.1.0-54), fetched with `apt-get
    /// download linux-image-VERSION-cloud-amd64-unsigned` and cached under target/vm/cache/.
    /// Repeatable.
    #[arg(long, value_name = "VERSION")]
    pub debian: Vec<String>,
    /// Also run lockrace on this machine's kernel (as root): the first row of the table.
    #[arg(long)]
    pub host: bool,
    /// Virtual CPUs per VM (QEMU -smp), 1 to 8.
    #[arg(long, visible_alias = "smp", value_name = "N", default_value_t = 2, value_parser = parse_cpus)]
    pub cpus: u32,
    /// Scheduler features to set in every VM before the run, comma-separated (e.g.
    /// NO_WAKEUP_PREEMPTION,NO_RUN_TO_PARITY): written to the guest's
    /// /sys/kernel/debug/sched/features, read back, and recorded with the result. A name the
    /// guest kernel does not have ends that VM with a one-line error listing the ones it has.
    #[arg(long, value_name = "NAMES", value_delimiter = ',', value_parser = sched::parse_feature)]
    pub sched_features: Vec<String>,
    /// Memory per VM, in MiB.
    #[arg(long, value_name = "MB", default_value_t = 512, value_parser = clap::value_parser!(u32).range(128..=65536))]
    pub mem: u32,
    /// Seconds a VM may take, boot to power-off, before it is killed (exit 125).
    #[arg(long, value_name = "S", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: u64,
    /// Use KVM (`-accel kvm -cpu host`) instead of TCG. Off by default: nested guests hang on
    /// some hosts (then the VM ends at --timeout).
    #[arg(long)]
    pub kvm: bool,
    /// (internal, for tests) put this lockrace binary in the VM instead of building the release.
    #[arg(long, value_name = "PATH", hide = true)]
    pub lockrace: Option<PathBuf>,
    /// (internal, for tests) append this to the kernel command line.
    #[arg(long, value_name = "ARGS", hide = true)]
    pub append: Option<String>,
    /// (internal, for tests) store reports, console logs and the initramfs under DIR instead of
    /// target/vm (the kernel cache stays in target/vm/cache).
    #[arg(long, value_name = "DIR", hide = true)]
    pub out: Option<PathBuf>,
    /// Arguments for `lockrace run` in every VM (after `--`; `--json` is set by xtask).
    #[arg(last = true, value_name = "RUN-ARGS")]
    pub args: Vec<String>,
}

/// `--cpus N`: 1 to 8 virtual CPUs.
pub fn parse_cpus(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(n @ 1..=8) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a vCPU count from 1 to 8 (hint: TCG emulates each vCPU with a host \
             thread; 2 is the default)"
        )),
    }
}

/// `--sched-features`: each feature once, never both NAME and NO_NAME.
pub fn check_sched_features(names: &[String]) -> Result<()> {
    for (i, a) in names.iter().enumerate() {
        if let Some(b) = names[..i].iter().find(|b| sched::base(b) == sched::base(a)) {
            if a == b {
                bail!("--sched-features names {a} twice");
            }
            bail!("--sched-features asks for both {b} and {a} (hint: keep one)");
        }
    }
    Ok(())
}

/// The label suffix for a run with scheduler features: `.NO_WAKEUP_PREEMPTION.NO_RUN_TO_PARITY`
/// (so runs of one kernel with different features keep apart under target/vm/).
pub fn features_suffix(names: &[String]) -> String {
    names.iter().map(|n| format!(".{n}")).collect()
}

/// Where a kernel image comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Path(PathBuf),
    Debian(String),
}

/// One kernel to boot: its label (the row name and the directory under target/vm/) and source.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub label: String,
    pub source: Source,
}

/// `cargo xtask vm`: never an error, always an exit status (0 or 125).
pub fn vm(args: &VmArgs) -> ExitCode {
    match run_matrix(args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(EXIT_SKIP),
        Err(e) => {
            let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
            eprintln!("xtask vm: {}", msg.join(": ").replace('\n', " "));
            ExitCode::from(EXIT_SKIP)
        }
    }
}

/// The release string embedded in a bzImage (`6.1.0-54-cloud-amd64`), from its setup header.
pub fn bzimage_release(image: &[u8]) -> Option<String> {
    if image.get(0x202..0x206)? != b"HdrS" {
        return None;
    }
    let ptr = u16::from_le_bytes([*image.get(0x20e)?, *image.get(0x20f)?]) as usize;
    if ptr == 0 {
        return None;
    }
    let text = image.get(0x200 + ptr..)?;
    let end = text.iter().position(|&b| b == 0 || b == b' ')?;
    let release = std::str::from_utf8(&text[..end]).ok()?;
    (!release.is_empty()).then(|| release.to_string())
}

/// A label usable as a directory name.
pub fn sanitize(label: &str) -> String {
    let s: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() { "kernel".into() } else { s }
}

/// Debian's kernel release for `--debian VERSION`: the cloud flavour unless one is given.
pub fn debian_release(version: &str) -> Result<String> {
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".+-".contains(c))
        || !version.starts_with(|c: char| c.is_ascii_digit())
    {
        bail!(
            "--debian {version:?} is not a kernel ABI version (hint: e.g. --debian 6.1.0-54, as in \
             linux-image-6.1.0-54-cloud-amd64)"
        );
    }
    Ok(if version.ends_with("amd64") {
        version.to_string()
    } else {
        format!("{version}-cloud-amd64")
    })
}

/// The kernels to boot, in order: `--debian` ones, then `--kernel` ones. A kernel path that
/// does not exist is an error. Labels are unique (a repeated one gets `-2`, `-3`, ...).
pub fn plan(args: &VmArgs, release_of: impl Fn(&Path) -> Option<String>) -> Result<Vec<Target>> {
    if args.kernel.is_empty() && args.debian.is_empty() && !args.host {
        bail!(
            "nothing to run (hint: pass --kernel PATH/bzImage, --debian VERSION (e.g. 6.1.0-54) \
             or --host)"
        );
    }
    let mut out: Vec<Target> = Vec::new();
    let mut push = |label: String, source: Source| {
        let base = sanitize(&label);
        let mut label = base.clone();
        let mut n = 1;
        // host, cache and stage are directories of target/vm/ already.
        while ["host", "cache", "stage"].contains(&label.as_str())
            || out.iter().any(|t| t.label == label)
        {
            n += 1;
            label = format!("{base}-{n}");
        }
        out.push(Target { label, source });
    };
    let suffix = features_suffix(&args.sched_features);
    for v in &args.debian {
        debian_release(v)?;
        push(format!("{v}{suffix}"), Source::Debian(v.clone()));
    }
    for k in &args.kernel {
        if !k.exists() {
            bail!(
                "kernel image {} does not exist (hint: build it with `make bzImage`, or pass \
                 --debian VERSION)",
                k.display()
            );
        }
        if !k.is_file() {
            bail!("kernel image {} is not a file", k.display());
        }
        let label = release_of(k).unwrap_or_else(|| {
            k.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "kernel".into())
        });
        push(format!("{label}{suffix}"), Source::Path(k.clone()));
    }
    Ok(out)
}

/// The kernel command line: serial console, reboot at once on panic (QEMU then exits, since it
/// runs with -no-reboot), few messages; then the extra text.
pub fn kernel_cmdline(extra: Option<&str>) -> String {
    let mut s = "console=ttyS0 panic=-1 quiet".to_string();
    if let Some(e) = extra.map(str::trim).filter(|e| !e.is_empty()) {
        s.push(' ');
        s.push_str(e);
    }
    s
}

/// The QEMU command for one VM.
pub fn qemu_command(args: &VmArgs, kernel: &Path, initrd: &Path) -> Command {
    let mut c = Command::new("qemu-system-x86_64");
    if args.kvm {
        c.args(["-accel", "kvm", "-cpu", "host"]);
    } else {
        c.args(["-accel", "tcg", "-cpu", "max"]);
    }
    c.args(["-smp", &args.cpus.to_string(), "-m", &args.mem.to_string()]);
    c.args(["-nographic", "-no-reboot", "-nic", "none"]);
    c.arg("-kernel").arg(kernel);
    c.arg("-initrd").arg(initrd);
    c.args(["-append", &kernel_cmdline(args.append.as_deref())]);
    c
}

/// `lockrace run ARGS` as shown to the user.
fn run_line(args: &[String]) -> String {
    let mut c = Command::new("lockrace");
    c.arg("run").args(args);
    cmd::display(&c)
}

fn accel(args: &VmArgs) -> &'static str {
    if args.kvm { "KVM" } else { "TCG" }
}

fn run_matrix(args: &VmArgs) -> Result<bool> {
    let targets = plan(args, |p| {
        std::fs::read(p).ok().and_then(|b| bzimage_release(&b))
    })?;
    initramfs::check_run_args(&args.args)?;
    check_sched_features(&args.sched_features)?;
    if let Some(l) = &args.lockrace
        && !cmd::is_executable(l)
    {
        bail!("--lockrace {} is not an executable file", l.display());
    }
    setup::ensure(setup::Profile::Vm)?;
    let target_dir = workspace::metadata()?.target_dir;
    let cache = target_dir.join("vm/cache");
    let vm_dir = args.out.clone().unwrap_or_else(|| target_dir.join("vm"));
    let lockrace = match &args.lockrace {
        Some(p) => p.clone(),
        None => {
            let mut build = workspace::cargo();
            build.args(["build", "--release", "-p", "lockrace"]);
            println!("xtask vm: {}", cmd::display(&build));
            cmd::run(&mut build, Io::Inherit)?;
            target_dir.join("release/lockrace")
        }
    };

    let mut rows = Vec::new();
    if args.host {
        let dir = vm_dir.join("host");
        let result = host_run(&lockrace, &args.args, &dir);
        // Read only: the host's debugfs is not mounted for this, and writes are refused there.
        let sched = std::fs::read_to_string(sched::FEATURES_FILE)
            .ok()
            .map(|t| sched::parse_list(&t));
        let row = Row {
            label: "host".into(),
            result,
            sched,
        };
        write_meta(&dir, &row_meta(&row, args, None, None));
        rows.push(row);
    }
    if !targets.is_empty() {
        let initrd = build_initramfs(&lockrace, &vm_dir, &args.args, &args.sched_features)?;
        for t in &targets {
            let dir = vm_dir.join(&t.label);
            let (row, guest, image) = match kernel_image(t, &cache) {
                Ok(image) => {
                    let (result, guest) = boot(args, t, &image, &initrd, &dir);
                    let row = Row {
                        label: t.label.clone(),
                        result,
                        sched: guest.in_force.clone(),
                    };
                    (row, Some(guest), Some(image))
                }
                Err(e) => {
                    let msg: Vec<String> = e.chain().map(|c| c.to_string()).collect();
                    let row = Row {
                        label: t.label.clone(),
                        result: Err(msg.join(": ").replace('\n', " ")),
                        sched: None,
                    };
                    (row, None, None)
                }
            };
            let _ = std::fs::create_dir_all(&dir);
            write_meta(
                &dir,
                &row_meta(&row, args, guest.as_ref(), image.as_deref()),
            );
            rows.push(row);
        }
    }
    let summary = vm_dir.join("matrix.json");
    let doc = serde_json::json!({
        "run_args": args.args,
        "accel": accel(args),
        "cpus": args.cpus,
        "mem_mib": args.mem,
        "sched_features_requested": args.sched_features,
        "rows": rows.iter().map(|r| row_meta(r, args, None, None)).collect::<Vec<_>>(),
    });
    write_json(&summary, &doc);

    let failed: Vec<&Row> = rows.iter().filter(|r| r.result.is_err()).collect();
    if rows.len() > 1 || failed.is_empty() {
        println!();
        println!("Kernel matrix ({}):", run_line(&args.args));
        print!(
            "{}",
            matrix::render(&rows, accel(args), &args.sched_features)
        );
        println!("  (summary: {})", summary.display());
    }
    match failed.as_slice() {
        [] => Ok(true),
        [one] if rows.len() == 1 => {
            if let Err(why) = &one.result {
                eprintln!("xtask vm: {}: {why}", one.label);
            }
            Ok(false)
        }
        many => {
            eprintln!(
                "xtask vm: {} of {} kernels have no result: {}",
                many.len(),
                rows.len(),
                many.iter()
                    .map(|r| r.label.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            Ok(false)
        }
    }
}

/// What xtask records next to each run's report (`meta.json`) and in `matrix.json`: how the
/// kernel was run, the scheduler features in force (as the guest read them back after its
/// writes; for the host, as read when debugfs is mounted), the figures or the reason. lockrace's
/// own report does not carry the features yet.
fn row_meta(
    row: &Row,
    args: &VmArgs,
    guest: Option<&sched::Guest>,
    image: Option<&Path>,
) -> serde_json::Value {
    use serde_json::json;
    let host = row.label == "host";
    let figures = row.result.as_ref().ok();
    let mut v = json!({
        "label": row.label,
        "kind": if host { "host" } else { "vm" },
        "release": figures.map(|f| f.release.clone()),
        "accel": if host { None } else { Some(accel(args)) },
        "cpus": if host { None } else { Some(args.cpus) },
        "mem_mib": if host { None } else { Some(args.mem) },
        "run_args": args.args,
        "sched_features": {
            "requested": if host { Vec::new() } else { args.sched_features.clone() },
            "in_force": row.sched,
        },
        "ok": row.result.is_ok(),
        "error": row.result.as_ref().err(),
        "whoops_per_handoff": figures.and_then(|f| f.whoops_per_handoff),
        "self_barge_share": figures.and_then(|f| f.self_barge_share),
        "wake_to_run_p50_ns": figures.and_then(|f| f.wake_to_run_p50_ns),
        "wake_to_run_p99_ns": figures.and_then(|f| f.wake_to_run_p99_ns),
        "dropped": figures.and_then(|f| f.dropped),
        "complete": figures.map(|f| f.complete),
        "report": figures.map(|_| "report.json"),
    });
    if let Some(g) = guest {
        v["sched_features"]["available"] = json!(g.available);
        v["sched_features"]["unavailable"] = json!(g.unavailable);
        v["console"] = json!("console.log");
    }
    if let Some(i) = image {
        v["kernel_image"] = json!(i.display().to_string());
    }
    v
}

fn write_json(path: &Path, doc: &serde_json::Value) {
    let text = serde_json::to_string_pretty(doc).unwrap_or_default() + "\n";
    if let Err(e) = std::fs::write(path, text) {
        eprintln!("xtask vm: cannot write {}: {e}", path.display());
    }
}

fn write_meta(dir: &Path, doc: &serde_json::Value) {
    write_json(&dir.join("meta.json"), doc);
}

/// Runs lockrace on this machine's kernel, as root, writing target/vm/host/report.json.
fn host_run(lockrace: &Path, run_args: &[String], dir: &Path) -> Result<Figures, String> {
    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut c =
        cmd::as_root(lockrace, &[], true, "tracing the host kernel").map_err(|e| e.to_string())?;
    c.arg("run").args(run_args).arg("--json").arg(&report);
    println!("vm host: {}", cmd::display(&c));
    let ran = cmd::exec(&mut c, Io::Inherit).map_err(|e| e.to_string())?;
    if !ran.status.success() {
        return Err(format!(
            "lockrace failed on the host ({})",
            cmd::describe(ran.status)
        ));
    }
    read_figures(&report)
}

fn read_figures(report: &Path) -> Result<Figures, String> {
    let text = std::fs::read_to_string(report)
        .map_err(|e| format!("cannot read {}: {e}", report.display()))?;
    let doc: serde_json::Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not JSON: {e}", report.display()))?;
    Ok(matrix::figures(&doc))
}

/// The kernel image of a target (fetching Debian's package when it is not cached).
fn kernel_image(t: &Target, cache: &Path) -> Result<PathBuf> {
    match &t.source {
        Source::Path(p) => Ok(p.clone()),
        Source::Debian(v) => debian_kernel(&t.label, v, cache),
    }
}

fn debian_kernel(label: &str, version: &str, cache: &Path) -> Result<PathBuf> {
    let release = debian_release(version)?;
    let vmlinuz = cache.join(format!("vmlinuz-{release}"));
    if vmlinuz.is_file() {
        return Ok(vmlinuz);
    }
    let pkg = format!("linux-image-{release}-unsigned");
    println!("vm {label}: fetching {pkg} (apt-get download, then dpkg -x)...");
    let work = cache.join(format!("{pkg}.tmp"));
    let _ = std::fs::remove_dir_all(&work);
    let fetched = fetch_deb(&pkg, &release, &work, &vmlinuz);
    // The package and its extracted tree are ~130 MB: keep only vmlinuz, even on failure.
    let _ = std::fs::remove_dir_all(&work);
    fetched.map(|()| vmlinuz)
}

/// Downloads `pkg` into `work`, extracts it, and copies its vmlinuz to `vmlinuz`.
fn fetch_deb(pkg: &str, release: &str, work: &Path, vmlinuz: &Path) -> Result<()> {
    std::fs::create_dir_all(work).with_context(|| format!("creating {}", work.display()))?;
    let download = || {
        let mut c = Command::new("apt-get");
        c.args(["download", pkg]).current_dir(work);
        cmd::run(&mut c, Io::Capture)
    };
    // A fresh machine (or a container image) may have no or stale package lists: refresh them
    // once and try again before giving up.
    download()
        .or_else(|_| {
            println!(
                "xtask vm: apt-get download {pkg} failed; running apt-get update and retrying"
            );
            cmd::run(Command::new("apt-get").args(["update", "-qq"]), Io::Capture)?;
            download()
        })
        .map_err(|e| {
            anyhow!(
                "cannot fetch {pkg}: {e} (hint: `apt-cache policy {pkg}` shows whether apt knows \
             it; `apt-get update` refreshes the lists)"
            )
        })?;
    let deb = std::fs::read_dir(work)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| anyhow!("apt-get download {pkg} left no .deb in {}", work.display()))?;
    let extracted = work.join("x");
    cmd::run(
        Command::new("dpkg").arg("-x").arg(&deb).arg(&extracted),
        Io::Capture,
    )?;
    let inside = extracted.join(format!("boot/vmlinuz-{release}"));
    let mut tmp = vmlinuz.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::copy(&inside, &tmp).with_context(|| format!("{pkg} has no {}", inside.display()))?;
    std::fs::rename(&tmp, vmlinuz)
        .with_context(|| format!("renaming {} to {}", tmp.display(), vmlinuz.display()))?;
    Ok(())
}

/// Writes target/vm/initramfs.cpio for lockrace `run_args` under `sched_features`.
fn build_initramfs(
    lockrace: &Path,
    vm_dir: &Path,
    run_args: &[String],
    sched_features: &[String],
) -> Result<PathBuf> {
    let stage = vm_dir.join("stage");
    std::fs::create_dir_all(&stage).with_context(|| format!("creating {}", stage.display()))?;
    // Debug info is most of the binary and of no use in the VM; without strip(1) copy it whole.
    let stripped = stage.join("lockrace");
    let _ = std::fs::remove_file(&stripped);
    let strip = Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&stripped)
        .arg(lockrace)
        .stdin(Stdio::null())
        .output();
    let lockrace_bytes = match strip {
        Ok(out) if out.status.success() => std::fs::read(&stripped),
        _ => std::fs::read(lockrace),
    }
    .with_context(|| format!("reading {}", lockrace.display()))?;
    let busybox = cmd::which("busybox").ok_or_else(|| {
        anyhow!(
            "busybox not found in PATH (hint: `cargo xtask setup --for vm` installs busybox-static)"
        )
    })?;
    let mut libs: Vec<(PathBuf, Vec<u8>)> = Vec::new();
    for bin in [lockrace, busybox.as_path()] {
        for lib in shared_objects(bin)? {
            if !libs.iter().any(|(p, _)| *p == lib) {
                let data =
                    std::fs::read(&lib).with_context(|| format!("reading {}", lib.display()))?;
                libs.push((lib, data));
            }
        }
    }
    let payload = initramfs::Payload {
        lockrace: lockrace_bytes,
        busybox: std::fs::read(&busybox)
            .with_context(|| format!("reading {}", busybox.display()))?,
        libs,
    };
    let path = vm_dir.join("initramfs.cpio");
    std::fs::write(&path, initramfs::build(&payload, run_args, sched_features))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The shared objects `ldd` lists for `bin` (none for a static binary).
fn shared_objects(bin: &Path) -> Result<Vec<PathBuf>> {
    let mut ldd = Command::new("ldd");
    ldd.arg(bin);
    let ran = cmd::exec(&mut ldd, Io::Capture)?;
    let text = format!("{}{}", ran.stdout, ran.stderr);
    if text.contains("not a dynamic executable") || text.contains("statically linked") {
        return Ok(Vec::new());
    }
    if !ran.status.success() {
        return Err(cmd::failure(&cmd::display(&ldd), ran.status, &ran.stderr));
    }
    initramfs::ldd_paths(&ran.stdout)
}

/// What the reader thread sends: one console line, or the end of QEMU's output.
enum Line {
    Text(String),
    Eof,
}

/// Boots one kernel and follows its console to the end; the report's figures or the reason.
fn boot(
    args: &VmArgs,
    t: &Target,
    kernel: &Path,
    initrd: &Path,
    dir: &Path,
) -> (Result<Figures, String>, sched::Guest) {
    let release = std::fs::read(kernel).ok().and_then(|b| bzimage_release(&b));
    let mut console = Console::new(&args.sched_features, release);
    let result = follow_boot(args, t, kernel, initrd, dir, &mut console);
    (result, console.sched().clone())
}

/// [`boot`], reading the console into `console`.
fn follow_boot(
    args: &VmArgs,
    t: &Target,
    kernel: &Path,
    initrd: &Path,
    dir: &Path,
    console: &mut Console,
) -> Result<Figures, String> {
    let label = &t.label;
    let report = dir.join("report.json");
    let log_path = dir.join("console.log");
    let _ = std::fs::remove_file(&report);
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut log = std::fs::File::create(&log_path)
        .map_err(|e| format!("cannot create {}: {e}", log_path.display()))?;
    let mut qemu = qemu_command(args, kernel, initrd);
    println!(
        "vm {label}: booting {} ({}, {} CPUs, {} MB, limit {} s)...",
        kernel.display(),
        accel(args),
        args.cpus,
        args.mem,
        args.timeout
    );
    let mut child = qemu
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!("cannot run qemu-system-x86_64: {e} (hint: `cargo xtask setup --for vm`)")
        })?;
    let start = Instant::now();
    let (tx, rx) = mpsc::channel();
    let mut stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match stdout.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).into_owned();
                    if tx.send(Line::Text(line)).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = tx.send(Line::Eof);
    });
    let mut stderr_pipe = child.stderr.take().expect("piped stderr");
    let stderr_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr_pipe.read_to_string(&mut s);
        s
    });

    let deadline = start + Duration::from_secs(args.timeout);
    let mut timed_out = false;
    let mut lockrace_started: Option<Instant> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(Line::Text(raw)) => {
                let _ = log.write_all(raw.replace('\r', "").as_bytes());
                match console.feed(&raw) {
                    Seen::Nothing => {}
                    Seen::Running { release, uptime } => {
                        lockrace_started = Some(Instant::now());
                        println!(
                            "vm {label}: kernel {release} up ({uptime} s of guest uptime), \
                             running {}...",
                            run_line(&args.args)
                        );
                    }
                    Seen::Output(line) => println!("    {line}"),
                    Seen::Exited(code) => println!(
                        "vm {label}: lockrace exited with status {code} after {:.1} s",
                        lockrace_started.map_or(0.0, |s| s.elapsed().as_secs_f64())
                    ),
                    Seen::NotRun(why) => println!("vm {label}: lockrace could not run: {why}"),
                    Seen::Panic(msg) => println!("vm {label}: kernel panic: {msg}"),
                    Seen::SchedInForce(now) => {
                        println!("vm {label}: scheduler features in force: {}", now.join(" "))
                    }
                }
            }
            Ok(Line::Eof) | Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                timed_out = true;
                // The QEMU we started, by its own handle (SIGKILL to that pid only).
                let _ = child.kill();
                break;
            }
        }
    }
    let status = child.wait().map_err(|e| format!("waiting for qemu: {e}"))?;
    let _ = reader.join();
    let stderr = stderr_reader.join().unwrap_or_default();
    let _ = log.write_all(stderr.as_bytes());
    let qemu_failure = (!status.success() && !timed_out).then(|| {
        let tail = cmd::stderr_tail(&stderr, 2);
        if tail.is_empty() {
            format!("qemu failed ({})", cmd::describe(status))
        } else {
            format!("qemu failed ({}): {tail}", cmd::describe(status))
        }
    });
    let elapsed = start.elapsed().as_secs_f64();
    let verdict = console
        .verdict(qemu_failure.as_deref(), timed_out.then_some(args.timeout))
        .and_then(|bytes| {
            std::fs::write(&report, &bytes)
                .map_err(|e| format!("cannot write {}: {e}", report.display()))
        });
    match verdict {
        Ok(()) => {
            println!(
                "vm {label}: powered off after {elapsed:.1} s; report {}, console {}",
                report.display(),
                log_path.display()
            );
            read_figures(&report)
        }
        Err(why) => {
            println!(
                "vm {label}: no result after {elapsed:.1} s: {why} (console: {})",
                log_path.display()
            );
            Err(format!("{why} (console: {})", log_path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        vm: VmArgs,
    }

    fn parse(argv: &[&str]) -> VmArgs {
        Cli::try_parse_from(std::iter::once("vm").chain(argv.iter().copied()))
            .unwrap()
            .vm
    }

    #[test]
    fn options_and_run_args_parse() {
        let a = parse(&[
            "--debian",
            "6.1.0-54",
            "--debian",
            "6.1.0-53",
            "--kernel",
            "/k/bzImage",
            "--cpus",
            "4",
            "--sched-features",
            "NO_WAKEUP_PREEMPTION,NO_RUN_TO_PARITY",
            "--",
            "--lock",
            "posix",
        ]);
        assert_eq!(a.debian, ["6.1.0-54", "6.1.0-53"]);
        assert_eq!(a.kernel, [PathBuf::from("/k/bzImage")]);
        assert_eq!((a.cpus, a.mem, a.timeout, a.kvm), (4, 512, 300, false));
        assert_eq!(
            a.sched_features,
            ["NO_WAKEUP_PREEMPTION", "NO_RUN_TO_PARITY"]
        );
        assert_eq!(a.args, ["--lock", "posix"]);
        assert_eq!(parse(&["--smp", "3"]).cpus, 3, "--smp stays an alias");
        assert_eq!(parse(&[]).cpus, 2);
        assert!(parse(&[]).sched_features.is_empty());
    }

    #[test]
    fn bad_cpus_and_feature_names_are_one_line_usage_errors() {
        for bad in ["0", "9", "65", "two", ""] {
            let e = Cli::try_parse_from(["vm", "--cpus", bad]).unwrap_err();
            assert_eq!(e.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            let first = e.to_string().lines().next().unwrap().to_string();
            assert!(
                first.contains("is not a vCPU count from 1 to 8 (hint:"),
                "{bad}: {first}"
            );
        }
        let e = Cli::try_parse_from(["vm", "--sched-features", "NO_WAKEUP_PREEMPTION,oops"])
            .unwrap_err()
            .to_string();
        let first = e.lines().next().unwrap();
        assert!(
            first.contains("\"oops\" is not a scheduler feature name (hint: upper case"),
            "{first}"
        );
        let twice = ["NO_X", "NO_X"].map(String::from);
        assert_eq!(
            check_sched_features(&twice).unwrap_err().to_string(),
            "--sched-features names NO_X twice"
        );
        let both = ["X", "NO_X"].map(String::from);
        assert_eq!(
            check_sched_features(&both).unwrap_err().to_string(),
            "--sched-features asks for both X and NO_X (hint: keep one)"
        );
        assert!(check_sched_features(&["NO_X".into(), "Y".into()]).is_ok());
    }

    #[test]
    fn features_go_into_the_label_and_cpus_into_qemu() {
        let a = parse(&[
            "--debian",
            "6.12.117+deb12",
            "--sched-features",
            "NO_WAKEUP_PREEMPTION,NO_RUN_TO_PARITY",
            "--cpus",
            "1",
        ]);
        let t = plan(&a, |_| None).unwrap();
        assert_eq!(
            t[0].label,
            "6.12.117+deb12.NO_WAKEUP_PREEMPTION.NO_RUN_TO_PARITY"
        );
        assert_eq!(t[0].source, Source::Debian("6.12.117+deb12".into()));
        let shown = cmd::display(&qemu_command(&a, Path::new("/k"), Path::new("/i")));
        assert!(shown.contains(" -smp 1 -m 512 "), "{shown}");
        assert_eq!(
            plan(&parse(&["--debian", "6.1.0-54"]), |_| None).unwrap()[0].label,
            "6.1.0-54"
        );
    }

    #[test]
    fn a_kernel_path_that_does_not_exist_is_an_error_naming_it() {
        let a = parse(&["--kernel", "/no/such/bzImage"]);
        let err = plan(&a, |_| None).unwrap_err().to_string();
        assert!(
            err.starts_with("kernel image /no/such/bzImage does not exist"),
            "{err}"
        );
        let err = plan(&parse(&[]), |_| None).unwrap_err().to_string();
        assert!(err.starts_with("nothing to run"), "{err}");
        let err = plan(&parse(&["--debian", "latest"]), |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a kernel ABI version"), "{err}");
    }

    #[test]
    fn labels_come_from_the_image_and_are_unique() {
        let me = std::env::current_exe().unwrap();
        let me = me.to_str().unwrap();
        let a = parse(&[
            "--debian", "6.1.0-54", "--kernel", me, "--kernel", me, "--host",
        ]);
        let t = plan(&a, |_| Some("6.10.0-rc1+ (x)".into())).unwrap();
        let labels: Vec<&str> = t.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["6.1.0-54", "6.10.0-rc1+__x_", "6.10.0-rc1+__x_-2"]);
        assert_eq!(t[0].source, Source::Debian("6.1.0-54".into()));
        assert_eq!(sanitize("../etc"), "_etc");
        assert_eq!(sanitize("host"), "host");
    }

    #[test]
    fn debian_versions_get_the_cloud_flavour() {
        assert_eq!(debian_release("6.1.0-54").unwrap(), "6.1.0-54-cloud-amd64");
        assert_eq!(debian_release("6.1.0-54-amd64").unwrap(), "6.1.0-54-amd64");
        assert!(debian_release("6.1.0-54; rm -rf /").is_err());
        assert!(debian_release("").is_err());
    }

    #[test]
    fn the_bzimage_header_names_the_release() {
        let mut img = vec![0u8; 0x600];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x20e..0x210].copy_from_slice(&0x300u16.to_le_bytes());
        let v = b"6.1.0-54-cloud-amd64 (debian-kernel@lists.debian.org) #1 SMP\0";
        img[0x500..0x500 + v.len()].copy_from_slice(v);
        assert_eq!(
            bzimage_release(&img).as_deref(),
            Some("6.1.0-54-cloud-amd64")
        );
        img[0x202] = b'X';
        assert_eq!(bzimage_release(&img), None);
        assert_eq!(bzimage_release(b"short"), None);
    }

    #[test]
    fn qemu_runs_tcg_unless_kvm_is_asked_for() {
        let a = parse(&["--debian", "6.1.0-54", "--append", "rdinit=/nonexistent"]);
        let shown = cmd::display(&qemu_command(&a, Path::new("/k"), Path::new("/i")));
        assert_eq!(
            shown,
            "qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 512 -nographic -no-reboot -nic \
             none -kernel /k -initrd /i -append 'console=ttyS0 panic=-1 quiet rdinit=/nonexistent'"
        );
        let k = parse(&["--kvm", "--host"]);
        let shown = cmd::display(&qemu_command(&k, Path::new("/k"), Path::new("/i")));
        assert!(shown.contains("-accel kvm -cpu host"), "{shown}");
        assert_eq!(kernel_cmdline(None), "console=ttyS0 panic=-1 quiet");
    }
}
