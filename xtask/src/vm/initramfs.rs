//! The VM's initramfs: a newc cpio archive (written here, no external tool) holding lockrace,
//! the shared libraries `ldd` lists for it and the dynamic loader, busybox, /dev/console, and an
//! /init script that applies the requested scheduler features, runs `lockrace run ARGS --json
//! /report.json` and prints the report framed and checksummed on the serial console.
//!
//! Invariants: /init never exits (PID 1 exiting panics the kernel): it powers off with
//! `poweroff -f` and waits; lockrace's arguments reach it exactly (each one single-quoted);
//! every marker line /init prints starts with [`super::console::MARK`].
use std::path::{Path, PathBuf};

use anyhow::{Result, bail};

/// A newc ("070701") cpio archive being written in memory.
#[derive(Debug, Default)]
pub struct Cpio {
    out: Vec<u8>,
    next_ino: u32,
    dirs: Vec<String>,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        self.next_ino += 1;
        let nlink = if mode & S_IFDIR != 0 { 2 } else { 1 };
        let fields = [
            self.next_ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: reproducible archives
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        self.out.extend_from_slice(b"070701");
        for f in fields {
            self.out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(0);
        self.pad();
        self.out.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
    }

    /// Adds the directory `path` and its missing parents (`a/b` -> `a`, `a/b`).
    pub fn dir(&mut self, path: &str) {
        let path = path.trim_matches('/');
        let mut so_far = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            if !so_far.is_empty() {
                so_far.push('/');
            }
            so_far.push_str(part);
            if !self.dirs.contains(&so_far) {
                self.dirs.push(so_far.clone());
                let name = so_far.clone();
                self.entry(&name, S_IFDIR | 0o755, (0, 0), &[]);
            }
        }
    }

    /// Adds a regular file (its parent directories first).
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(path, S_IFREG | (mode & 0o7777), (0, 0), data);
    }

    /// Adds a character device node.
    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) {
        let path = path.trim_start_matches('/');
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
        self.entry(path, S_IFCHR | (mode & 0o7777), (major, minor), &[]);
    }

    /// The archive, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        // The kernel reads the archive in 512-byte blocks; pad like cpio(1) does.
        while !self.out.len().is_multiple_of(512) {
            self.out.push(0);
        }
        self.out
    }
}

/// The shared objects in `ldd` output: resolved library paths and the dynamic loader
/// (`linux-vdso.so.1` has no file and is skipped). Fails on `not found` lines.
pub fn ldd_paths(output: &str) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for line in output.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if line.contains("not a dynamic executable") || line.contains("statically linked") {
            continue;
        }
        let path = match line.split_once("=>") {
            Some((name, rest)) => {
                let rest = rest.trim();
                if rest.starts_with("not found") {
                    bail!("ldd: {} not found", name.trim());
                }
                rest.split_whitespace().next().unwrap_or_default()
            }
            None => line.split_whitespace().next().unwrap_or_default(),
        };
        if path.starts_with('/') {
            out.push(PathBuf::from(path));
        }
    }
    Ok(out)
}

/// `s` quoted for sh: as is when it has only safe characters, else single-quoted.
pub fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Arguments `cargo xtask vm` sets itself or that would write files lost with the VM.
pub fn check_run_args(args: &[String]) -> Result<()> {
    for a in args {
        let flag = a.split('=').next().unwrap_or(a);
        match flag {
            "--json" => bail!(
                "--json is set by cargo xtask vm (hint: the report is saved as \
                 target/vm/KERNEL/report.json)"
            ),
            "--events" | "--perfetto" | "--tmpdir-parent" => bail!(
                "{flag} would write inside the VM, whose files are lost at power-off (hint: \
                 run it on the host with `cargo xtask run -- {flag} FILE`)"
            ),
            _ => {}
        }
    }
    Ok(())
}

/// Where the report lands inside the VM.
pub const GUEST_REPORT: &str = "/report.json";

/// The /init script: mount what lockrace needs, apply and report the scheduler features
/// ([`super::sched::guest_script`]), run lockrace, print the markers and the report.
pub fn init_script(run_args: &[String], sched_features: &[String]) -> String {
    let mut args: Vec<String> = run_args.iter().map(|a| shell_quote(a)).collect();
    args.extend(["--json".to_string(), GUEST_REPORT.to_string()]);
    format!(
        r#"#!/bin/busybox sh
# Written by `cargo xtask vm`: run lockrace once, print the report on the console, power off.
# PID 1 must never exit (the kernel panics), so every path ends in `poweroff -f`.
export PATH=/bin
/bin/busybox --install -s /bin
halt_vm() {{
  dmesg -n 1
  poweroff -f
  while true; do sleep 60; done
}}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tracefs tracefs /sys/kernel/tracing
mount -t bpf bpf /sys/fs/bpf
mount -t tmpfs tmpfs /tmp
{sched}read up idle < /proc/uptime
echo "===LOCKRACE-RUNNING $(uname -r) $up==="
/bin/lockrace run {args}
rc=$?
if [ "$rc" = 126 ] || [ "$rc" = 127 ]; then
  echo "===LOCKRACE-NOT-RUN /bin/lockrace did not start (status $rc)==="
else
  echo "===LOCKRACE-EXIT $rc==="
fi
# Only emergencies on the console from here on: nothing may split the report's lines.
dmesg -n 1
if [ -s {report} ]; then
  set -- $(sha256sum {report})
  echo "===LOCKRACE-REPORT-BEGIN $1 $(wc -c < {report})==="
  base64 {report}
  echo "===LOCKRACE-REPORT-END==="
fi
poweroff -f
while true; do sleep 60; done
"#,
        args = args.join(" "),
        report = GUEST_REPORT,
        sched = super::sched::guest_script(sched_features),
    )
}

/// The files of the initramfs besides /init: (path inside, contents, mode).
pub struct Payload {
    pub lockrace: Vec<u8>,
    pub busybox: Vec<u8>,
    /// Shared objects of lockrace and busybox, at their absolute host paths.
    pub libs: Vec<(PathBuf, Vec<u8>)>,
}

/// The whole archive.
pub fn build(payload: &Payload, run_args: &[String], sched_features: &[String]) -> Vec<u8> {
    let mut cpio = Cpio::default();
    for d in [
        "bin",
        "dev",
        "proc",
        "sys",
        "tmp",
        "run",
        "sys/kernel/tracing",
        "sys/kernel/debug",
        "sys/fs/bpf",
    ] {
        cpio.dir(d);
    }
    cpio.char_dev("dev/console", 0o600, 5, 1);
    cpio.char_dev("dev/null", 0o666, 1, 3);
    cpio.file("bin/busybox", 0o755, &payload.busybox);
    cpio.file("bin/lockrace", 0o755, &payload.lockrace);
    for (path, data) in &payload.libs {
        cpio.file(&path_str(path), 0o755, data);
    }
    cpio.file(
        "init",
        0o755,
        init_script(run_args, sched_features).as_bytes(),
    );
    cpio.finish()
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_libraries_and_the_loader() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f8c)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f8c)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f8c)\n";
        assert_eq!(
            ldd_paths(out).unwrap(),
            [
                "/lib/x86_64-linux-gnu/libgcc_s.so.1",
                "/lib/x86_64-linux-gnu/libc.so.6",
                "/lib64/ld-linux-x86-64.so.2"
            ]
            .map(PathBuf::from)
        );
        assert!(
            ldd_paths("\tnot a dynamic executable\n")
                .unwrap()
                .is_empty()
        );
        let err = ldd_paths("\tlibfoo.so.1 => not found\n").unwrap_err();
        assert_eq!(err.to_string(), "ldd: libfoo.so.1 not found");
    }

    #[test]
    fn init_passes_arguments_exactly_and_always_powers_off() {
        let args = ["--lock", "posix", "--note", "it's a test", ""].map(String::from);
        let init = init_script(&args, &[]);
        assert!(
            init.contains(
                "/bin/lockrace run --lock posix --note 'it'\\''s a test' '' --json /report.json\n"
            ),
            "{init}"
        );
        assert!(init.starts_with("#!/bin/busybox sh\n"));
        for m in ["RUNNING", "EXIT", "NOT-RUN", "REPORT-BEGIN", "REPORT-END"] {
            assert!(init.contains(&format!("===LOCKRACE-{m}")), "{m} missing");
        }
        let tail: Vec<&str> = init.trim_end().lines().rev().take(2).collect();
        assert_eq!(tail, ["while true; do sleep 60; done", "poweroff -f"]);
    }

    #[test]
    fn init_applies_the_scheduler_features_before_lockrace_runs() {
        let features = ["NO_WAKEUP_PREEMPTION", "NO_RUN_TO_PARITY"].map(String::from);
        let init = init_script(&["--iterations".into(), "5".into()], &features);
        let at = |needle: &str| {
            init.find(needle)
                .unwrap_or_else(|| panic!("{needle:?} not in:\n{init}"))
        };
        assert!(at("halt_vm() {") < at("halt_vm\n"));
        assert!(at("mount -t sysfs") < at("mount -t debugfs debugfs /sys/kernel/debug"));
        assert!(at("want=\"NO_WAKEUP_PREEMPTION NO_RUN_TO_PARITY\"") < at("===LOCKRACE-SCHED-"));
        assert!(at("===LOCKRACE-SCHED-FEATURES") < at("===LOCKRACE-RUNNING"));
        assert!(at("===LOCKRACE-RUNNING") < at("/bin/lockrace run --iterations 5"));
        // Without features the fragment only reports what is in force.
        let plain = init_script(&[], &[]);
        assert!(plain.contains("want=\"\"\n"), "{plain}");
        assert!(plain.contains("===LOCKRACE-SCHED-FEATURES $(cat $F)==="));
    }

    #[test]
    fn run_args_that_xtask_owns_are_refused() {
        let ok = ["--lock", "posix", "--no-baseline"].map(String::from);
        assert!(check_run_args(&ok).is_ok());
        for bad in ["--json", "--json=x.json", "--events", "--perfetto"] {
            assert!(check_run_args(&[bad.to_string()]).is_err(), "{bad}");
        }
    }

    /// Lists an archive with cpio(1) (installed by `cargo xtask setup --for test`).
    fn cpio_list(archive: &[u8]) -> String {
        use std::io::Write;
        let mut child = std::process::Command::new("cpio")
            .args(["-t", "-v", "--quiet"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("cpio(1) must be installed (`cargo xtask setup --for test` installs it)");
        child.stdin.take().unwrap().write_all(archive).unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "cpio -t failed: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn the_archive_is_what_cpio_reads() {
        let payload = Payload {
            lockrace: b"\x7fELF lockrace".to_vec(),
            busybox: vec![1, 2, 3],
            libs: vec![(PathBuf::from("/lib64/ld-linux-x86-64.so.2"), vec![9; 5])],
        };
        let archive = build(
            &payload,
            &["--iterations".into(), "5".into()],
            &["NO_WAKEUP_PREEMPTION".into()],
        );
        assert_eq!(archive.len() % 512, 0);
        let listing = cpio_list(&archive);
        let names: Vec<&str> = listing
            .lines()
            .filter_map(|l| l.split_whitespace().last())
            .collect();
        for want in [
            "bin/busybox",
            "bin/lockrace",
            "lib64/ld-linux-x86-64.so.2",
            "init",
            "dev/console",
            "sys/kernel/tracing",
        ] {
            assert!(names.contains(&want), "{want} not in {names:?}");
        }
        let init = listing.lines().find(|l| l.ends_with(" init")).unwrap();
        assert!(init.starts_with("-rwxr-xr-x"), "{init}");
        let console = listing
            .lines()
            .find(|l| l.ends_with(" dev/console"))
            .unwrap();
        assert!(
            console.starts_with("crw-------") && console.contains("5,"),
            "{console}"
        );
        let lockrace = listing
            .lines()
            .find(|l| l.ends_with(" bin/lockrace"))
            .unwrap();
        assert!(
            lockrace.contains(" 13 "),
            "size of bin/lockrace: {lockrace}"
        );
    }

    #[test]
    fn directories_are_added_once_with_their_parents() {
        let mut c = Cpio::default();
        c.dir("a/b");
        c.file("a/b/c", 0o644, b"x");
        c.file("a/d", 0o644, b"y");
        assert_eq!(c.dirs, ["a", "a/b"]);
    }
}
