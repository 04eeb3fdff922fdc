//! `lockrace run`'s progress line: the parent reads the roles' turn counter straight out of a
//! child's mapping of the shared memfd (found once in `/proc/PID/maps`, then one
//! `process_vm_readv` of 64 bytes per tick) and shows it with a `crate::progress::Ticker`, so
//! the measured loop does no extra work, no file is opened (closing a descriptor of a locked
//! file would emit lock events from the parent), and the parent wakes 5 times a second.
//!
//! Invariants: only a [`Workload`] with `progress` shows it (`compare-sync` shows its own); the
//! counter decoding ([`turns_done`]) and the line rendering ([`turns_line`]) are pure and
//! tested.
use std::time::Duration;

use super::SyncKind;
use super::channel::Channel;
use super::execute::Workload;
use super::shared::{EVENTFD_TURN_OFFSET, FUTEX_OFFSET};
use crate::progress::Ticker;

/// Where a run keeps its turn count in the memfd.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TurnCounter {
    /// The shared-cursor channel: the server's last turn number, in decimal at offset 0.
    Decimal,
    /// The counter channel and the eventfd remedy: handoffs so far, a u64 at offset 0.
    U64,
    /// The futex remedy: the turn word, a u32 at offset 48.
    Futex,
}

/// The counter of a run, or None when its shape has none (scenarios).
pub fn turn_counter(cfg: &Workload) -> Option<TurnCounter> {
    if cfg.scenario.is_some() {
        return None;
    }
    match cfg.sync {
        SyncKind::Eventfd => Some(TurnCounter::U64),
        SyncKind::Futex => Some(TurnCounter::Futex),
        SyncKind::Fcntl => Some(match Channel::for_mode(cfg.lock, cfg.share) {
            Channel::Cursor => TurnCounter::Decimal,
            Channel::Counter => TurnCounter::U64,
        }),
    }
}

/// Turns both roles completed, read from the memfd's 64 bytes (pure). The decimal channel
/// only records the server's turns: the client has done one fewer or as many, counted as one
/// fewer.
pub fn turns_done(counter: TurnCounter, mem: &[u8; 64]) -> u64 {
    let word = |at: usize, n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&mem[at..at + n]);
        u64::from_le_bytes(b)
    };
    match counter {
        TurnCounter::U64 => word(EVENTFD_TURN_OFFSET, 8),
        TurnCounter::Futex => word(FUTEX_OFFSET, 4),
        TurnCounter::Decimal => {
            let digits = mem.iter().take(20).take_while(|b| b.is_ascii_digit());
            let mut n: u64 = 0;
            let mut any = false;
            for d in digits {
                any = true;
                n = n.saturating_mul(10).saturating_add(u64::from(d - b'0'));
            }
            if any {
                n.saturating_mul(2).saturating_add(1)
            } else {
                0
            }
        }
    }
}

/// `  12345 / 40000 turns (31%), 1.2 s elapsed, ~2.6 s left` (pure).
pub fn turns_line(done: u64, total: u64, elapsed: Duration) -> String {
    let done = done.min(total);
    let pct = (done * 100).checked_div(total).unwrap_or(0);
    let secs = elapsed.as_secs_f64();
    let left = if done > 0 && done < total {
        format!(
            ", ~{:.1} s left",
            secs * (total - done) as f64 / done as f64
        )
    } else {
        String::new()
    };
    format!("  {done} / {total} turns ({pct}%), {secs:.1} s elapsed{left}")
}

/// Start address of the memfd's mapping in a `/proc/PID/maps` text.
pub fn memfd_mapping(maps: &str) -> Option<usize> {
    maps.lines()
        .filter(|l| {
            let l = l.trim_end();
            l.ends_with("/memfd:lockrace (deleted)") || l.ends_with("/memfd:lockrace")
        })
        .find_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let range = f.next()?;
            let _perms = f.next()?;
            let offset = f.next()?;
            if u64::from_str_radix(offset, 16).ok()? != 0 {
                return None;
            }
            usize::from_str_radix(range.split('-').next()?, 16).ok()
        })
}

/// 64 bytes at `addr` in `pid`'s memory.
fn read_remote(pid: u32, addr: usize) -> Option<[u8; 64]> {
    let mut buf = [0u8; 64];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: one local iovec into `buf` (64 writable bytes, live for the call); the remote
    // iovec is only read by the kernel, which checks it against the other process's mappings.
    let n = unsafe { libc::process_vm_readv(pid as libc::pid_t, &local, 1, &remote, 1, 0) };
    (n == 64).then_some(buf)
}

/// Reads the turn count of a running pair of roles: finds the memfd's mapping in one of `pids`
/// (retrying until a role has mapped it), then reads the 64 bytes each call.
pub fn turn_reader(counter: TurnCounter, pids: [u32; 2]) -> impl FnMut() -> Option<u64> {
    let mut found: Option<(u32, usize)> = None;
    move || {
        if found.is_none() {
            found = pids.iter().find_map(|&pid| {
                let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).ok()?;
                Some((pid, memfd_mapping(&maps)?))
            });
        }
        let (pid, addr) = found?;
        Some(turns_done(counter, &read_remote(pid, addr)?))
    }
}

/// `lockrace run`'s progress line for one execution of both roles (None when the workload does
/// not ask for it, stderr is not a terminal, or the run has no turn counter).
pub fn run_ticker(cfg: &Workload, pids: [u32; 2]) -> Option<Ticker> {
    if !cfg.progress {
        return None;
    }
    let total = cfg.iterations.saturating_mul(2);
    let mut read = turn_reader(turn_counter(cfg)?, pids);
    Ticker::start(move |elapsed| Some(turns_line(read()?, total, elapsed)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::duration_line;

    #[test]
    fn counters_decode_per_channel() {
        let mut mem = [0u8; 64];
        assert_eq!(turns_done(TurnCounter::U64, &mem), 0);
        assert_eq!(turns_done(TurnCounter::Decimal, &mem), 0);
        mem[..8].copy_from_slice(&41u64.to_le_bytes());
        assert_eq!(turns_done(TurnCounter::U64, &mem), 41);
        mem[48..52].copy_from_slice(&7u32.to_le_bytes());
        assert_eq!(turns_done(TurnCounter::Futex, &mem), 7);
        // The server's turn 19 (0-based) wrote "19": 20 server turns, 19 client turns.
        let mut cursor = [0u8; 64];
        cursor[..2].copy_from_slice(b"19");
        assert_eq!(turns_done(TurnCounter::Decimal, &cursor), 39);
        cursor[..1].copy_from_slice(b"0");
        cursor[1] = 0;
        assert_eq!(turns_done(TurnCounter::Decimal, &cursor), 1);
    }

    #[test]
    fn the_line_says_how_far_and_how_long() {
        let l = turns_line(1_000, 4_000, Duration::from_secs(2));
        assert_eq!(l, "  1000 / 4000 turns (25%), 2.0 s elapsed, ~6.0 s left");
        assert_eq!(
            turns_line(0, 10, Duration::from_millis(200)),
            "  0 / 10 turns (0%), 0.2 s elapsed"
        );
        assert_eq!(
            turns_line(12, 10, Duration::from_secs(1)),
            "  10 / 10 turns (100%), 1.0 s elapsed"
        );
        assert_eq!(
            duration_line("tracing", Duration::from_secs(12), Duration::from_secs(30)),
            "tracing: 12.0 s elapsed, 18.0 s left (Ctrl-C ends it early)"
        );
    }

    #[test]
    fn the_memfd_mapping_is_found_in_proc_maps() {
        let maps = "\
55d0c0a00000-55d0c0a21000 r--p 00000000 08:01 1234 /usr/bin/lockrace
7f3a1c000000-7f3a1c001000 rw-s 00000000 00:01 5678 /memfd:lockrace-test (deleted)
7f3a1d000000-7f3a1d001000 rw-s 00000000 00:01 5679 /memfd:lockrace (deleted)
";
        assert_eq!(memfd_mapping(maps), Some(0x7f3a_1d00_0000));
        assert_eq!(
            memfd_mapping("00400000-00401000 r-xp 00000000 08:01 1 /bin/x\n"),
            None
        );
    }

    #[test]
    fn the_counter_is_read_from_another_process_mapping_of_the_memfd() {
        // A stand-in role: maps a memfd named like the client's and stores a handoff count.
        let script = "import mmap, os, sys, time\n\
                      fd = os.memfd_create('lockrace')\n\
                      os.ftruncate(fd, 64)\n\
                      m = mmap.mmap(fd, 64)\n\
                      m[0:8] = (4321).to_bytes(8, 'little')\n\
                      print('mapped', flush=True)\n\
                      sys.stdin.read()\n";
        let mut child = std::process::Command::new("python3")
            .args(["-c", script])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 (cargo xtask setup installs it)");
        let mut line = String::new();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        assert_eq!(line.trim(), "mapped");
        let pid = child.id();
        // The first pid has no such mapping (this test process): the other one is found.
        let mut read = turn_reader(TurnCounter::U64, [std::process::id(), pid]);
        let got = read();
        drop(child.stdin.take());
        let _ = child.wait();
        assert_eq!(got, Some(4321));
        // Gone: nothing to read, no error.
        assert_eq!(read(), None);
    }
}
