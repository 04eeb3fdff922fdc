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
    // The full set: every classic program, syscall brackets included.
    let (_, doc) = boot_6_1(&["--probes", "full", "--iterations", "500"]);
    assert_eq!(doc["capture"]["probes"], "full", "{}", doc["capture"]);
    assert!(doc["analysis"]["syscall_events"].as_u64().unwrap() > 0);
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

/// The default probe set, fast (BTF-typed tracepoints): 6.1 has BTF and tp_btf, so it must
/// load as itself (no fallback notice) and give the same cross-check as the classic programs.
#[test]
fn debian_6_1_runs_the_fast_probe_set_under_tcg() {
    let (_, doc, console) = boot_6_1_with(&[], &["--iterations", "300"]);
    assert_eq!(doc["capture"]["probes"], "fast", "{}", doc["capture"]);
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

/// Debian's 6.12 (EEVDF) cloud kernel, whose scheduler features the guest may write
/// (CONFIG_SCHED_DEBUG, CONFIG_DEBUG_FS, no lockdown).
const DEBIAN_6_12: &str = "6.12.117+deb12";

/// `cargo xtask vm --debian 6.12.117+deb12 --sched-features NO_WAKEUP_PREEMPTION`: the guest
/// turns wakeup preemption off before the run, and xtask records the features in force (read
/// back from the guest's /sys/kernel/debug/sched/features) in LABEL/meta.json, matrix.json and
/// the table. WAKEUP_PREEMPTION is on as 6.12 boots, so the recorded NO_ is the write's doing.
#[test]
fn debian_6_12_runs_with_wakeup_preemption_turned_off_and_records_it() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = xtask_vm(
        out_dir.path(),
        &[
            "--debian",
            DEBIAN_6_12,
            "--sched-features",
            "NO_WAKEUP_PREEMPTION",
            "--cpus",
            "2",
            "--",
            "--lock",
            "posix",
            "--share",
            "reopen",
            "--iterations",
            "200",
        ],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "xtask vm failed ({:?})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    let label = format!("{DEBIAN_6_12}.NO_WAKEUP_PREEMPTION");
    let shown = stdout
        .lines()
        .find(|l| l.starts_with(&format!("vm {label}: scheduler features in force: ")))
        .unwrap_or_else(|| panic!("no features line:\n{stdout}"));
    assert!(
        shown
            .split_whitespace()
            .any(|w| w == "NO_WAKEUP_PREEMPTION"),
        "{shown}"
    );
    let dir = out_dir.path().join(&label);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["kernel"]["release"], "6.12.117+deb12-cloud-amd64");
    assert_eq!(report["capture"]["dropped"], 0, "{}", report["capture"]);
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("meta.json")).unwrap()).unwrap();
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap_or_else(|| panic!("not a list: {v}"))
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let sched = &meta["sched_features"];
    assert_eq!(names(&sched["requested"]), ["NO_WAKEUP_PREEMPTION"]);
    let before = names(&sched["available"]);
    let in_force = names(&sched["in_force"]);
    assert!(
        before.contains(&"WAKEUP_PREEMPTION".to_string()),
        "{before:?}"
    );
    assert!(
        in_force.contains(&"NO_WAKEUP_PREEMPTION".to_string()),
        "{in_force:?}"
    );
    assert!(
        !in_force.contains(&"WAKEUP_PREEMPTION".to_string()),
        "{in_force:?}"
    );
    // Only the requested feature changed.
    let changed: Vec<(&String, &String)> = before
        .iter()
        .zip(&in_force)
        .filter(|(a, b)| a != b)
        .collect();
    assert_eq!(before.len(), in_force.len());
    assert_eq!(changed.len(), 1, "{changed:?}");
    assert_eq!(
        (meta["cpus"].as_u64(), meta["ok"].as_bool()),
        (Some(2), Some(true))
    );
    let matrix: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("matrix.json")).unwrap())
            .unwrap();
    assert_eq!(matrix["rows"][0]["label"], label.as_str());
    assert_eq!(
        matrix["rows"][0]["sched_features"]["in_force"],
        sched["in_force"]
    );
    let table_row = stdout
        .lines()
        .find(|l| l.starts_with(&format!("  {label} ")))
        .unwrap_or_else(|| panic!("no table row:\n{stdout}"));
    assert!(table_row.ends_with("  NO_WAKEUP_PREEMPTION"), "{table_row}");
}

/// A feature the guest kernel does not have: the guest says so and powers off before lockrace
/// runs; xtask exits 125 with one line naming it and the features that kernel has.
#[test]
fn an_unknown_scheduler_feature_is_one_line_naming_the_kernels_features() {
    let out_dir = tempfile::tempdir().unwrap();
    let out = xtask_vm(
        out_dir.path(),
        &[
            "--debian",
            DEBIAN_6_12,
            "--sched-features",
            "NO_WAKEUP_PREEMPTION,NO_SUCH_FEATURE",
            "--",
            "--iterations",
            "5",
        ],
    );
    let reason = skip_reason(&out);
    let label = format!("{DEBIAN_6_12}.NO_WAKEUP_PREEMPTION.NO_SUCH_FEATURE");
    assert!(
        reason.starts_with(&format!(
            "xtask vm: {label}: unknown scheduler feature NO_SUCH_FEATURE in \
             6.12.117+deb12-cloud-amd64; this kernel has: "
        )),
        "{reason}"
    );
    let listed: Vec<&str> = reason
        .split("this kernel has: ")
        .nth(1)
        .unwrap()
        .split(" (hint")
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    for f in [
        "WAKEUP_PREEMPTION",
        "RUN_TO_PARITY",
        "PLACE_LAG",
        "DELAY_DEQUEUE",
    ] {
        assert!(listed.contains(&f), "{f} not in {listed:?}");
    }
    let stdout = text(&out.stdout);
    assert!(
        !stdout.contains("running lockrace run"),
        "lockrace ran:\n{stdout}"
    );
    assert!(!out_dir.path().join(&label).join("report.json").exists());
    let meta: Value = serde_json::from_str(
        &std::fs::read_to_string(out_dir.path().join(&label).join("meta.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(meta["ok"], false);
    assert!(
        meta["error"]
            .as_str()
            .unwrap()
            .starts_with("unknown scheduler feature")
    );
}
