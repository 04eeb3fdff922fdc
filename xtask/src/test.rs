//! `cargo xtask test [--quick]`: setup, then every check CI runs, in order: rustfmt, clippy, the
//! unit and integration tests, the doc tests, and the root-only tests (the `root` test binary,
//! lockrace/tests/root/, serially, as root, with `LOCKRACE_REQUIRE_ROOT_TESTS=1` so they fail
//! instead of skipping when eBPF cannot load).
//!
//! Invariants: every step runs even when an earlier one failed (one run shows every problem);
//! the exit status is non-zero when any step failed; the final `xtask test: N passed, M failed`
//! line is the sum of the `test result:` lines the test harness printed; root-only tests never
//! run in the parallel phase.
use std::{path::PathBuf, process::ExitCode};

use anyhow::Result;
use serde_json::Value;

use crate::{
    cmd::{self, Io},
    setup, workspace,
};

/// The environment variable that tells root tests to fail rather than skip.
pub const REQUIRE_ROOT_ENV: &str = "LOCKRACE_REQUIRE_ROOT_TESTS";

/// Test counts summed over `test result:` lines.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub passed: u64,
    pub failed: u64,
    pub ignored: u64,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.passed += o.passed;
        self.failed += o.failed;
        self.ignored += o.ignored;
    }
}

/// Parses one libtest summary line:
/// `test result: ok. 3 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.01s`.
pub fn parse_result_line(line: &str) -> Option<Counts> {
    let (_, rest) = line.split_once("test result: ")?;
    let (_, rest) = rest.split_once(". ")?;
    let mut c = Counts::default();
    let mut seen = false;
    for part in rest.split(';') {
        let mut words = part.split_whitespace();
        let (Some(n), Some(what)) = (words.next(), words.next()) else {
            continue;
        };
        let Ok(n) = n.parse::<u64>() else { continue };
        match what {
            "passed" => c.passed = n,
            "failed" => c.failed = n,
            "ignored" => c.ignored = n,
            _ => continue,
        }
        seen = true;
    }
    seen.then_some(c)
}

/// The sum of every `test result:` line in `output`.
pub fn sum_results(output: &str) -> Counts {
    let mut total = Counts::default();
    for c in output.lines().filter_map(parse_result_line) {
        total += c;
    }
    total
}

/// The final line.
pub fn summary(total: Counts, failed_steps: &[&str]) -> String {
    let mut s = format!(
        "xtask test: {} passed, {} failed",
        total.passed, total.failed
    );
    if total.ignored > 0 {
        s.push_str(&format!(", {} ignored", total.ignored));
    }
    if !failed_steps.is_empty() {
        s.push_str(&format!("; failed steps: {}", failed_steps.join(", ")));
    }
    s
}

/// A test executable cargo built: target name, path, and the package directory to run it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestExe {
    pub name: String,
    pub path: PathBuf,
    pub package_dir: PathBuf,
}

/// The test executables among cargo's `--message-format=json` lines, for the targets `wanted`.
pub fn test_executables(json_lines: &str, wanted: &[String]) -> Vec<TestExe> {
    let mut out = Vec::new();
    for line in json_lines.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
            continue;
        }
        let (Some(name), Some(exe), Some(manifest)) = (
            v["target"]["name"].as_str(),
            v["executable"].as_str(),
            v["manifest_path"].as_str(),
        ) else {
            continue;
        };
        if wanted.iter().any(|w| w == name) {
            let manifest = PathBuf::from(manifest);
            out.push(TestExe {
                name: name.to_string(),
                path: exe.into(),
                package_dir: manifest.parent().map(PathBuf::from).unwrap_or_default(),
            });
        }
    }
    out
}

struct Run {
    total: Counts,
    failed_steps: Vec<&'static str>,
}

impl Run {
    fn announce(&self, what: &str) {
        println!("xtask test: {what}");
    }

    /// Runs one command whose stdout may hold test results; adds its counts, says whether it
    /// succeeded.
    fn exec(&mut self, name: &str, cmd: &mut std::process::Command, io: Io) -> bool {
        self.announce(&format!("{name}: {}", cmd::display(cmd)));
        match cmd::exec(cmd, io) {
            Ok(ran) => {
                self.total += sum_results(&ran.stdout);
                if !ran.status.success() {
                    println!("xtask test: {name} failed ({})", cmd::describe(ran.status));
                }
                ran.status.success()
            }
            Err(e) => {
                println!("xtask test: {name} failed: {e}");
                false
            }
        }
    }

    /// [`Run::exec`], recording the step as failed when it fails.
    fn step(&mut self, name: &'static str, cmd: &mut std::process::Command, io: Io) {
        if !self.exec(name, cmd, io) {
            self.failed_steps.push(name);
        }
    }
}

pub fn test(quick: bool) -> Result<ExitCode> {
    setup::ensure(setup::Profile::Test)?;
    let meta = workspace::metadata()?;
    let roots = workspace::root_tests()?;
    let mut run = Run {
        total: Counts::default(),
        failed_steps: Vec::new(),
    };

    run.step(
        "fmt",
        workspace::cargo().args(["fmt", "--all", "--check"]),
        Io::Inherit,
    );
    if quick {
        run.announce("clippy: skipped (--quick)");
    } else {
        // At the root, cargo uses default-members: everything but the bpf-target eBPF crate.
        run.step(
            "clippy",
            workspace::cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]),
            Io::Inherit,
        );
    }

    let mut tests = workspace::cargo();
    tests.args(["test", "--no-fail-fast", "--lib", "--bins"]);
    for (_, name) in meta.test_targets.iter().filter(|(_, n)| !roots.contains(n)) {
        tests.args(["--test", name]);
    }
    run.step("tests", &mut tests, Io::Tee);
    run.step(
        "doc tests",
        workspace::cargo().args(["test", "--no-fail-fast", "--doc"]),
        Io::Tee,
    );

    if quick {
        run.announce("root tests: skipped (--quick)");
    } else if roots.is_empty() {
        run.announce("root tests: none yet (no lockrace/tests/root/), skipped");
    } else {
        root_tests(&mut run, &roots);
    }

    println!("{}", summary(run.total, &run.failed_steps));
    Ok(if run.failed_steps.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Builds the root-only tests as the current user, then runs each binary as root, one test at a
/// time (root tests attach eBPF programs and time lock handoffs: they must not overlap).
fn root_tests(run: &mut Run, roots: &[String]) {
    let mut build = workspace::cargo();
    build.args([
        "test",
        "--no-run",
        "--message-format=json-render-diagnostics",
        "-p",
        "lockrace",
    ]);
    for r in roots {
        build.args(["--test", r]);
    }
    run.announce(&format!("root tests: {}", cmd::display(&build)));
    let exes = match cmd::exec(&mut build, Io::CaptureStdout) {
        Ok(ran) if ran.status.success() => test_executables(&ran.stdout, roots),
        Ok(ran) => {
            println!(
                "xtask test: building root tests failed ({})",
                cmd::describe(ran.status)
            );
            run.failed_steps.push("root tests");
            return;
        }
        Err(e) => {
            println!("xtask test: building root tests failed: {e}");
            run.failed_steps.push("root tests");
            return;
        }
    };
    let mut ok = true;
    let missing: Vec<&String> = roots
        .iter()
        .filter(|r| !exes.iter().any(|e| &e.name == *r))
        .collect();
    if !missing.is_empty() {
        println!(
            "xtask test: cargo built no test binary for {missing:?} (are they test targets of \
             lockrace?)"
        );
        ok = false;
    }
    for exe in &exes {
        let dir = exe.package_dir.to_string_lossy().into_owned();
        let envs = [
            (REQUIRE_ROOT_ENV, "1"),
            ("CARGO_MANIFEST_DIR", dir.as_str()),
            ("CARGO_PKG_NAME", "lockrace"),
        ];
        match cmd::as_root(&exe.path, &envs, true, "running the root-only tests") {
            Ok(mut c) => {
                c.arg("--test-threads=1").current_dir(&exe.package_dir);
                ok &= run.exec(&format!("root tests ({})", exe.name), &mut c, Io::Tee);
            }
            Err(e) => {
                println!("xtask test: root tests failed: {e}");
                ok = false;
                break;
            }
        }
    }
    if !ok {
        run.failed_steps.push("root tests");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_are_parsed() {
        assert_eq!(
            parse_result_line(
                "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; \
                 finished in 0.03s"
            ),
            Some(Counts {
                passed: 12,
                failed: 0,
                ignored: 1
            })
        );
        assert_eq!(
            parse_result_line("test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured"),
            Some(Counts {
                passed: 3,
                failed: 2,
                ignored: 0
            })
        );
        assert_eq!(parse_result_line("test foo ... ok"), None);
        assert_eq!(parse_result_line("test result: garbage"), None);
    }

    #[test]
    fn results_are_summed_over_the_whole_output() {
        let out = "\
running 2 tests
test a ... ok
test b ... FAILED
test result: FAILED. 1 passed; 1 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s

running 0 tests
test result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 0 filtered out; finished in 0.00s
   Doc-tests lockrace
test result: ok. 4 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.10s
";
        let total = sum_results(out);
        assert_eq!(
            total,
            Counts {
                passed: 5,
                failed: 1,
                ignored: 2
            }
        );
        assert_eq!(
            summary(total, &["tests"]),
            "xtask test: 5 passed, 1 failed, 2 ignored; failed steps: tests"
        );
        assert_eq!(
            summary(Counts::default(), &[]),
            "xtask test: 0 passed, 0 failed"
        );
    }

    #[test]
    fn test_executables_come_from_test_artifacts_only() {
        let json = r#"{"reason":"compiler-artifact","manifest_path":"/w/lockrace/Cargo.toml","target":{"name":"root_capture","kind":["test"]},"profile":{"test":true},"executable":"/w/target/debug/deps/root_capture-1"}
{"reason":"compiler-artifact","manifest_path":"/w/lockrace/Cargo.toml","target":{"name":"lockrace","kind":["bin"]},"profile":{"test":false},"executable":"/w/target/debug/lockrace"}
{"reason":"compiler-artifact","manifest_path":"/w/lockrace/Cargo.toml","target":{"name":"cli","kind":["test"]},"profile":{"test":true},"executable":"/w/target/debug/deps/cli-2"}
{"reason":"build-finished","success":true}
not json"#;
        assert_eq!(
            test_executables(json, &["root_capture".to_string()]),
            vec![TestExe {
                name: "root_capture".into(),
                path: "/w/target/debug/deps/root_capture-1".into(),
                package_dir: "/w/lockrace".into(),
            }]
        );
    }
}
