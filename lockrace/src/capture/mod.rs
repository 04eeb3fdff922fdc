//! Capture: tracefs format parsing ([`tracefs`]), eBPF loading/attaching ([`loader`]) and the
//! ring-buffer reader (here), feeding decoded [`Event`]s to a [`Sink`] (the JSONL writer,
//! `crate::jsonl::Collector`, is one; `lockrace trace`'s live analysis another).
//!
//! Invariants:
//! - nothing is lost silently: records the kernel could not write are counted per CPU in the
//!   kernel (`dropped`), records user space could not decode are counted (`decode_errors`), and
//!   both reach [`CaptureStats`];
//! - [`Capture::stop`] detaches every program first, then drains what is left in the ring, then
//!   reads the drop counters, so the counts cover the whole capture;
//! - dropping a [`Capture`] without `stop` still detaches everything (aya detaches on drop);
//! - every program's recursion misses (runs the kernel skipped: lost events) are read at the
//!   end and summed into [`CaptureStats::missed`]; with [`CaptureOptions::self_cost`] the
//!   kernel's run-time statistics are on for the capture only ([`progstats::StatsGuard`]) and
//!   each program's runs and ns per run are read too.
pub mod btf;
pub mod limits;
pub mod loader;
pub mod progstats;
pub mod tracefs;

use std::{io, thread::JoinHandle};

use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::oneshot};

pub use loader::{Filter, Limits, Loaded, Probes};
pub use progstats::ProgramStats;

use crate::events::{self, Event};

/// How often the reader drains the ring when the kernel did not wake it (records below the
/// wakeup threshold are submitted without a wakeup; see `GLOBAL_WAKEUP_BYTES`).
pub const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// Where decoded events go. Called on the reader thread, one event at a time.
pub trait Sink: Send + 'static {
    fn push(&mut self, e: &Event) -> io::Result<()>;
    /// Called on the reader thread after every drain of the ring (at least every
    /// [`POLL_INTERVAL`]), also when no event came: for periodic work (`trace --interval`).
    fn idle(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What a capture saw and lost.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CaptureStats {
    /// Events decoded and handed to the sink.
    pub events: u64,
    /// Records the kernel could not write (ring buffer full), all CPUs.
    pub dropped: u64,
    /// Records that did not decode (should be 0; counted, never fatal).
    pub decode_errors: u64,
    /// Tasks the programs could not follow because `TRACED_TGIDS` or `IN_REQUEST` was full
    /// (`--max-tasks`): their later events are missing.
    pub untracked_tasks: u64,
    /// Every attached program's figures at the end of the capture.
    pub programs: Vec<ProgramStats>,
    /// Runs the kernel skipped, summed over the programs (`recursion_misses`): events lost.
    pub missed: u64,
    /// The probe set really attached (`Lean` when `Fast` fell back).
    pub probes: Probes,
}

impl CaptureStats {
    /// Nothing lost that the kernel or the reader knows of. A miss may be a scheduler event of
    /// an untraced task (the kernel counts misses before any filter), so `missed` alone does
    /// not decide it: the report says what was missed (`report::build::loss_reasons`).
    pub fn complete(&self) -> bool {
        self.dropped == 0 && self.decode_errors == 0 && self.untracked_tasks == 0
    }

    /// The incomplete-report line for tasks the capture could not follow, if any.
    pub fn untracked_reason(&self) -> Option<String> {
        (self.untracked_tasks > 0).then(|| {
            format!(
                "{} times a task could not be followed (a task map was full): its later events \
                 are missing; raise --max-tasks",
                self.untracked_tasks
            )
        })
    }
}

/// `LOCKRACE_SELF_COST=1` turns BPF statistics on for every capture (a measurement switch for
/// benchmarks until the command line has `--self-cost`); `lockrace record` then prints each
/// program's runs and ns per run.
pub const SELF_COST_ENV: &str = "LOCKRACE_SELF_COST";

/// How a capture runs besides its filter and sizes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureOptions {
    pub probes: Probes,
    /// Turn the kernel's BPF run-time statistics on for the capture (restored after it) and
    /// report each program's runs and ns per run (`--self-cost`). They cost two clock reads
    /// per program run, so they are off unless asked for.
    pub self_cost: bool,
}

/// A running capture: programs attached, a reader thread draining the ring buffer.
pub struct Capture<S: Sink> {
    loaded: Loaded,
    stop_tx: Option<oneshot::Sender<()>>,
    reader: Option<JoinHandle<io::Result<(S, u64, u64)>>>,
    /// BPF statistics on while this lives (`self_cost`).
    stats: Option<progstats::StatsGuard>,
}

impl<S: Sink> Capture<S> {
    /// Load, attach, and start reading into `sink`.
    pub fn start(filter: &Filter, ring_buffer_bytes: u32, sink: S) -> anyhow::Result<Capture<S>> {
        let limits = Limits {
            ring_buffer_bytes,
            ..Limits::default()
        };
        Capture::start_with(filter, &limits, sink)
    }

    /// [`Capture::start`] with every kernel-side size given (`--ring-buffer-mb`, `--max-tasks`).
    pub fn start_with(filter: &Filter, limits: &Limits, sink: S) -> anyhow::Result<Capture<S>> {
        Capture::start_probes(filter, limits, Probes::Full, sink)
    }

    /// [`Capture::start_with`], attaching the programs of `probes` only.
    pub fn start_probes(
        filter: &Filter,
        limits: &Limits,
        probes: Probes,
        sink: S,
    ) -> anyhow::Result<Capture<S>> {
        let options = CaptureOptions {
            probes,
            ..CaptureOptions::default()
        };
        Capture::start_options(filter, limits, options, sink)
    }

    /// Every way to start a capture. [`loader::PROBES_ENV`] (a measurement switch) overrides
    /// `options.probes` when set.
    pub fn start_options(
        filter: &Filter,
        limits: &Limits,
        options: CaptureOptions,
        sink: S,
    ) -> anyhow::Result<Capture<S>> {
        let probes = options.probes.or_env()?;
        if probes != options.probes {
            eprintln!(
                "lockrace: {}={} overrides the probe set",
                loader::PROBES_ENV,
                probes.name()
            );
        }
        let self_cost = options.self_cost || std::env::var(SELF_COST_ENV).is_ok_and(|v| v == "1");
        // Statistics first: a program run before they are on would be missing from the count.
        let stats = if self_cost {
            let g = progstats::StatsGuard::enable().map_err(|e| {
                crate::error::hinted(
                    format!("cannot turn on BPF statistics: {e}"),
                    "run as root (CAP_SYS_ADMIN), or leave out --self-cost",
                )
            })?;
            log::debug!("BPF statistics on ({})", g.method());
            Some(g)
        } else {
            None
        };
        let mut loaded = Loaded::load_probes(filter, limits, probes)?;
        let ring = loaded.take_ring()?;
        let (stop_tx, stop_rx) = oneshot::channel();
        let reader = std::thread::Builder::new()
            .name("lockrace-reader".into())
            .spawn(move || read_ring(ring, sink, stop_rx))
            .context("cannot start the ring-buffer reader thread")?;
        Ok(Capture {
            loaded,
            stop_tx: Some(stop_tx),
            reader: Some(reader),
            stats,
        })
    }

    /// The probe set attached (`Lean` when `Fast` fell back) and the programs.
    pub fn probes(&self) -> (Probes, &[&'static str]) {
        (self.loaded.probes, self.loaded.attached())
    }

    /// The offsets this kernel's tracefs gave (and which field names it uses).
    pub fn offsets(&self) -> &tracefs::Offsets {
        &self.loaded.offsets
    }

    /// Detach, drain, count. Returns the sink and the stats.
    pub fn stop(self) -> anyhow::Result<(S, CaptureStats)> {
        self.stop_with_offsets().map(|(s, st, _)| (s, st))
    }

    /// [`Capture::stop`], also returning the offsets this kernel's tracefs gave.
    pub fn stop_with_offsets(mut self) -> anyhow::Result<(S, CaptureStats, tracefs::Offsets)> {
        self.loaded.detach();
        if let Some(tx) = self.stop_tx.take() {
            let _ = tx.send(());
        }
        let reader = self.reader.take().expect("reader present until stop");
        let (sink, events, decode_errors) = reader
            .join()
            .map_err(|_| anyhow::anyhow!("the ring-buffer reader thread panicked"))?
            .context("reading the ring buffer")?;
        let dropped = self.loaded.drops()?;
        let untracked_tasks = self.loaded.map_full()?;
        // Detached: the figures are final. Then statistics go off (the guard drops).
        let programs = self.loaded.program_stats(self.stats.is_some());
        self.stats = None;
        let missed = programs.iter().filter_map(|p| p.recursion_misses).sum();
        Ok((
            sink,
            CaptureStats {
                events,
                dropped,
                decode_errors,
                untracked_tasks,
                programs,
                missed,
                probes: self.loaded.probes,
            },
            self.loaded.offsets.clone(),
        ))
    }
}

impl<S: Sink> Drop for Capture<S> {
    fn drop(&mut self) {
        // Error paths: detach now and let the reader end; `stop` has taken these already.
        if let Some(tx) = self.stop_tx.take() {
            self.loaded.detach();
            let _ = tx.send(());
            if let Some(r) = self.reader.take() {
                let _ = r.join();
            }
        }
    }
}

/// Drain every record currently in the ring into the sink.
fn drain<S: Sink>(
    ring: &mut RingBuf<MapData>,
    sink: &mut S,
    events: &mut u64,
    bad: &mut u64,
) -> io::Result<()> {
    while let Some(item) = ring.next() {
        match events::decode(&item) {
            Ok(e) => {
                *events += 1;
                sink.push(&e)?;
            }
            Err(err) => {
                *bad += 1;
                log::debug!("undecodable record: {err}");
            }
        }
    }
    Ok(())
}

/// The reader thread: a current-thread tokio runtime waiting on the ring's fd.
fn read_ring<S: Sink>(
    ring: RingBuf<MapData>,
    mut sink: S,
    mut stop_rx: oneshot::Receiver<()>,
) -> io::Result<(S, u64, u64)> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (mut events, mut bad) = (0u64, 0u64);
    rt.block_on(async {
        // SAFETY: the ring buffer owns its map fd for as long as the AsyncFd owns the ring.
        let mut afd =
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(io::Error::from)?;
        let mut tick = tokio::time::interval(POLL_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                guard = afd.readable_mut() => {
                    let mut guard = guard?;
                    drain(guard.get_inner_mut(), &mut sink, &mut events, &mut bad)?;
                    guard.clear_ready();
                    sink.idle()?;
                }
                _ = tick.tick() => {
                    drain(afd.get_mut(), &mut sink, &mut events, &mut bad)?;
                    sink.idle()?;
                }
                _ = &mut stop_rx => break,
            }
        }
        // Programs are detached before stop is signalled: what is left is the tail.
        drain(afd.get_mut(), &mut sink, &mut events, &mut bad)?;
        sink.finish()
    })?;
    Ok((sink, events, bad))
}
