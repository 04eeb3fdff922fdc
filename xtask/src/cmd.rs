//! The one way xtask runs other programs: [`exec`] starts a command with the chosen stdio and
//! [`run`] additionally turns a non-zero exit into an error that names the command, its exit
//! status and the tail of its stderr (when captured).
//!
//! Invariants: no shell in between (arguments are passed as is, never through `sh -c`); every
//! failure message is one line that says which command failed and how.
use std::{
    ffi::OsStr,
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context, Result, anyhow};

/// Where a command's output goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Io {
    /// stdout and stderr go to our terminal.
    Inherit,
    /// stdout and stderr are captured (nothing is printed).
    Capture,
    /// stdout is captured silently; stderr goes to our terminal (e.g. cargo's JSON messages).
    CaptureStdout,
    /// stdout is printed line by line as it arrives and also captured; stderr goes to our terminal.
    Tee,
}

/// What a finished command left behind (captured streams are empty when not captured).
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// The command line as a user would type it: the variables set for it, the program and its
/// arguments, quoted when needed.
pub fn display(cmd: &Command) -> String {
    let mut parts: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some(format!("{}={}", k.to_string_lossy(), quote(v?))))
        .collect();
    parts.push(quote(cmd.get_program()));
    parts.extend(cmd.get_args().map(quote));
    parts.join(" ")
}

fn quote(s: &OsStr) -> String {
    let s = s.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Runs `cmd` to completion with the given stdio; only failing to start it is an error.
pub fn exec(cmd: &mut Command, io: Io) -> Result<Ran> {
    let shown = display(cmd);
    match io {
        Io::Inherit => {
            let status = cmd
                .status()
                .map_err(|e| start_error(&shown, cmd.get_program(), e))?;
            Ok(Ran {
                status,
                stdout: String::new(),
                stderr: String::new(),
            })
        }
        Io::Capture | Io::CaptureStdout => {
            if io == Io::CaptureStdout {
                cmd.stderr(Stdio::inherit());
            }
            let out = cmd
                .stdin(Stdio::null())
                .output()
                .map_err(|e| start_error(&shown, cmd.get_program(), e))?;
            Ok(Ran {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            })
        }
        Io::Tee => {
            let mut child = cmd
                .stdout(Stdio::piped())
                .spawn()
                .map_err(|e| start_error(&shown, cmd.get_program(), e))?;
            let mut captured = String::new();
            if let Some(pipe) = child.stdout.take() {
                captured = tee(BufReader::new(pipe), &mut std::io::stdout().lock())
                    .with_context(|| format!("reading the output of `{shown}`"))?;
            }
            let status = child
                .wait()
                .with_context(|| format!("waiting for `{shown}`"))?;
            Ok(Ran {
                status,
                stdout: captured,
                stderr: String::new(),
            })
        }
    }
}

/// Copies `input` to `sink` line by line as it arrives and returns everything read. A sink that
/// fails (e.g. a closed stdout under `| head`) must not stop the command or the capture.
pub fn tee(mut input: impl BufRead, sink: &mut impl Write) -> std::io::Result<String> {
    let mut captured = String::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(captured);
        }
        let _ = sink.write_all(&line).and_then(|()| sink.flush());
        captured.push_str(&String::from_utf8_lossy(&line));
    }
}

/// Runs `cmd` and fails unless it exits with status 0.
pub fn run(cmd: &mut Command, io: Io) -> Result<Ran> {
    let ran = exec(cmd, io)?;
    if ran.status.success() {
        Ok(ran)
    } else {
        Err(failure(&display(cmd), ran.status, &ran.stderr))
    }
}

/// Runs `cmd` with captured output and returns its stdout, failing unless it exits with 0.
pub fn stdout_of(cmd: &mut Command) -> Result<String> {
    Ok(run(cmd, Io::Capture)?.stdout)
}

/// The error for a command that ran and failed: one line, with the last stderr lines if any.
pub fn failure(shown: &str, status: ExitStatus, stderr: &str) -> anyhow::Error {
    let tail = stderr_tail(stderr, 3);
    if tail.is_empty() {
        anyhow!("`{shown}` failed ({})", describe(status))
    } else {
        anyhow!("`{shown}` failed ({}): {tail}", describe(status))
    }
}

/// "exit status 2" or "killed by signal 9".
pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("killed by signal {sig}"),
        (None, None) => status.to_string(),
    }
}

/// The last `n` non-empty lines of `stderr`, joined with " | " so the error stays on one line.
pub fn stderr_tail(stderr: &str, n: usize) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

fn start_error(shown: &str, program: &OsStr, e: std::io::Error) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow!(
            "cannot run `{shown}`: {} not found in PATH",
            program.to_string_lossy()
        )
    } else {
        anyhow!("cannot run `{shown}`: {e}")
    }
}

/// The first `name` in PATH that is an executable file.
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

pub fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// True when we run as root (effective uid 0).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command that runs `program` as root: directly when we are root, through `sudo` otherwise
/// (`sudo -E` when `keep_env`, and `env K=V` carrying `envs`, since sudo may reset the
/// environment). Fails when neither works.
pub fn as_root(
    program: impl AsRef<OsStr>,
    envs: &[(&str, &str)],
    keep_env: bool,
    why: &str,
) -> Result<Command> {
    root_command(
        is_root(),
        which("sudo").is_some(),
        program.as_ref(),
        envs,
        keep_env,
        why,
    )
}

/// Pure part of [`as_root`].
pub fn root_command(
    root: bool,
    have_sudo: bool,
    program: &OsStr,
    envs: &[(&str, &str)],
    keep_env: bool,
    why: &str,
) -> Result<Command> {
    if root {
        let mut cmd = Command::new(program);
        cmd.envs(envs.iter().copied());
        return Ok(cmd);
    }
    if !have_sudo {
        return Err(anyhow!(
            "{why} needs root and sudo is not installed (hint: run this command as root)"
        ));
    }
    let mut cmd = Command::new("sudo");
    if keep_env {
        cmd.arg("-E");
    }
    if !envs.is_empty() {
        cmd.arg("env");
        cmd.args(envs.iter().map(|(k, v)| format!("{k}={v}")));
    }
    cmd.arg(program);
    Ok(cmd)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_needs_it() {
        let mut cmd = Command::new("cargo");
        cmd.args(["test", "--test", "root_*", "it's", ""]);
        cmd.env("LLVM_PREFIX", "/usr/lib/llvm-22");
        assert_eq!(
            display(&cmd),
            r"LLVM_PREFIX=/usr/lib/llvm-22 cargo test --test 'root_*' 'it'\''s' ''"
        );
    }

    #[test]
    fn root_commands_run_directly_as_root_and_through_sudo_otherwise() {
        let envs = [("LOCKRACE_REQUIRE_ROOT_TESTS", "1")];
        let p = OsStr::new("/t/root_x");
        let direct = root_command(true, false, p, &envs, true, "x").unwrap();
        assert_eq!(display(&direct), "LOCKRACE_REQUIRE_ROOT_TESTS=1 /t/root_x");
        let sudo = root_command(false, true, p, &envs, true, "x").unwrap();
        assert_eq!(
            display(&sudo),
            "sudo -E env LOCKRACE_REQUIRE_ROOT_TESTS=1 /t/root_x"
        );
        let plain = root_command(false, true, OsStr::new("mount"), &[], false, "x").unwrap();
        assert_eq!(display(&plain), "sudo mount");
        let err = root_command(false, false, p, &[], false, "mounting tracefs").unwrap_err();
        assert_eq!(
            err.to_string(),
            "mounting tracefs needs root and sudo is not installed (hint: run this command as root)"
        );
    }

    #[test]
    fn stderr_tail_keeps_last_non_empty_lines_on_one_line() {
        assert_eq!(stderr_tail("a\n\nb\n  c  \n\n", 2), "b | c");
        assert_eq!(stderr_tail("", 3), "");
        assert_eq!(stderr_tail("only\n", 3), "only");
    }

    #[test]
    fn failing_command_error_names_command_status_and_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo first >&2; echo last >&2; exit 3"]);
        let err = run(&mut cmd, Io::Capture).unwrap_err().to_string();
        assert_eq!(
            err,
            "`sh -c 'echo first >&2; echo last >&2; exit 3'` failed (exit status 3): first | last"
        );
    }

    #[test]
    fn missing_program_is_a_one_line_error() {
        let err = run(&mut Command::new("xtask-no-such-program"), Io::Capture)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "cannot run `xtask-no-such-program`: xtask-no-such-program not found in PATH"
        );
    }

    #[test]
    fn tee_copies_and_captures_every_line() {
        let mut sink = Vec::new();
        let got = tee(&b"one\ntwo\nno newline"[..], &mut sink).unwrap();
        assert_eq!(got, "one\ntwo\nno newline");
        assert_eq!(sink, b"one\ntwo\nno newline");
    }

    #[test]
    fn capture_collects_stdout_and_stderr() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo out; echo err >&2"]);
        let ran = run(&mut cmd, Io::Capture).unwrap();
        assert_eq!(
            (ran.stdout.as_str(), ran.stderr.as_str()),
            ("out\n", "err\n")
        );
    }
}
