//! The remedies and the seed's other claims, end to end without root: `--sync eventfd|futex`
//! hold mutual exclusion with no whoops, a dead peer ends the survivor promptly, the eventfd
//! handshake accepts exactly memfd + 2 eventfds, `--scenario upgrade|mixed` run and show what
//! each role saw, and `compare-sync` prints its 8 rows and valid JSON.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use crate::workload_support::*;
use lockrace::report::model::Document;
use lockrace::report::model::WorkloadReport;
use serde_json::Value;

/// `lockrace run --no-trace ARGS --json F`: must succeed; returns the document and stdout.
fn run(args: &[&str], limit: Duration) -> (Document, String) {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("run.json");
    let out = run_within(
        lockrace()
            .args(["run", "--no-trace"])
            .args(args)
            .arg("--json")
            .arg(&json),
        limit,
        &format!("run {args:?}"),
    );
    assert!(
        out.status.success(),
        "run {args:?}: {:?}\n{}\n{}",
        out.status,
        text(&out.stderr),
        text(&out.stdout)
    );
    let doc = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    (doc, text(&out.stdout))
}

#[test]
fn eventfd_and_futex_hand_over_100k_turns_without_whoops_or_overlaps() {
    for sync in ["eventfd", "futex"] {
        let _one = serial();
        let t0 = Instant::now();
        let (doc, stdout) = run(
            &["--sync", sync, "--iterations", "100000"],
            Duration::from_secs(120),
        );
        assert!(
            stdout.starts_with(&format!(
                "lockrace run: {sync} sync, 100000 iterations, untraced"
            )),
            "{stdout}"
        );
        let w = doc.workload.unwrap();
        assert_eq!(w.sync.as_deref(), Some(sync));
        assert_eq!((w.lock.as_str(), w.share.as_str()), ("none", "none"));
        assert_eq!(w.roles.len(), 2);
        for r in &w.roles {
            assert_eq!(r.iterations, 100_000, "{sync} {}", r.role);
            assert_eq!(r.whoops, 0, "{sync} {}: a side woke out of turn", r.role);
            assert_eq!(
                r.overlaps, 0,
                "{sync} {}: both sides inside at once",
                r.role
            );
            assert_eq!(r.acquisitions, 100_000);
            let lat = r
                .handoff_latency
                .as_ref()
                .expect("handoff latency reported");
            assert!(lat.samples >= 99_999, "{lat:?}");
            assert!(lat.p50_ns.unwrap() > 0 && lat.p50_ns <= lat.p99_ns);
        }
        eprintln!("{sync}: 200,000 handoffs in {:?}", t0.elapsed());
    }
}

fn role(kind: &str, sock: &Path, args: &[&str]) -> Child {
    lockrace()
        .arg(kind)
        .arg("--socket")
        .arg(sock)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn a_survivor_gives_up_within_5_s_when_its_peer_is_killed() {
    for sync in ["eventfd", "futex"] {
        for victim in ["client", "server"] {
            let _one = serial();
            let dir = tempfile::tempdir().unwrap();
            let sock = dir.path().join("s");
            // A long run and a long stall timeout: only the peer-death check can end it soon.
            let args = [
                "--sync",
                sync,
                "--iterations",
                "100000000",
                "--stall-timeout",
                "60",
            ];
            let server = role("server", &sock, &args);
            wait_for_path(&sock, Duration::from_secs(10));
            let client = role("client", &sock, &args);
            // Both sides are in their loop once each has mapped the memfd.
            for pid in [server.id(), client.id()] {
                let deadline = Instant::now() + Duration::from_secs(20);
                while !std::fs::read_to_string(format!("/proc/{pid}/maps"))
                    .is_ok_and(|m| m.contains("memfd:lockrace"))
                {
                    assert!(
                        Instant::now() < deadline,
                        "pid {pid} never mapped the memfd"
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            std::thread::sleep(Duration::from_millis(100));
            let (mut dead, survivor) = if victim == "client" {
                (client, server)
            } else {
                (server, client)
            };
            dead.kill().unwrap();
            let t0 = Instant::now();
            let (st, _, err) = output_within(survivor, Duration::from_secs(5), "the survivor");
            let _ = dead.wait();
            assert!(
                !st.success(),
                "{sync}: the survivor of a dead {victim} succeeded"
            );
            assert!(
                err.contains(&format!("the {victim} (pid"))
                    && err.contains("exited while the")
                    && err.contains("giving up"),
                "{sync}, {victim} killed: {err}"
            );
            assert!(t0.elapsed() < Duration::from_secs(5));
        }
    }
}

#[test]
fn run_names_a_killed_role_under_eventfd_and_futex() {
    // Through `run` the parent sees the death and stops the other side at once.
    for sync in ["eventfd", "futex"] {
        let _one = serial();
        let child = lockrace()
            .args(["run", "--no-trace", "--sync", sync])
            .args(["--iterations", "100000000"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        // Find the client among our child's children, then kill it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = loop {
            let kids = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            let client = kids
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .find(|p| {
                    std::fs::read(format!("/proc/{p}/cmdline"))
                        .is_ok_and(|c| c.split(|b| *b == 0).nth(1) == Some(b"client"))
                });
            if let Some(c) = client {
                break c;
            }
            assert!(Instant::now() < deadline, "the roles never started");
            std::thread::sleep(Duration::from_millis(20));
        };
        std::thread::sleep(Duration::from_millis(200));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(client as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        let (st, _, err) = output_within(child, Duration::from_secs(5), "run");
        assert!(!st.success());
        assert!(
            err.contains(&format!("the client (pid {client}) was killed by SIGKILL")),
            "{err}"
        );
    }
}

/// Send one datagram carrying `fds` to a `server ARGS` and return its stderr (it must fail).
fn refused(server_args: &[&str], fds: &[std::os::fd::RawFd]) -> String {
    use nix::sys::socket::{ControlMessage, MsgFlags, UnixAddr, sendmsg};
    use std::os::fd::AsRawFd;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let srv = role("server", &sock, server_args);
    wait_for_path(&sock, Duration::from_secs(10));
    let tx = std::os::unix::net::UnixDatagram::unbound().unwrap();
    sendmsg(
        tx.as_raw_fd(),
        &[std::io::IoSlice::new(b"lockrace memfd")],
        &[ControlMessage::ScmRights(fds)],
        MsgFlags::empty(),
        Some(&UnixAddr::new(&sock).unwrap()),
    )
    .unwrap();
    let (st, _, err) = output_within(srv, Duration::from_secs(10), "server");
    assert!(!st.success(), "the server accepted {fds:?}: {err}");
    err
}

fn sealed_memfd() -> std::os::fd::OwnedFd {
    lockrace::workload::handshake::create_memfd().unwrap()
}

#[test]
fn the_eventfd_handshake_accepts_exactly_memfd_and_two_eventfds() {
    use lockrace::workload::eventfd;
    use std::os::fd::AsRawFd;
    let ev = eventfd::create().unwrap();
    let ev2 = eventfd::create().unwrap();
    let m = sealed_memfd();
    let (pipe_r, _pipe_w) = nix::unistd::pipe().unwrap();
    let eventfd_server = ["--sync", "eventfd", "--stall-timeout", "5"];
    for (fds, want) in [
        (
            vec![m.as_raw_fd()],
            "carried 1 file descriptor, expected the memfd and 2 eventfds",
        ),
        (
            vec![m.as_raw_fd(), ev.as_raw_fd()],
            "carried 2 file descriptors, expected the memfd and 2 eventfds",
        ),
        (
            vec![
                m.as_raw_fd(),
                ev.as_raw_fd(),
                ev2.as_raw_fd(),
                ev.as_raw_fd(),
            ],
            "carried 4 file descriptors",
        ),
        (
            vec![m.as_raw_fd(), pipe_r.as_raw_fd(), ev.as_raw_fd()],
            "descriptor 2 of the datagram is a pipe, not an eventfd",
        ),
        (
            vec![ev.as_raw_fd(), ev2.as_raw_fd(), m.as_raw_fd()],
            "not a memfd",
        ),
    ] {
        let err = refused(&eventfd_server, &fds);
        assert!(
            err.starts_with("lockrace: ") && err.contains(want),
            "{want}: {err}"
        );
    }
    // The default server still wants the memfd alone.
    let err = refused(
        &["--stall-timeout", "5"],
        &[m.as_raw_fd(), ev.as_raw_fd(), ev2.as_raw_fd()],
    );
    assert!(
        err.contains("carried 3 file descriptors, expected exactly one"),
        "{err}"
    );
}

#[test]
fn server_and_client_under_eventfd_print_one_line_each() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("s");
    let args = ["--sync", "eventfd", "--iterations", "500"];
    let server = role("server", &sock, &args);
    wait_for_path(&sock, Duration::from_secs(10));
    let client = role("client", &sock, &args);
    let (cs, cout, cerr) = output_within(client, Duration::from_secs(30), "client");
    let (ss, sout, serr) = output_within(server, Duration::from_secs(30), "server");
    assert!(cs.success() && ss.success(), "{serr}\n{cerr}");
    assert!(
        sout.starts_with("server: 500 turns, 0 whoops (0.00 per turn), 0 overlaps, ")
            && sout.trim_end().ends_with("(eventfd sync)"),
        "{sout}"
    );
    assert!(cout.starts_with("client: 500 turns, 0 whoops"), "{cout}");
}

/// (role, rounds, stolen, refused) per role.
fn upgrade_counts(w: &WorkloadReport) -> Vec<(String, u64, u64, u64)> {
    w.roles
        .iter()
        .map(|r| {
            let u = r.upgrade.as_ref().expect("upgrade counts");
            (r.role.clone(), u.rounds, u.stolen, u.refused)
        })
        .collect()
}

/// The scenario's own JSON document.
fn scenario(args: &[&str]) -> (Value, String) {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("s.json");
    let out = run_within(
        lockrace()
            .args(["run", "--no-trace"])
            .args(args)
            .arg("--json")
            .arg(&json),
        Duration::from_secs(120),
        &format!("run {args:?}"),
    );
    assert!(
        out.status.success(),
        "{args:?}: {}\n{}",
        text(&out.stderr),
        text(&out.stdout)
    );
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["report"], "lockrace-scenario");
    assert!(v["kernel"].is_null(), "untraced: no kernel evidence");
    (v, text(&out.stdout))
}

#[test]
fn upgrade_scenario_flock_is_stolen_and_fcntl_is_not() {
    for lock in ["flock", "posix", "ofd"] {
        let (v, stdout) = scenario(&[
            "--scenario",
            "upgrade",
            "--lock",
            lock,
            "--iterations",
            "200",
        ]);
        assert!(
            stdout.contains(&format!("upgrade scenario, {lock} lock")),
            "{stdout}"
        );
        let w: WorkloadReport = serde_json::from_value(v["workload"].clone()).unwrap();
        let counts = upgrade_counts(&w);
        assert_eq!(counts.len(), 2);
        // Not a race: the client's non-blocking upgrade is granted in every flock round (the
        // server's pending upgrade already dropped its shared lock) and refused in every fcntl
        // round (the pending upgrade kept its read lock).
        for (role, rounds, stolen, _) in &counts {
            assert_eq!(*rounds, 200, "{lock} {role}");
            if lock == "flock" {
                assert_eq!(*stolen, 200, "flock {role}: an upgrade was not stolen");
            } else {
                assert_eq!(*stolen, 0, "{lock} {role}: an fcntl upgrade lost its lock");
            }
        }
        let client_refused = counts[1].3;
        assert_eq!(
            client_refused,
            if lock == "flock" { 0 } else { 200 },
            "{lock}: {counts:?}"
        );
        // Both roles agree on every round.
        assert_eq!(counts[0].2, counts[1].2, "{lock}: {counts:?}");
        assert_eq!(w.scenario.as_deref(), Some("upgrade"));
        assert!(
            w.roles.iter().all(|r| r.overlaps == 0),
            "{lock}: exclusive locks overlapped"
        );
    }
}

#[test]
fn mixed_scenario_flock_and_fcntl_do_not_exclude_each_other() {
    let (v, stdout) = scenario(&[
        "--scenario",
        "mixed",
        "--lock",
        "posix",
        "--iterations",
        "2000",
    ]);
    assert!(
        stdout.contains("mixed scenario, flock vs posix"),
        "{stdout}"
    );
    assert!(stdout.contains("do not see each other"), "{stdout}");
    let roles = v["workload"]["roles"].as_array().unwrap();
    let overlaps: u64 = roles.iter().map(|r| r["overlaps"].as_u64().unwrap()).sum();
    assert!(
        overlaps > 0,
        "flock vs posix excluded each other: {roles:?}"
    );
    assert_eq!(v["workload"]["scenario"], "mixed");
    assert_eq!(v["workload"]["share"], "reopen");
}

#[test]
fn bad_combinations_are_refused_with_a_hint() {
    for (args, want) in [
        (
            &["--scenario", "upgrade", "--lock", "lockf"][..],
            "lockf has no shared lock",
        ),
        (
            &["--scenario", "mixed", "--lock", "flock"][..],
            "pairs the server's flock",
        ),
        (
            &["--scenario", "mixed", "--sync", "futex"][..],
            "cannot use --sync futex",
        ),
    ] {
        let out = run_within(
            lockrace().args(["run", "--no-trace"]).args(args),
            Duration::from_secs(10),
            "run",
        );
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.starts_with("lockrace: ") && err.contains(want) && err.contains("hint:"),
            "{err}"
        );
    }
    let out = run_within(
        lockrace().args(["run", "--sync", "futex", "--events", "/nonexistent/e.jsonl"]),
        Duration::from_secs(10),
        "run",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no lock events"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn compare_sync_prints_eight_rows_and_valid_json() {
    let _one = serial();
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("cs.json");
    let out = run_within(
        lockrace()
            .args([
                "compare-sync",
                "--iterations",
                "300",
                "--repeat",
                "1",
                "--no-trace",
            ])
            .arg("--json")
            .arg(&json),
        Duration::from_secs(180),
        "compare-sync",
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let names = [
        "posix reopen",
        "lockf reopen",
        "ofd reopen",
        "ofd same",
        "flock reopen",
        "flock same",
        "eventfd",
        "futex",
    ];
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 10, "title, header, 8 rows:\n{stdout}");
    for (line, name) in lines[2..].iter().zip(names) {
        assert!(line.trim_start().starts_with(name), "{name}: {line}");
    }
    assert!(
        !stdout.contains("self-barge"),
        "--no-trace: no traced columns"
    );
    // Not a TTY: no progress lines on stderr.
    assert!(!text(&out.stderr).contains('\r'), "{}", text(&out.stderr));
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(v["report"], "lockrace-compare-sync");
    assert_eq!(
        (v["iterations"].as_u64(), v["repeat"].as_u64()),
        (Some(300), Some(1))
    );
    let rows = v["rows"].as_array().unwrap();
    let got: Vec<&str> = rows
        .iter()
        .map(|r| r["primitive"].as_str().unwrap())
        .collect();
    assert_eq!(got, names);
    for r in rows {
        assert_eq!(r["runs"].as_array().unwrap().len(), 1);
        assert!(r["handoffs_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["p50_ns"].as_u64().is_some(), "{r}");
    }
    for r in &rows[6..] {
        assert_eq!(r["mutual_exclusion"], true, "{r}");
        assert_eq!(r["whoops_per_handoff"].as_f64(), Some(0.0), "{r}");
        assert!(r["lock"].is_null());
    }
    // Posix on private descriptions excludes.
    assert_eq!(rows[0]["mutual_exclusion"], true);
    // The best row that excludes has a rate ratio of exactly 1.
    let best = rows
        .iter()
        .filter(|r| r["mutual_exclusion"] == true)
        .filter_map(|r| r["handoffs_per_s_vs_best"].as_f64())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(best, 1.0);
}
