//! The flag groups several subcommands share: the workload's flags (`run`, `server`, `client`),
//! the capture's sizes and pointer policy (`run`, `record`, `trace`), and `--html` (`run`,
//! `report`, `trace`; `compare` has its own). Each command owns its own `Args` and checks them
//! into its typed config; these groups check themselves ([`CaptureArgs::limits`]).
use std::path::PathBuf;

use clap::Args;

use crate::capture::{CaptureOptions, Limits, Probes};
use crate::report::html;
use crate::report::model::Document;
use crate::workload::{LockKind, Scenario, Share, SyncKind};

#[derive(Args, Debug, Clone)]
pub struct WorkloadArgs {
    /// Lock flavour.
    #[arg(long, value_enum, default_value_t = LockKind::Ofd)]
    pub lock: LockKind,
    /// Share mode of the memfd between the two roles.
    #[arg(long, value_enum, default_value_t = Share::Same)]
    pub share: Share,
    /// Turns each role completes (whoops are retried and do not count).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub iterations: u64,
    /// Give up when the other side makes no progress for this many seconds.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_timeout: u64,
    /// Hand the turn over with a file lock (`fcntl`: --lock/--share), or with eventfd or futex.
    #[arg(long, value_enum, default_value_t = SyncKind::Fcntl)]
    pub sync: SyncKind,
    /// Run a scenario instead of the turn loop (`--iterations` rounds; see docs/WORKLOAD.md).
    #[arg(long, value_enum)]
    pub scenario: Option<Scenario>,
}

/// The kernel-side sizes and output choice of every capturing command (run, record, trace).
#[derive(Args, Debug, Clone)]
pub struct CaptureArgs {
    /// Ring-buffer size in MiB (power of two).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1024))]
    pub ring_buffer_mb: u32,
    /// Processes the in-kernel filter of the full and lean sets can follow (tasks inside lock
    /// calls at once: 4 times as many), from 64 to 262144. The fast set's filter has a slot for
    /// every pid the kernel can hand out, so it never fills.
    #[arg(long, value_name = "N", default_value_t = crate::capture::loader::TASKS_DEFAULT)]
    pub max_tasks: u32,
    /// Write the kernel's addresses (lock owners, file_lock pointers) to the events, report and
    /// trace files instead of per-run ids (for kernel developers; they reveal the KASLR layout).
    #[arg(long)]
    pub raw_pointers: bool,
    /// Which probes the capture attaches: fast (the default: lock decisions and blocked
    /// waiters through the cheapest programs; falls back to lean without kernel BTF), lean (the
    /// same events through classic tracepoints), full (also every lock syscall's entry and exit,
    /// at several times the cost per lock call). `cargo xtask bench` measures each.
    #[arg(long, value_enum, value_name = "SET")]
    pub probes: Option<Probes>,
    /// Measure lockrace's own cost: turn the kernel's BPF statistics on for the capture
    /// (restored after it, also on Ctrl-C) and report each program's runs and ns per run.
    #[arg(long)]
    pub self_cost: bool,
}

impl CaptureArgs {
    /// `--probes` (the fast set unless told) and `--self-cost`.
    pub fn options(&self) -> CaptureOptions {
        self.options_or(Probes::Fast)
    }

    /// `--probes` and `--self-cost`, with `default` when `--probes` was not given (a scenario
    /// whose evidence needs the syscall brackets takes the full set).
    pub fn options_or(&self, default: Probes) -> CaptureOptions {
        CaptureOptions {
            probes: self.probes.unwrap_or(default),
            self_cost: self.self_cost,
        }
    }

    /// `--ring-buffer-mb` and `--max-tasks`, checked (one line naming the bad flag).
    pub fn limits(&self) -> anyhow::Result<Limits> {
        Limits::from_flags(self.ring_buffer_mb, self.max_tasks)
    }
}

/// `--html FILE` and how much of the report it draws (run, report, trace; compare has its own).
#[derive(Args, Debug, Clone)]
pub struct HtmlArgs {
    /// Write a self-contained HTML report to FILE (inline CSS and SVG timelines; fetches nothing).
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
    /// Worst handoffs drawn as timelines in the HTML report (the report keeps at most 8).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=8))]
    pub html_handoffs: u64,
}

/// `--tmpdir-parent DIR` (hidden, for tests) or `$TMPDIR`: where a run's private temp dir is
/// made; it must be a directory.
pub fn tmpdir_parent(flag: &Option<PathBuf>) -> anyhow::Result<PathBuf> {
    let dir = flag.clone().unwrap_or_else(std::env::temp_dir);
    if !dir.is_dir() {
        return Err(crate::error::hinted(
            format!("{} is not a directory", dir.display()),
            "set TMPDIR to a writable directory",
        ));
    }
    Ok(dir)
}

impl HtmlArgs {
    /// How much of the report the page draws.
    pub fn options(&self) -> html::Options {
        html::Options {
            handoffs: usize::try_from(self.html_handoffs).unwrap_or(html::DEFAULT_HANDOFFS),
        }
    }

    /// `--html FILE`: render `doc` to FILE when asked (nothing otherwise).
    pub fn write_if_asked(&self, doc: &Document) -> anyhow::Result<()> {
        match &self.html {
            Some(path) => html::write_report(path, doc, &self.options()),
            None => Ok(()),
        }
    }
}
