//! `cargo xtask screenshot [-- ARGS]`: the README's tour, regenerated. Setup, build lockrace in
//! release, run the traced `lockrace run ARGS --html --json` as root (default ARGS: the posix,
//! reopen experiment with 2000 iterations), keep its terminal report in
//! `target/screenshot/terminal.txt`, and have headless Chromium take the screenshot
//! `docs/img/report.png` of the HTML report.
//!
//! Invariants: the PNG is the browser's rendering of the file lockrace wrote, never edited; the
//! browser runs with a fresh, empty profile that is removed afterwards, and with the network
//! made unusable (the report needs none); the terminal text is lockrace's stdout, verbatim.
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{
    cmd::{self, Io},
    setup, workspace,
};

/// `lockrace run` arguments when none are given.
pub const DEFAULT_ARGS: &[&str] = &[
    "--lock",
    "posix",
    "--share",
    "reopen",
    "--iterations",
    "2000",
];
/// Where the screenshot goes, relative to the workspace root.
pub const PNG: &str = "docs/img/report.png";
/// Viewport of the screenshot (width, height in CSS pixels).
pub const WINDOW: (u32, u32) = (1280, 2000);

/// The arguments for `lockrace run`: the user's, or [`DEFAULT_ARGS`], plus the outputs.
pub fn run_args(user: &[String], html: &Path, json: &Path) -> Vec<String> {
    let mut args: Vec<String> = if user.is_empty() {
        DEFAULT_ARGS.iter().map(|s| s.to_string()).collect()
    } else {
        user.to_vec()
    };
    args.push("--html".into());
    args.push(html.display().to_string());
    args.push("--json".into());
    args.push(json.display().to_string());
    args
}

/// The headless Chromium command line that screenshots `page` into `png`.
pub fn chromium_args(profile: &Path, png: &Path, page: &Path) -> Vec<String> {
    vec![
        "--headless".into(),
        "--no-sandbox".into(),
        "--disable-gpu".into(),
        "--disable-quic".into(),
        "--no-first-run".into(),
        "--disable-background-networking".into(),
        "--disable-component-update".into(),
        "--disable-sync".into(),
        "--hide-scrollbars".into(),
        "--host-resolver-rules=MAP * ~NOTFOUND".into(),
        "--proxy-server=127.0.0.1:9".into(),
        format!("--user-data-dir={}", profile.display()),
        format!("--screenshot={}", png.display()),
        format!("--window-size={},{}", WINDOW.0, WINDOW.1),
        format!("file://{}", page.display()),
    ]
}

pub fn screenshot(user_args: &[String]) -> Result<()> {
    setup::ensure(setup::Profile::Screenshot)?;
    let chromium = cmd::which("chromium").context(
        "chromium is not installed (hint: `cargo xtask setup --for screenshot` installs it)",
    )?;
    let mut build = workspace::cargo();
    build.args(["build", "--release", "-p", "lockrace"]);
    println!("xtask screenshot: {}", cmd::display(&build));
    cmd::run(&mut build, Io::Inherit)?;
    let meta = workspace::metadata()?;
    let bin = meta.target_dir.join("release/lockrace");
    let out_dir = meta.target_dir.join("screenshot");
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create {}", out_dir.display()))?;
    let (html, json) = (out_dir.join("report.html"), out_dir.join("report.json"));
    let mut lockrace = cmd::as_root(&bin, &[], true, "tracing the kernel's lock events")?;
    lockrace.arg("run").args(run_args(user_args, &html, &json));
    println!("xtask screenshot: {}", cmd::display(&lockrace));
    let ran = cmd::run(&mut lockrace, Io::Tee)?;
    let terminal = out_dir.join("terminal.txt");
    std::fs::write(&terminal, &ran.stdout)
        .with_context(|| format!("cannot write {}", terminal.display()))?;

    let png = workspace::root().join(PNG);
    if let Some(dir) = png.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let profile = fresh_profile()?;
    let mut browser = Command::new(&chromium);
    browser.args(chromium_args(&profile, &png, &html.canonicalize()?));
    println!("xtask screenshot: {}", cmd::display(&browser));
    let shot = cmd::run(&mut browser, Io::Capture);
    let _ = std::fs::remove_dir_all(&profile);
    shot?;
    if !png.is_file() {
        bail!("chromium exited without writing {}", png.display());
    }
    println!(
        "xtask screenshot: wrote {} (from {}); the terminal report is in {}",
        png.display(),
        html.display(),
        terminal.display()
    );
    Ok(())
}

/// A new, empty Chromium profile directory under the system temp dir.
fn fresh_profile() -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("lockrace-chromium-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_gets_the_outputs_and_defaults_to_the_posix_experiment() {
        let (h, j) = (Path::new("/t/r.html"), Path::new("/t/r.json"));
        assert_eq!(
            run_args(&[], h, j),
            [
                "--lock",
                "posix",
                "--share",
                "reopen",
                "--iterations",
                "2000",
                "--html",
                "/t/r.html",
                "--json",
                "/t/r.json"
            ]
        );
        let mine = vec!["--lock".to_string(), "ofd".to_string()];
        assert_eq!(
            run_args(&mine, h, j),
            [
                "--lock",
                "ofd",
                "--html",
                "/t/r.html",
                "--json",
                "/t/r.json"
            ]
        );
    }

    #[test]
    fn the_browser_is_headless_offline_and_uses_a_fresh_profile() {
        let args = chromium_args(
            Path::new("/tmp/p"),
            Path::new("/w/docs/img/report.png"),
            Path::new("/w/target/screenshot/report.html"),
        );
        for want in [
            "--headless",
            "--no-sandbox",
            "--user-data-dir=/tmp/p",
            "--screenshot=/w/docs/img/report.png",
            "--window-size=1280,2000",
            "--proxy-server=127.0.0.1:9",
        ] {
            assert!(
                args.iter().any(|a| a == want),
                "{want} missing from {args:?}"
            );
        }
        assert_eq!(
            args.last().unwrap(),
            "file:///w/target/screenshot/report.html"
        );
    }
}
