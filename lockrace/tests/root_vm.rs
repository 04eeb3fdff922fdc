//! `cargo xtask vm` end to end (root phase of `cargo xtask test`: it boots QEMU, which is CPU
//! heavy, so it runs serially with the other root tests). One full boot of Debian's 6.1.0-54
//! cloud kernel under TCG runs the traced posix/reopen experiment (about 10-40 s, plus a
//! one-time download of the kernel package into target/vm/cache/); a second runs it with
//! `--probes lean`; a third panics on purpose (a few seconds); a kernel path that does not exist
//! boots nothing. Results go to a temporary directory, never over a user's target/vm/.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use serde_json::Value;

/// One VM at a time, even under a parallel `cargo test`.
static BOOTS: Mutex<()> = Mutex::new(());

/// The cargo target directory this test was built in (`<target>/debug/deps/root_vm-*`).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors().nth(3).unwrap().to_path_buf()
}

/// `cargo xtask vm ARGS` with the lockrace binary of this build and results under `out`: the
/// xtask binary `cargo xtask test` runs from, else `cargo run -p xtask`.
fn xtask_vm(out: &Path, args: &[&str]) -> Output {
    let built = target_dir().join("debug/xtask");
    let mut c = if built.is_file() {
        Command::new(built)
    } else {
        let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.args(["run", "-q", "-p", "xtask", "--"]);
        c
    };
    c.arg("vm")
        .args(["--lockrace", env!("CARGO_BIN_EXE_lockrace")])
        .arg("--out")
        .arg(out)
        .args(args);
    let _one = BOOTS.lock().unwrap_or_else(|e| e.into_inner());
    c.output().expect("run xtask vm")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The last stderr line of a run that must exit 125.
fn skip_reason(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(125),
        "expected exit 125\nstdout:\n{}\nstderr:\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let err = text(&out.stderr);
    let last = err.lines().last().unwrap_or_default().to_string();
    assert!(last.starts_with("xtask vm: "), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    last
}

/// Boots Debian's 6.1.0-54 and runs `lockrace run --lock posix --share reopen RUN_ARGS` in
/// it; returns xtask's stdout and the run's report. Checks what every such boot must show: the
/// phases, the console log, the release, no drops, and kernel grants equal to each role's
/// acquisitions.
fn boot_6_1(run_args: &[&str]) -> (String, Value) {
    let (stdout, doc, _) = boot_6_1_with(&[], run_args);
    (stdout, doc)
}

/// [`boot_6_1`] with more `xtask vm` options (`vm_args`); also returns the console log.
fn boot_6_1_with(vm_args: &[&str], run_args: &[&str]) -> (String, Value, String) {
    let out_dir = tempfile::tempdir().unwrap();
    let mut args = vec!["--debian", "6.1.0-54"];
    args.extend_from_slice(vm_args);
    args.extend_from_slice(&["--", "--lock", "posix", "--share", "reopen"]);
    args.extend_from_slice(run_args);
    let out = xtask_vm(out_dir.path(), &args);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "xtask vm failed ({:?})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    for phase in [
        "vm 6.1.0-54: booting",
        "running lockrace run",
        "powered off",
        "Kernel matrix",
    ] {
        assert!(stdout.contains(phase), "{phase:?} not shown:\n{stdout}");
    }
    let dir = out_dir.path().join("6.1.0-54");
    let console = std::fs::read_to_string(dir.join("console.log")).unwrap();
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(doc["kernel"]["release"], "6.1.0-54-cloud-amd64");
    assert_eq!(doc["capture"]["dropped"], 0, "{}", doc["capture"]);
    assert_eq!(doc["workload"]["lock"], "posix");
    let roles = doc["whoops"]["roles"].as_array().unwrap();
    assert_eq!(roles.len(), 2);
    for r in roles {
        assert_eq!(
            r["grants"], r["acquisitions"],
            "kernel grants != acquisitions for {r}"
        );
    }
    (stdout, doc, console)
}

#[test]
fn debian_6_1_runs_the_traced_posix_reopen_experiment_under_tcg() {
    let (_, doc) = boot_6_1(&["--iterations", "500"]);
    assert_eq!(
        doc["kernel"]["lock_field_names"], "fl_type (5.0-6.8 names)",
        "6.1 names its filelock fields fl_type, fl_blocker, ..."
    );
    for r in doc["whoops"]["roles"].as_array().unwrap() {
        assert!(r["acquisitions"].as_u64().unwrap() >= 500, "{r}");
    }
}

/// The lean probe set is a different set of programs (and the lock programs take another
/// branch): 6.1's verifier is stricter than the host's, so it gets its own boot.
#[test]
fn debian_6_1_runs_the_lean_probe_set_under_tcg() {
    let (_, doc) = boot_6_1(&["--probes", "lean", "--iterations", "300"]);
    for r in doc["whoops"]["roles"].as_array().unwrap() {
        assert_eq!(
            r["whoops"], r["explained"],
            "a whoops left unexplained: {r}"
        );
    }
}

/// The fast probe set (BTF-typed tracepoints, `LOCKRACE_PROBES=fast` reaching the guest's
/// init through the kernel command line): 6.1 has BTF and tp_btf, so it must load as itself
/// (no fallback notice) and give the same cross-check as the classic programs.
#[test]
fn debian_6_1_runs_the_fast_probe_set_under_tcg() {
    let (_, doc, console) = boot_6_1_with(
        &["--append", "LOCKRACE_PROBES=fast"],
        &["--iterations", "300"],
    );
    assert!(
        console.contains("LOCKRACE_PROBES=fast overrides the probe set"),
        "the switch did not reach lockrace:\n{console}"
    );
    assert!(
        !console.contains("the fast probes cannot run here"),
        "6.1 refused the fast set:\n{console}"
    );
    assert_eq!(doc["analysis"]["syscall_events"], 0, "{}", doc["analysis"]);
    assert!(doc["analysis"]["sched_events"].as_u64().unwrap() > 0);
    for r in doc["whoops"]["roles"].as_array().unwrap() {
        assert_eq!(
            r["whoops"], r["explained"],
            "a whoops left unexplained: {r}"
        );
    }
}

#[test]
fn a_kernel_path_that_does_not_exist_exits_125_naming_it() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = xtask_vm(out_dir.path(), &["--kernel", "/nonexistent/bzImage"]);
    let reason = skip_reason(&out);
    assert!(
        reason.starts_with("xtask vm: kernel image /nonexistent/bzImage does not exist"),
        "{reason}"
    );
}

#[test]
fn a_kernel_that_panics_exits_125_with_the_panic_message() {
    let out_dir = tempfile::tempdir().unwrap();
    // With no /init to run from the initramfs, the kernel looks for a root device and panics.
    let out = xtask_vm(
        out_dir.path(),
        &[
            "--debian",
            "6.1.0-54",
            "--append",
            "rdinit=/nonexistent",
            "--timeout",
            "120",
            "--",
            "--iterations",
            "5",
        ],
    );
    let reason = skip_reason(&out);
    assert!(
        reason.starts_with("xtask vm: 6.1.0-54: kernel panic: VFS: Unable to mount root fs"),
        "{reason}"
    );
    assert!(!out_dir.path().join("6.1.0-54/report.json").exists());
}
