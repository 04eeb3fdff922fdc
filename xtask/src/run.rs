//! `cargo xtask run [-- ARGS]`: setup for `run` (only what building and running lockrace needs),
//! build lockrace in release, then replace this process with
//! `lockrace run ARGS` as root (directly when root, through `sudo -E` otherwise).
//!
//! Invariant: lockrace's exit status is xtask's exit status, and Ctrl-C reaches lockrace alone,
//! because xtask `exec`s it instead of waiting for it.
use std::os::unix::process::CommandExt;

use anyhow::{Result, anyhow};

use crate::{
    cmd::{self, Io},
    setup, workspace,
};

/// Only returns on failure: on success the process becomes lockrace.
pub fn run(args: &[String]) -> Result<()> {
    setup::ensure(setup::Profile::Run)?;
    let mut build = workspace::cargo();
    build.args(["build", "--release", "-p", "lockrace"]);
    println!("xtask run: {}", cmd::display(&build));
    cmd::run(&mut build, Io::Inherit)?;
    let bin = workspace::metadata()?.target_dir.join("release/lockrace");
    let mut lockrace = cmd::as_root(&bin, &[], true, "tracing the kernel's lock events")?;
    lockrace.arg("run").args(args);
    let shown = cmd::display(&lockrace);
    println!("xtask run: {shown}");
    let err = lockrace.exec();
    Err(anyhow!("cannot run `{shown}`: {err}"))
}
