//! The VM's serial console, read on the host: a line-by-line state machine that follows the
//! markers the VM's /init prints (see [`super::initramfs::init_script`]), and the verdict once
//! QEMU has exited: the report, or the one-line reason the run cannot be judged.
//!
//! Invariants: markers are found anywhere in a line (the firmware's escape sequences and the
//! kernel's messages may share it); the report counts only when its length and SHA-256 match the
//! ones the VM printed before it, and it parses as JSON; a kernel panic wins over every other
//! reason, because it explains the rest; then scheduler features that could not be applied as
//! asked (the guest powered off without running lockrace); the features in force are those the
//! guest read back after its writes ([`super::sched::Guest`]).

use super::sched;

/// Marker prefix of every line /init prints for the host.
pub const MARK: &str = "===LOCKRACE-";

/// What a console line changed, for the progress lines on the terminal.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    /// Nothing of note (a kernel message, firmware noise, a base64 line).
    Nothing,
    /// /init started lockrace: the kernel release and the uptime in seconds.
    Running { release: String, uptime: String },
    /// A line lockrace printed.
    Output(String),
    /// lockrace exited with this status.
    Exited(i32),
    /// /init could not run lockrace.
    NotRun(String),
    /// The kernel panicked (the message after `Kernel panic - not syncing: `).
    Panic(String),
    /// The guest read its scheduler features back (after writing the requested ones).
    SchedInForce(Vec<String>),
}

/// Where the run is, from the markers seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Booting,
    Running,
    Reporting,
    Done,
}

#[derive(Clone, Debug, Default)]
struct Framed {
    sha256: String,
    len: usize,
    base64: String,
    ended: bool,
}

/// The state machine over console lines.
#[derive(Clone, Debug, Default)]
pub struct Console {
    exit: Option<i32>,
    not_run: Option<String>,
    panic: Option<String>,
    report: Option<Framed>,
    in_report: bool,
    running: bool,
    last_line: String,
    /// The last `lockrace: ...` error line lockrace printed.
    last_error: Option<String>,
    /// What the guest said about its scheduler features.
    sched: sched::Guest,
    /// The features asked for (`--sched-features`), and the kernel's release for messages.
    requested: Vec<String>,
    release: Option<String>,
}

/// Removes `\r`, ANSI escape sequences and other control characters.
pub fn clean(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            // ESC [ params final-byte, or ESC + one character.
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            } else {
                chars.next();
            }
        } else if c == '\t' || !c.is_control() {
            out.push(c);
        }
    }
    out
}

/// The text of a marker (`NAME rest`) in `line`, without the `===` frame.
fn marker(line: &str) -> Option<&str> {
    let start = line.find(MARK)? + MARK.len();
    let rest = &line[start..];
    Some(rest.strip_suffix("===").unwrap_or(rest).trim())
}

impl Console {
    /// A console for a guest asked to run with `requested` scheduler features; `release` (from
    /// the image, if known) names the kernel in messages printed before lockrace starts.
    pub fn new(requested: &[String], release: Option<String>) -> Console {
        Console {
            requested: requested.to_vec(),
            release,
            ..Console::default()
        }
    }

    /// What the guest reported about its scheduler features.
    pub fn sched(&self) -> &sched::Guest {
        &self.sched
    }

    pub fn phase(&self) -> Phase {
        if self.exit.is_some() || self.not_run.is_some() {
            if self.report.as_ref().is_some_and(|r| r.ended) {
                Phase::Done
            } else {
                Phase::Reporting
            }
        } else if self.running {
            Phase::Running
        } else {
            Phase::Booting
        }
    }

    /// Feeds one line (as read, possibly with `\r` and escapes).
    pub fn feed(&mut self, raw: &str) -> Seen {
        let line = clean(raw);
        if !line.trim().is_empty() {
            self.last_line = line.trim().to_string();
        }
        if let Some(i) = line.find("Kernel panic - not syncing:") {
            let msg = line[i + "Kernel panic - not syncing:".len()..]
                .trim()
                .to_string();
            if self.panic.is_none() {
                self.panic = Some(msg.clone());
                return Seen::Panic(msg);
            }
            return Seen::Nothing;
        }
        if self.in_report {
            if let Some(m) = marker(&line) {
                if m == "REPORT-END" {
                    self.in_report = false;
                    if let Some(r) = self.report.as_mut() {
                        r.ended = true;
                    }
                }
                return Seen::Nothing;
            }
            if let Some(r) = self.report.as_mut() {
                r.base64.push_str(line.trim());
            }
            return Seen::Nothing;
        }
        let Some(m) = marker(&line) else {
            if !self.running || self.exit.is_some() || self.not_run.is_some() {
                return Seen::Nothing;
            }
            if line.starts_with("lockrace: ") {
                self.last_error = Some(line.trim().to_string());
            }
            return Seen::Output(line);
        };
        let mut words = m.split_whitespace();
        match words.next() {
            Some("RUNNING") => {
                self.running = true;
                Seen::Running {
                    release: words.next().unwrap_or("?").to_string(),
                    uptime: words.next().unwrap_or("?").to_string(),
                }
            }
            Some("EXIT") => {
                let code = words.next().and_then(|w| w.parse().ok()).unwrap_or(-1);
                self.exit = Some(code);
                Seen::Exited(code)
            }
            Some("NOT-RUN") => {
                let why = words.collect::<Vec<_>>().join(" ");
                self.not_run = Some(why.clone());
                Seen::NotRun(why)
            }
            Some(name) if name.starts_with("SCHED-") => {
                self.sched.take(m);
                match (name, &self.sched.in_force) {
                    ("SCHED-FEATURES", Some(now)) => Seen::SchedInForce(now.clone()),
                    _ => Seen::Nothing,
                }
            }
            Some("REPORT-BEGIN") => {
                let sha256 = words.next().unwrap_or_default().to_string();
                let len = words.next().and_then(|w| w.parse().ok()).unwrap_or(0);
                self.report = Some(Framed {
                    sha256,
                    len,
                    ..Default::default()
                });
                self.in_report = true;
                Seen::Nothing
            }
            _ => Seen::Nothing,
        }
    }

    /// The verdict once QEMU is gone: the report's bytes, or why there is none (one line).
    /// `qemu_failure` describes a QEMU that failed by itself (e.g. could not load the kernel);
    /// `timed_out` is the limit in seconds when the host killed QEMU.
    pub fn verdict(
        &self,
        qemu_failure: Option<&str>,
        timed_out: Option<u64>,
    ) -> Result<Vec<u8>, String> {
        if let Some(p) = &self.panic {
            return Err(format!("kernel panic: {p}"));
        }
        if let Some(why) = self.sched.error(&self.requested, self.release.as_deref()) {
            // The guest refused (and powered off before lockrace), or lockrace ran without the
            // features being reported. A guest that stopped earlier has a better reason below.
            let g = &self.sched;
            let refused = g.unknown.is_some()
                || g.refused.is_some()
                || (g.unavailable.is_some() && !self.requested.is_empty());
            if refused || self.running {
                return Err(why);
            }
        }
        if let Some(why) = &self.not_run {
            return Err(format!("lockrace could not run in the VM: {why}"));
        }
        if let Some(code) = self.exit
            && code != 0
        {
            let detail = match &self.last_error {
                Some(e) => format!(": {e}"),
                None => String::new(),
            };
            return Err(format!(
                "lockrace failed in the VM (exit status {code}){detail}"
            ));
        }
        if let Some(limit) = timed_out {
            let phase = match self.phase() {
                Phase::Booting => "while the kernel booted (no output from /init)",
                Phase::Running => "while lockrace ran",
                Phase::Reporting => "while the VM printed the report",
                Phase::Done => "while the VM powered off",
            };
            return Err(format!("timed out after {limit} s {phase}"));
        }
        if let Some(f) = qemu_failure {
            return Err(f.to_string());
        }
        if self.exit.is_none() {
            let last = if self.last_line.is_empty() {
                "no console output".to_string()
            } else {
                format!("last console line: {}", self.last_line)
            };
            return Err(if self.running {
                format!("the VM stopped while lockrace ran ({last})")
            } else {
                format!("the VM stopped before /init ran lockrace ({last})")
            });
        }
        let Some(r) = &self.report else {
            return Err("lockrace exited 0 but wrote no report".into());
        };
        if !r.ended {
            return Err("the report on the console is cut short (no end marker)".into());
        }
        let bytes = decode_base64(&r.base64)
            .ok_or_else(|| "the report on the console is not valid base64".to_string())?;
        if bytes.len() != r.len || sha256_hex(&bytes) != r.sha256 {
            return Err(format!(
                "the report on the console is corrupted ({} bytes, sha256 {}; the VM sent {} \
                 bytes, sha256 {})",
                bytes.len(),
                sha256_hex(&bytes),
                r.len,
                r.sha256
            ));
        }
        if serde_json::from_slice::<serde_json::Value>(&bytes).is_err() {
            return Err("the report from the VM is not JSON".into());
        }
        Ok(bytes)
    }
}

/// Decodes standard base64 (whitespace ignored); None on any other character or bad padding.
pub fn decode_base64(text: &str) -> Option<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let bytes: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() / 4 * 3);
    let quads = bytes.len() / 4;
    for (i, q) in bytes.chunks(4).enumerate() {
        let pad = q.iter().rev().take_while(|&&b| b == b'=').count();
        if pad > 2 || (pad > 0 && i + 1 != quads) {
            return None;
        }
        let mut n = 0u32;
        for &b in &q[..4 - pad] {
            n = (n << 6) | value(b)?;
        }
        n <<= 6 * pad as u32;
        let three = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
        out.extend_from_slice(&three[..3 - pad]);
    }
    Some(out)
}

/// SHA-256 of `data` as lowercase hex (what `sha256sum` prints).
pub fn sha256_hex(data: &[u8]) -> String {
    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];
    let mut h: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_be_bytes());
    let (blocks, _) = msg.as_chunks::<64>();
    for block in blocks {
        let mut w = [0u32; 64];
        let (words, _) = block.as_chunks::<4>();
        for (i, word) in words.iter().enumerate() {
            w[i] = u32::from_be_bytes(*word);
        }
        for i in 16..64 {
            let s0 = w[i - 15].rotate_right(7) ^ w[i - 15].rotate_right(18) ^ (w[i - 15] >> 3);
            let s1 = w[i - 2].rotate_right(17) ^ w[i - 2].rotate_right(19) ^ (w[i - 2] >> 10);
            w[i] = w[i - 16]
                .wrapping_add(s0)
                .wrapping_add(w[i - 7])
                .wrapping_add(s1);
        }
        let mut v = h;
        for i in 0..64 {
            let [a, b, c, d, e, f, g, hh] = v;
            let s1 = e.rotate_right(6) ^ e.rotate_right(11) ^ e.rotate_right(25);
            let ch = (e & f) ^ (!e & g);
            let t1 = hh
                .wrapping_add(s1)
                .wrapping_add(ch)
                .wrapping_add(K[i])
                .wrapping_add(w[i]);
            let s0 = a.rotate_right(2) ^ a.rotate_right(13) ^ a.rotate_right(22);
            let maj = (a & b) ^ (a & c) ^ (b & c);
            let t2 = s0.wrapping_add(maj);
            v = [t1.wrapping_add(t2), a, b, c, d.wrapping_add(t1), e, f, g];
        }
        for (x, y) in h.iter_mut().zip(v) {
            *x = x.wrapping_add(y);
        }
    }
    h.iter().map(|x| format!("{x:08x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base64(data: &[u8]) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in data.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(A[(n >> (18 - 6 * i)) as usize & 63] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    /// The console of a good run, as /init prints it (with firmware escapes and `\r`).
    fn good_console(report: &[u8]) -> Vec<String> {
        let b64 = base64(report);
        let mut lines = vec![
            "SeaBIOS (version 1.16.2)\r".to_string(),
            "\x1bc\x1b[?7l\x1b[2J===LOCKRACE-RUNNING 6.1.0-54-cloud-amd64 2.31===\r".to_string(),
            "Baseline: the same run untraced...\r".to_string(),
            "===LOCKRACE-EXIT 0===\r".to_string(),
            format!(
                "===LOCKRACE-REPORT-BEGIN {} {}===\r",
                sha256_hex(report),
                report.len()
            ),
        ];
        lines.extend(b64.as_bytes().chunks(76).map(|c| {
            let mut l = String::from_utf8(c.to_vec()).unwrap();
            l.push('\r');
            l
        }));
        lines.push("===LOCKRACE-REPORT-END===\r".into());
        lines.push("[   29.92] reboot: Power down\r".into());
        lines
    }

    #[test]
    fn sha256_matches_known_vectors() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // Two blocks (the padding does not fit in the first).
        assert_eq!(
            sha256_hex(b"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1"
        );
    }

    #[test]
    fn base64_round_trips_and_rejects_garbage() {
        for data in [&b""[..], b"f", b"fo", b"foo", b"foob", b"{\"a\": [1, 2]}\n"] {
            assert_eq!(decode_base64(&base64(data)).unwrap(), data);
        }
        assert_eq!(decode_base64("Zm9v\nYmFy\n").unwrap(), b"foobar");
        assert!(decode_base64("Zm9").is_none());
        assert!(decode_base64("Zm==Zm9v").is_none());
        assert!(decode_base64("Zm9*").is_none());
    }

    #[test]
    fn clean_drops_escapes_and_carriage_returns() {
        assert_eq!(clean("\x1bc\x1b[?7l\x1b[2Jhello\r"), "hello");
        assert_eq!(clean("a\tb"), "a\tb");
    }

    #[test]
    fn a_good_run_yields_the_report_and_the_phases_in_order() {
        let report = br#"{"schema_version": 1, "kernel": {"release": "6.1.0-54-cloud-amd64"}}"#;
        let mut c = Console::default();
        let mut seen = Vec::new();
        let mut phases = vec![c.phase()];
        for l in good_console(report) {
            seen.push(c.feed(&l));
            if phases.last() != Some(&c.phase()) {
                phases.push(c.phase());
            }
        }
        use Phase::*;
        assert_eq!(phases, [Booting, Running, Reporting, Done]);
        assert_eq!(
            seen[1],
            Seen::Running {
                release: "6.1.0-54-cloud-amd64".into(),
                uptime: "2.31".into()
            }
        );
        assert_eq!(
            seen[2],
            Seen::Output("Baseline: the same run untraced...".into())
        );
        assert_eq!(seen[3], Seen::Exited(0));
        assert_eq!(c.phase(), Phase::Done);
        assert_eq!(c.verdict(None, None).unwrap(), report);
    }

    #[test]
    fn a_corrupted_or_cut_report_is_a_reason_not_a_report() {
        let report = br#"{"schema_version": 1}"#;
        let mut lines = good_console(report);
        let i = lines.iter().position(|l| l.starts_with("eyJ")).unwrap();
        lines[i] = lines[i].replacen("eyJ", "eyK", 1);
        let mut c = Console::default();
        for l in &lines {
            c.feed(l);
        }
        let err = c.verdict(None, None).unwrap_err();
        assert!(
            err.starts_with("the report on the console is corrupted"),
            "{err}"
        );

        let lines = good_console(report);
        let mut c = Console::default();
        for l in &lines[..lines.len() - 2] {
            c.feed(l);
        }
        assert_eq!(c.phase(), Phase::Reporting);
        assert_eq!(
            c.verdict(None, None).unwrap_err(),
            "the report on the console is cut short (no end marker)"
        );
        assert_eq!(
            c.verdict(None, Some(300)).unwrap_err(),
            "timed out after 300 s while the VM printed the report"
        );
    }

    #[test]
    fn scheduler_features_are_recorded_and_a_refusal_is_the_reason() {
        let want = vec!["NO_WAKEUP_PREEMPTION".to_string()];
        let report = br#"{"schema_version": 1}"#;
        let mut lines = vec![
            "===LOCKRACE-SCHED-AVAILABLE PLACE_LAG WAKEUP_PREEMPTION===\r".to_string(),
            "===LOCKRACE-SCHED-FEATURES PLACE_LAG NO_WAKEUP_PREEMPTION===\r".to_string(),
        ];
        lines.extend(good_console(report).into_iter().skip(1));
        let mut c = Console::new(&want, Some("6.12.117+deb12-cloud-amd64".into()));
        let seen: Vec<Seen> = lines.iter().map(|l| c.feed(l)).collect();
        assert_eq!(
            seen[1],
            Seen::SchedInForce(vec!["PLACE_LAG".into(), "NO_WAKEUP_PREEMPTION".into()])
        );
        assert_eq!(c.verdict(None, None).unwrap(), report);
        assert_eq!(
            c.sched().available.as_deref().unwrap(),
            ["PLACE_LAG", "WAKEUP_PREEMPTION"]
        );

        // The guest does not have the feature: it says so and powers off.
        let mut c = Console::new(
            &["NO_FOO".into()],
            Some("6.12.117+deb12-cloud-amd64".into()),
        );
        for l in [
            "===LOCKRACE-SCHED-AVAILABLE PLACE_LAG NO_NEXT_BUDDY===\r",
            "===LOCKRACE-SCHED-UNKNOWN NO_FOO===\r",
            "[    3.2] reboot: Power down\r",
        ] {
            c.feed(l);
        }
        assert_eq!(
            c.verdict(None, None).unwrap_err(),
            "unknown scheduler feature NO_FOO in 6.12.117+deb12-cloud-amd64; this kernel has: \
             NEXT_BUDDY PLACE_LAG (hint: --sched-features NAME turns one on, NO_NAME off)"
        );
        // A refusal beats the timeout it may have caused; a silent boot keeps its own reason.
        assert!(
            c.verdict(None, Some(60))
                .unwrap_err()
                .starts_with("unknown scheduler feature")
        );
        let silent = Console::new(&want, None);
        assert_eq!(
            silent.verdict(None, Some(60)).unwrap_err(),
            "timed out after 60 s while the kernel booted (no output from /init)"
        );
        // Without a request, a kernel without the file runs as usual.
        let mut c = Console::new(&[], None);
        c.feed("===LOCKRACE-SCHED-UNAVAILABLE no /sys/kernel/debug/sched/features===");
        for l in good_console(report) {
            c.feed(&l);
        }
        assert_eq!(c.verdict(None, None).unwrap(), report);
        assert_eq!(c.sched().in_force, None);
    }

    #[test]
    fn every_failure_has_a_one_line_reason() {
        let feed = |lines: &[&str]| {
            let mut c = Console::default();
            for l in lines {
                c.feed(l);
            }
            c
        };
        let panic = feed(&[
            "[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs on unknown-block(0,0)\r",
            "[    2.1] ---[ end Kernel panic - not syncing: VFS: Unable to mount root fs ]---",
        ]);
        assert_eq!(
            panic.verdict(None, None).unwrap_err(),
            "kernel panic: VFS: Unable to mount root fs on unknown-block(0,0)"
        );
        let failed = feed(&[
            "===LOCKRACE-RUNNING 6.1.0 1.0===",
            "lockrace: tracepoint filelock:posix_lock_inode ...",
            "===LOCKRACE-EXIT 1===",
        ]);
        assert_eq!(
            failed.verdict(None, None).unwrap_err(),
            "lockrace failed in the VM (exit status 1): lockrace: tracepoint \
             filelock:posix_lock_inode ..."
        );
        let not_run = feed(&["===LOCKRACE-NOT-RUN /bin/lockrace did not start (status 127)==="]);
        assert_eq!(
            not_run.verdict(None, None).unwrap_err(),
            "lockrace could not run in the VM: /bin/lockrace did not start (status 127)"
        );
        let silent = feed(&[]);
        assert_eq!(
            silent.verdict(None, Some(300)).unwrap_err(),
            "timed out after 300 s while the kernel booted (no output from /init)"
        );
        assert_eq!(
            silent
                .verdict(Some("qemu failed (exit status 1): bad kernel"), None)
                .unwrap_err(),
            "qemu failed (exit status 1): bad kernel"
        );
        assert_eq!(
            silent.verdict(None, None).unwrap_err(),
            "the VM stopped before /init ran lockrace (no console output)"
        );
        let running = feed(&["===LOCKRACE-RUNNING 6.1.0 1.0===", "Tracing..."]);
        assert_eq!(running.phase(), Phase::Running);
        assert_eq!(
            running.verdict(None, Some(60)).unwrap_err(),
            "timed out after 60 s while lockrace ran"
        );
        let no_report = feed(&["===LOCKRACE-RUNNING 6.1.0 1.0===", "===LOCKRACE-EXIT 0==="]);
        assert_eq!(
            no_report.verdict(None, None).unwrap_err(),
            "lockrace exited 0 but wrote no report"
        );
    }
}
