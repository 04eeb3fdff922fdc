//! `cargo xtask setup --dry-run` as a user runs it: the real binary, this machine's dpkg,
//! rustup and mounts. It prints the plan and changes nothing; the plan for `run` never names
//! QEMU, Chromium or the test programs, and no plan removes a package. A second view of the same
//! machine with an empty dpkg database (`DPKG_ADMINDIR`, which dpkg-query honours) is what a
//! fresh Debian machine looks like to setup: every package missing, so the exact apt command
//! is printed and checked.
use std::process::{Command, Output};

fn xtask(args: &[&str], dpkg_admindir: Option<&std::path::Path>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.args(args);
    if let Some(d) = dpkg_admindir {
        c.env("DPKG_ADMINDIR", d);
    }
    c.output().expect("run xtask")
}

fn stdout_ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "xtask failed ({:?})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// An empty dpkg database: no package is installed.
fn empty_dpkg() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("xtask-setup-cli-{}", std::process::id()));
    std::fs::create_dir_all(d.join("info")).unwrap();
    std::fs::create_dir_all(d.join("updates")).unwrap();
    std::fs::write(d.join("status"), "").unwrap();
    d
}

const NOT_FOR_RUN: [&str; 7] = [
    "qemu",
    "chromium",
    "busybox",
    "sqlite3",
    "stress-ng",
    "cpio",
    "bpftrace",
];

/// No command of the plan (its indented lines, notes in parentheses aside) removes a package;
/// every apt-get install refuses removals.
fn check_no_removal(plan: &str) {
    let commands = plan
        .lines()
        .filter(|l| l.starts_with("    ") && !l.trim_start().starts_with('('));
    for line in commands {
        let words: Vec<&str> = line.split_whitespace().collect();
        for bad in ["remove", "purge", "autoremove", "uninstall"] {
            assert!(!words.contains(&bad), "{bad} in {line:?}");
        }
        if let Some(i) = words.iter().position(|w| *w == "apt-get")
            && words.get(i + 1) == Some(&"install")
        {
            assert!(words.contains(&"--no-remove"), "{line}");
        }
    }
}

#[cfg(unix)]
#[test]
fn the_default_run_plan_of_this_machine_names_neither_qemu_nor_chromium() {
    let plan = stdout_ok(&xtask(&["setup", "--for", "run", "--dry-run"], None));
    assert!(
        plan.starts_with("setup --for run (dry run: nothing is installed or changed)\n"),
        "{plan}"
    );
    // `setup` alone is the run plan.
    assert_eq!(stdout_ok(&xtask(&["setup", "--dry-run"], None)), plan);
    for bad in NOT_FOR_RUN {
        assert!(!plan.contains(bad), "{bad} in the run plan:\n{plan}");
    }
    for step in ["apt packages (", "eBPF toolchain", "bpf-linker", "tracefs"] {
        assert!(plan.contains(&format!("setup: {step}")), "{step}:\n{plan}");
    }
    check_no_removal(&plan);
}

#[cfg(unix)]
#[test]
fn on_a_machine_without_packages_the_run_plan_installs_llvm_only_and_never_removes() {
    let db = empty_dpkg();
    if Command::new("dpkg-query")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("no dpkg-query: not Debian, nothing to check");
        return;
    }
    let plan = stdout_ok(&xtask(&["setup", "--for", "run", "--dry-run"], Some(&db)));
    let install: Vec<&str> = plan
        .lines()
        .filter(|l| l.contains("apt-get install -y"))
        .collect();
    assert_eq!(install.len(), 1, "{plan}");
    assert!(
        install[0].ends_with(
            "apt-get install -y --no-install-recommends --no-remove llvm-22-dev libpolly-22-dev \
             libzstd-dev zlib1g-dev g++"
        ),
        "{plan}"
    );
    assert!(
        plan.contains("stops if apt would remove a package"),
        "{plan}"
    );
    for bad in NOT_FOR_RUN {
        assert!(!plan.contains(bad), "{bad} in the run plan:\n{plan}");
    }
    check_no_removal(&plan);
    // The same machine for `test`: QEMU and Chromium do appear (the check above can fail).
    let test = stdout_ok(&xtask(&["setup", "--for", "test", "--dry-run"], Some(&db)));
    for want in [
        "qemu-system-x86",
        "chromium",
        "busybox-static",
        "sqlite3",
        "stress-ng",
    ] {
        assert!(test.contains(want), "{want} not in the test plan:\n{test}");
    }
    check_no_removal(&test);
    let _ = std::fs::remove_dir_all(&db);
}
