//! Lock names for `lockrace trace`: a (dev, ino) seen in a lock event is resolved to a path by
//! looking at the open files of the process that locked it (`/proc/TGID/fd/*`: stat, then
//! readlink on a match).
//!
//! Invariants: never reads `/proc/locks` (reading it takes the kernel's lock-list spinlock and
//! stalls every lock operation on the machine); a lookup happens only when a (dev, ino) is new
//! or still unresolved, at most [`MAX_TRIES`] times per inode (each time with another process),
//! scanning at most [`MAX_FDS`] descriptors; at most [`MAX_INODES`] inodes are remembered, so
//! memory and work stay bounded however long the trace runs. Unresolved locks are shown as
//! `major:minor/ino`.
use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Inodes remembered (resolved or not).
pub const MAX_INODES: usize = 4096;
/// Lookups per unresolved inode.
pub const MAX_TRIES: u8 = 4;
/// Descriptors looked at per lookup.
pub const MAX_FDS: usize = 4096;

/// A user-space `st_dev` (glibc's encoding) in the kernel's `s_dev` encoding, the one the
/// filelock tracepoints report: `major << 20 | minor`, as the 32 bits the events carry (the
/// kernel's majors have 12 bits, its minors 20).
pub fn kernel_dev(st_dev: u64) -> u32 {
    crate::host::kernel_dev(st_dev) as u32
}

/// (dev, ino) of a path, in the tracepoints' encoding (follows symlinks).
pub fn inode_of(path: &Path) -> std::io::Result<(u32, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((kernel_dev(m.dev()), m.ino()))
}

#[derive(Clone, Debug, Default)]
struct Entry {
    path: Option<String>,
    tries: u8,
    last_tgid: u32,
}

/// The (dev, ino) -> path cache.
#[derive(Debug)]
pub struct Names {
    map: HashMap<(u32, u64), Entry>,
    proc_root: PathBuf,
    /// Lookups done (for tests and the debug log).
    pub lookups: u64,
}

impl Default for Names {
    fn default() -> Self {
        Names::new()
    }
}

impl Names {
    pub fn new() -> Names {
        Names::with_proc(PathBuf::from("/proc"))
    }

    /// A cache reading another procfs-shaped tree (tests).
    pub fn with_proc(proc_root: PathBuf) -> Names {
        Names {
            map: HashMap::new(),
            proc_root,
            lookups: 0,
        }
    }

    /// A path known in advance (`--path FILE`).
    pub fn insert(&mut self, dev: u32, ino: u64, path: String) {
        self.map.insert(
            (dev, ino),
            Entry {
                path: Some(path),
                tries: MAX_TRIES,
                last_tgid: 0,
            },
        );
    }

    /// `tgid` locked (dev, ino): look it up when it is new or still unresolved.
    pub fn note(&mut self, tgid: u32, dev: u32, ino: u64) {
        if let Some(e) = self.map.get(&(dev, ino))
            && (e.path.is_some() || e.tries >= MAX_TRIES || e.last_tgid == tgid)
        {
            return;
        }
        if !self.map.contains_key(&(dev, ino)) && self.map.len() >= MAX_INODES {
            return;
        }
        self.lookups += 1;
        let found = find_in_fds(&self.proc_root, tgid, dev, ino);
        let e = self.map.entry((dev, ino)).or_default();
        e.tries = e.tries.saturating_add(1);
        e.last_tgid = tgid;
        e.path = found;
    }

    pub fn get(&self, dev: u32, ino: u64) -> Option<&str> {
        self.map.get(&(dev, ino))?.path.as_deref()
    }

    /// Name the analysis' locks that have no path yet by the paths resolved here.
    pub fn name_locks(&self, a: &mut crate::analysis::Analysis) {
        for l in &mut a.locks {
            if l.path.is_none() {
                l.path = self.get(l.key.dev, l.key.ino).map(str::to_string);
            }
        }
    }

    /// Every resolved path, for [`crate::analysis::AnalysisInput::paths`].
    pub fn resolved(&self) -> Vec<((u32, u64), String)> {
        let mut v: Vec<_> = self
            .map
            .iter()
            .filter_map(|(k, e)| Some((*k, e.path.clone()?)))
            .collect();
        v.sort();
        v
    }
}

/// The path under which `tgid` has (dev, ino) open, if it has.
fn find_in_fds(proc_root: &Path, tgid: u32, dev: u32, ino: u64) -> Option<String> {
    let dir = proc_root.join(tgid.to_string()).join("fd");
    for ent in std::fs::read_dir(&dir).ok()?.take(MAX_FDS).flatten() {
        let p = ent.path();
        let Ok(m) = std::fs::metadata(&p) else {
            continue;
        };
        if m.ino() == ino && kernel_dev(m.dev()) == dev {
            let target = std::fs::read_link(&p).ok()?;
            return Some(target.to_string_lossy().into_owned());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_numbers_take_the_kernel_encoding() {
        // makedev(254, 0) in glibc's encoding is 0xfe00; the kernel's is 254 << 20.
        assert_eq!(kernel_dev(0xfe00), 254 << 20);
        // makedev(8, 17)
        assert_eq!(kernel_dev(0x811), (8 << 20) | 17);
        // A large minor: makedev(0, 300) = (300 & 0xff) | ((300 & !0xff) << 12)
        let st = (300u64 & 0xff) | ((300u64 & !0xff) << 12);
        assert_eq!(kernel_dev(st), 300);
    }

    #[test]
    fn a_file_we_hold_open_is_found_under_our_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held");
        let f = std::fs::File::create(&path).unwrap();
        let (dev, ino) = inode_of(&path).unwrap();
        let mut names = Names::new();
        names.note(std::process::id(), dev, ino);
        assert_eq!(
            names.get(dev, ino),
            Some(path.canonicalize().unwrap().to_str().unwrap())
        );
        // Resolved: no second lookup.
        names.note(std::process::id(), dev, ino);
        assert_eq!(names.lookups, 1);
        drop(f);
    }

    #[test]
    fn unresolved_inodes_are_retried_a_bounded_number_of_times() {
        let mut names = Names::new();
        let me = std::process::id();
        names.note(me, 1, u64::MAX);
        names.note(me, 1, u64::MAX); // same process: not again
        assert_eq!(names.lookups, 1);
        for tgid in 1..20 {
            names.note(me + tgid, 1, u64::MAX);
        }
        assert_eq!(names.lookups, MAX_TRIES as u64);
        assert_eq!(names.get(1, u64::MAX), None);
        assert!(names.resolved().is_empty());
    }

    #[test]
    fn known_paths_are_never_looked_up() {
        let mut names = Names::with_proc(PathBuf::from("/nonexistent"));
        names.insert(5, 6, "/data/db".into());
        names.note(1, 5, 6);
        assert_eq!(names.lookups, 0);
        assert_eq!(names.resolved(), vec![((5, 6), "/data/db".to_string())]);
    }
}
