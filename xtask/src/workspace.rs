//! Facts about the workspace that xtask needs: its root, cargo's target directory, the test
//! targets of the default members, and the root-only test targets (lockrace/tests/root/, the
//! binary with a module per area; a lockrace/tests/root_*.rs file would be one too).
//!
//! Invariant: the root is where this crate was compiled from, so xtask works from any current
//! directory; everything else comes from `cargo metadata`, never from guessing paths.
use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, Result, anyhow};
use serde_json::Value;

use crate::cmd;

/// The workspace root (the parent of xtask/).
pub fn root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask.parent().unwrap_or(xtask).to_path_buf()
}

/// A `cargo ...` command run from the workspace root.
pub fn cargo() -> Command {
    let mut c = Command::new("cargo");
    c.current_dir(root());
    c
}

/// What xtask uses from `cargo metadata --no-deps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    pub target_dir: PathBuf,
    /// Integration-test targets of the default members: (package, target name).
    pub test_targets: Vec<(String, String)>,
}

pub fn metadata() -> Result<Metadata> {
    let out = cmd::stdout_of(cargo().args(["metadata", "--no-deps", "--format-version", "1"]))?;
    parse_metadata(&out)
}

/// Pure part of [`metadata`].
pub fn parse_metadata(json: &str) -> Result<Metadata> {
    let v: Value = serde_json::from_str(json).context("cargo metadata printed invalid json")?;
    let target_dir = v["target_directory"]
        .as_str()
        .ok_or_else(|| anyhow!("cargo metadata has no target_directory"))?
        .into();
    let default: Vec<&str> = v["workspace_default_members"]
        .as_array()
        .or_else(|| v["workspace_members"].as_array())
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut test_targets = Vec::new();
    for pkg in v["packages"].as_array().into_iter().flatten() {
        if !pkg["id"].as_str().is_some_and(|id| default.contains(&id)) {
            continue;
        }
        let pkg_name = pkg["name"].as_str().unwrap_or_default();
        for t in pkg["targets"].as_array().into_iter().flatten() {
            let is_test = t["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "test"));
            if let (true, Some(name)) = (is_test, t["name"].as_str()) {
                test_targets.push((pkg_name.to_string(), name.to_string()));
            }
        }
    }
    Ok(Metadata {
        target_dir,
        test_targets,
    })
}

/// Names of the root-only integration test targets: `root` (lockrace/tests/root/main.rs) and
/// any lockrace/tests/root_*.rs or root_*/main.rs, sorted.
pub fn root_tests() -> Result<Vec<String>> {
    let dir = root().join("lockrace/tests");
    let names = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok())
            .map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                // A directory is a test target when it holds main.rs (cargo's layout).
                if e.path().join("main.rs").is_file() {
                    format!("{name}/main.rs")
                } else {
                    name
                }
            })
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(anyhow!("cannot list {}: {e}", dir.display())),
    };
    Ok(root_test_names(&names))
}

/// Pure part of [`root_tests`]: entries of lockrace/tests (`NAME.rs` files, `NAME/main.rs` for
/// directories that hold one) whose target name is `root` or starts with `root_`, as sorted
/// target names.
pub fn root_test_names(file_names: &[String]) -> Vec<String> {
    let mut out: Vec<String> = file_names
        .iter()
        .filter_map(|n| n.strip_suffix("/main.rs").or_else(|| n.strip_suffix(".rs")))
        .filter(|stem| !stem.contains('/'))
        .filter(|stem| *stem == "root" || stem.starts_with("root_"))
        .map(String::from)
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_tests_are_the_root_targets() {
        let files = [
            "root_capture.rs",
            "cli.rs",
            "root_.rs",
            "root_x.rs.orig",
            "fixtures",
            "aroot_y.rs",
            "root_attach.rs",
        ]
        .map(String::from);
        assert_eq!(
            root_test_names(&files),
            vec!["root_", "root_attach", "root_capture"]
        );
        let layout = [
            "root/main.rs",
            "integration/main.rs",
            "support",
            "rootish.rs",
            "fuzz_decoders.rs",
        ]
        .map(String::from);
        assert_eq!(root_test_names(&layout), vec!["root"]);
    }

    #[test]
    fn the_real_root_tests_are_found() {
        // Without them `cargo xtask test` would skip the root phase ("none yet").
        assert!(root_tests().unwrap().contains(&"root".to_string()));
    }

    #[test]
    fn metadata_keeps_test_targets_of_default_members_only() {
        let json = r#"{
          "target_directory": "/w/target",
          "workspace_members": ["a 0.1", "ebpf 0.1"],
          "workspace_default_members": ["a 0.1"],
          "packages": [
            {"id": "a 0.1", "name": "a", "targets": [
              {"name": "a", "kind": ["lib"]},
              {"name": "cli", "kind": ["test"]},
              {"name": "root_capture", "kind": ["test"]}
            ]},
            {"id": "ebpf 0.1", "name": "ebpf", "targets": [{"name": "t", "kind": ["test"]}]}
          ]
        }"#;
        let m = parse_metadata(json).unwrap();
        assert_eq!(m.target_dir, PathBuf::from("/w/target"));
        assert_eq!(
            m.test_targets,
            vec![
                ("a".to_string(), "cli".to_string()),
                ("a".to_string(), "root_capture".to_string())
            ]
        );
        assert!(parse_metadata("{}").is_err());
        assert!(parse_metadata("not json").is_err());
    }

    #[test]
    fn the_real_workspace_root_has_lockrace() {
        assert!(root().join("lockrace/build.rs").is_file());
    }
}
