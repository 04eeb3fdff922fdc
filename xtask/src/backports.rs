//! Matching an installed backports package instead of removing it: when `apt-get install` of a
//! wanted package would remove a package this machine took from Debian backports (its version
//! carries `~bpoNN`), setup installs the wanted package's family from the same backports suite
//! so that the versions fit together.
//!
//! Seen on this project's machines (Debian 12): qemu-utils 1:10.0.2+ds-2+deb13u1~bpo12+1 is
//! installed from bookworm-backports, whose source list was removed afterwards; it `Breaks:
//! qemu-system-common (<< 1:8.0+dfsg-5~)`, so bookworm's qemu-system-x86 7.2 can only be
//! installed by removing qemu-utils. bookworm-backports has qemu-system-x86 10.0.2, which fits.
//!
//! Invariants: this never removes, upgrades the machine's other packages to backports, nor runs
//! unless a removal blocks an install and the blocked-on package is itself from backports; the
//! only packages taken from backports are those whose own install would remove something and the
//! dependencies apt names as unmet for them (`pkg/suite`, never `-t suite`, which would move the
//! whole dependency tree, mesa included, to backports); the source list it adds is one named file
//! (`/etc/apt/sources.list.d/lockrace-<suite>.list`), said on the terminal, left for later runs.
//! The parsers are pure functions of apt's and os-release's text, tested on recorded output.
use std::{fs, path::Path, process::Command};

use anyhow::{Context, Result, bail};

use crate::cmd::{self, Io};

/// The Debian mirror every machine of this project reaches.
const MIRROR: &str = "http://deb.debian.org/debian";

/// How many rounds of "apt names an unmet dependency, take it from backports too" before giving up.
const MAX_ROUNDS: usize = 8;

/// `<codename>-backports` from /etc/os-release text (Debian only).
pub fn suite(os_release: &str) -> Option<String> {
    let field = |name: &str| {
        os_release.lines().find_map(|l| {
            l.strip_prefix(name)
                .and_then(|v| v.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
        })
    };
    if field("ID").as_deref() != Some("debian") {
        return None;
    }
    field("VERSION_CODENAME")
        .filter(|c| !c.is_empty())
        .map(|c| format!("{c}-backports"))
}

/// True when an installed version came from Debian backports (`~bpo12+1` and the like).
pub fn is_backports_version(version: &str) -> bool {
    version.contains("~bpo")
}

/// The packages apt reports as unmet dependencies, from lines such as
/// ` qemu-system-x86 : Depends: seabios (> 1.16.3-1~) but 1.16.2-1 is to be installed`.
pub fn unmet_dependencies(apt_output: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in apt_output.lines() {
        // The first unmet dependency of a package follows `NAME : `, the others are indented.
        let rest = line.split_once(" : ").map_or(line, |(_, r)| r).trim_start();
        let Some(dep) = rest
            .strip_prefix("Depends:")
            .or_else(|| rest.strip_prefix("PreDepends:"))
        else {
            continue;
        };
        if let Some(name) = dep.split_whitespace().next() {
            let name = name.split(':').next().unwrap_or(name).to_string();
            if !out.contains(&name) {
                out.push(name);
            }
        }
    }
    out
}

/// True when a sources file's text already names `suite` (one-line or deb822 format).
pub fn sources_name_suite(text: &str, suite: &str) -> bool {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .any(|l| l.split_whitespace().any(|w| w == suite))
}

/// `name/suite` unless `name` already names a release.
pub fn from_suite(name: &str, suite: &str) -> String {
    if name.contains('/') {
        name.to_string()
    } else {
        format!("{name}/{suite}")
    }
}

/// The versions installed of `names` (those not installed are absent).
fn installed_versions(names: &[String]) -> Result<Vec<(String, String)>> {
    let mut q = Command::new("dpkg-query");
    q.args(["-W", "-f", "${Package} ${Version} ${db:Status-Status}\\n"])
        .args(names);
    let ran = cmd::exec(&mut q, Io::Capture)?;
    Ok(ran
        .stdout
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (name, version, status) = (w.next()?, w.next()?, w.next()?);
            (status == "installed").then(|| (name.to_string(), version.to_string()))
        })
        .collect())
}

/// One simulated install: (apt succeeded, what it would remove, its whole output).
fn simulate(specs: &[String]) -> Result<(bool, Vec<String>, String)> {
    let mut sim = Command::new("apt-get");
    sim.env("DEBIAN_FRONTEND", "noninteractive")
        .arg("-s")
        .args(crate::setup::apt_install_args(specs));
    let ran = cmd::exec(&mut sim, Io::Capture)?;
    let removed = crate::setup::apt_removals(&ran.stdout);
    Ok((
        ran.status.success(),
        removed,
        format!("{}\n{}", ran.stdout, ran.stderr),
    ))
}

/// Makes `suite` one of apt's sources (adding one named file if no source names it yet) and
/// refreshes the package lists.
fn ensure_source(suite: &str, root: bool, sudo: bool) -> Result<()> {
    let mut named = false;
    for file in ["/etc/apt/sources.list"].into_iter().map(Into::into).chain(
        fs::read_dir("/etc/apt/sources.list.d")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path()),
    ) {
        let file: std::path::PathBuf = file;
        if fs::read_to_string(&file).is_ok_and(|t| sources_name_suite(&t, suite)) {
            named = true;
        }
    }
    if !named {
        let path = format!("/etc/apt/sources.list.d/lockrace-{suite}.list");
        let line = format!("deb {MIRROR} {suite} main\n");
        if !root {
            bail!(
                "matching an installed backports package needs {suite} as an apt source (hint: as \
                 root, write `{}` to {path}, then rerun setup)",
                line.trim_end()
            );
        }
        println!(
            "setup: adding apt source {path} ({suite}: packages are taken from it only by name)"
        );
        fs::write(Path::new(&path), line).with_context(|| format!("writing {path}"))?;
    }
    let mut update = cmd::root_command(
        root,
        sudo,
        "apt-get".as_ref(),
        &[],
        false,
        "refreshing apt's lists",
    )?;
    update.arg("update");
    cmd::run(&mut update, Io::Inherit)?;
    Ok(())
}

/// The install specs (`name` or `name/suite`) that install `packages` without removing any of
/// `removed`, by taking from backports what must match a backports package; `None` when no
/// removed package came from backports (the conflict is not one this can settle).
pub fn fit(
    packages: &[String],
    removed: &[String],
    root: bool,
    sudo: bool,
) -> Result<Option<Vec<String>>> {
    if !installed_versions(removed)?
        .iter()
        .any(|(_, v)| is_backports_version(v))
    {
        return Ok(None);
    }
    let os = fs::read_to_string("/etc/os-release").unwrap_or_default();
    let Some(suite) = suite(&os) else {
        return Ok(None);
    };
    ensure_source(&suite, root, sudo)?;
    // Only the packages whose own install removes something move to backports.
    let mut specs = Vec::with_capacity(packages.len());
    for p in packages {
        let (ok, gone, _) = simulate(std::slice::from_ref(p))?;
        specs.push(if ok && gone.is_empty() {
            p.clone()
        } else {
            from_suite(p, &suite)
        });
    }
    for _ in 0..MAX_ROUNDS {
        let (ok, gone, out) = simulate(&specs)?;
        if ok && gone.is_empty() {
            return Ok(Some(specs));
        }
        let more: Vec<String> = unmet_dependencies(&out)
            .into_iter()
            .map(|d| from_suite(&d, &suite))
            .filter(|d| !specs.contains(d))
            .collect();
        if more.is_empty() {
            let tail = cmd::stderr_tail(&out, 2);
            bail!(
                "installing {} from {suite} to match the installed backports packages fails too: \
                 {tail} (hint: `apt-get install -s {}` shows why)",
                packages.join(" "),
                specs.join(" ")
            );
        }
        specs.extend(more);
    }
    bail!(
        "no set of {suite} packages installs {} without removing {} (hint: install matching \
         versions yourself, then rerun setup)",
        packages.join(" "),
        removed.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_suite_comes_from_debians_codename() {
        let bookworm = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
                        VERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n";
        assert_eq!(suite(bookworm).as_deref(), Some("bookworm-backports"));
        let ubuntu = "NAME=\"Ubuntu\"\nID=ubuntu\nID_LIKE=debian\nVERSION_CODENAME=noble\n";
        assert_eq!(suite(ubuntu), None);
        assert_eq!(suite("ID=debian\n"), None);
    }

    #[test]
    fn backports_versions_are_recognised() {
        assert!(is_backports_version("1:10.0.2+ds-2+deb13u1~bpo12+1"));
        assert!(!is_backports_version("1:7.2+dfsg-7+deb12u18+b3"));
    }

    #[test]
    fn unmet_dependencies_are_read_from_apts_words() {
        // apt 2.6.1 (Debian 12), `apt-get install -s --no-remove --no-install-recommends
        // qemu-system-x86/bookworm-backports qemu-system-common/bookworm-backports
        // qemu-system-data/bookworm-backports` on a machine with qemu-utils from backports.
        let out = "Reading package lists...\nBuilding dependency tree...\n\
Selected version '1:10.0.2+ds-2+deb13u1~bpo12+1' (Debian Backports:oldstable-backports [amd64]) for 'qemu-system-x86'\n\
Some packages could not be installed. This may mean that you have\n\
The following packages have unmet dependencies:\n \
qemu-system-x86 : Depends: seabios (> 1.16.3-1~) but 1.16.2-1 is to be installed\n                   \
Depends: libfoo1:amd64 but it is not going to be installed\n\
E: Unable to correct problems, you have held broken packages.\n";
        assert_eq!(unmet_dependencies(out), vec!["seabios", "libfoo1"]);
        assert!(
            unmet_dependencies("Inst seabios (1.16.3-2~bpo12+1 Debian Backports)\n").is_empty()
        );
    }

    #[test]
    fn a_suite_already_in_the_sources_is_seen_in_both_formats() {
        let one_line = "# deb http://deb.debian.org/debian bookworm-backports main\n\
                        deb http://deb.debian.org/debian bookworm main\n";
        assert!(!sources_name_suite(one_line, "bookworm-backports"));
        let with = "deb http://deb.debian.org/debian bookworm-backports main contrib\n";
        assert!(sources_name_suite(with, "bookworm-backports"));
        let deb822 = "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm \
                      bookworm-updates bookworm-backports\nComponents: main\n";
        assert!(sources_name_suite(deb822, "bookworm-backports"));
    }

    #[test]
    fn specs_name_the_suite_once() {
        assert_eq!(
            from_suite("seabios", "bookworm-backports"),
            "seabios/bookworm-backports"
        );
        assert_eq!(
            from_suite("seabios/bookworm-backports", "x"),
            "seabios/bookworm-backports"
        );
    }
}
