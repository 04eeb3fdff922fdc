//! The house rules of lockrace/src, checked on the source text (docs/ARCHITECTURE.md, "Floors"):
//! - every module sits on a floor and imports only from floors below its own: each `crate::`
//!   and `super::` path outside a module's own top-level tree must lead down (a path inside
//!   the same tree, e.g. `cmd::run` -> `cmd::record`, is free); plus the few rules inside a
//!   tree (the report schema imports nothing of the report code; the metrics of `compare` do
//!   not import the HTML page);
//! - every source file starts with a `//!` header and has at most 900 lines.
//!
//! Test modules (`#[cfg(test)] mod tests`, always at the end of a file) are not part of the
//! graph: a test may build its input with anything. The scan reads code only: comments,
//! strings and character literals are skipped by a small lexer.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Top to bottom. A module's floor is the floor of its top-level tree.
const FLOORS: &[(&str, u32)] = &[
    ("cli", 8),
    ("cmd", 7),
    ("workload", 6),
    ("jsonl", 5),
    ("pipeline", 5),
    ("report", 4),
    ("analysis", 3),
    ("capture", 3),
    ("redact", 3),
    ("events", 2),
    ("progress", 2),
    ("signals", 1),
    ("error", 0),
    ("host", 0),
];

/// Imports forbidden inside a tree: (importer prefix, imported prefix).
const INSIDE: &[(&str, &str)] = &[
    // The schema is what every part of the report is built from.
    ("report::model", "report::"),
    // The comparison's figures are read by the page, never the other way round.
    ("report::compare", "report::html"),
];

const MAX_LINES: usize = 900;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` -> `a::b`, `src/a/mod.rs` -> `a`; None for the crate roots.
fn module_of(rel: &Path) -> Option<String> {
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    match parts.as_slice() {
        [one] if one == "lib" || one == "main" => None,
        _ => Some(parts.join("::")),
    }
}

/// The code of `text` with comments, strings and character literals blanked (newlines kept),
/// cut at the test module.
fn code_of(text: &str) -> String {
    let text = match text.find("\n#[cfg(test)]\nmod tests") {
        Some(i) => &text[..i],
        None => text,
    };
    let b: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if b[i] == '\n' {
                        out.push('\n');
                    }
                    i += 1;
                }
            }
        } else if (c == 'r' || c == 'b')
            && !(i > 0 && ident(b[i - 1]))
            && raw_string_start(&b[i..]).is_some()
        {
            let (skip, hashes) = raw_string_start(&b[i..]).unwrap();
            i += skip;
            loop {
                if i >= b.len() {
                    break;
                }
                if b[i] == '"' && (0..hashes).all(|k| b.get(i + 1 + k) == Some(&'#')) {
                    i += 1 + hashes;
                    break;
                }
                if b[i] == '\n' {
                    out.push('\n');
                }
                i += 1;
            }
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                if b[i] == '\\' {
                    i += 1;
                }
                if b.get(i) == Some(&'\n') {
                    out.push('\n');
                }
                i += 1;
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A character literal ('x', '\n', '\u{..}', '"') or a lifetime ('a).
            if next == Some('\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// `r"`, `r#"`, `br##"`: the length of the opening and the number of `#`.
fn raw_string_start(b: &[char]) -> Option<(usize, usize)> {
    let mut i = 0;
    if b.first() == Some(&'b') {
        i += 1;
    }
    if b.get(i) != Some(&'r') {
        return None;
    }
    i += 1;
    let mut hashes = 0;
    while b.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    (b.get(i) == Some(&'"')).then_some((i + 1, hashes))
}

/// Every path of a `use` tree starting at `s` (just after `crate::` or `super::`), e.g.
/// `{a::{b, c}, d as e}` -> `a::b`, `a::c`, `d`; `self` in a group is the group's head.
fn paths_at(s: &str) -> Vec<String> {
    let s = s.trim_start();
    if let Some(rest) = s.strip_prefix('{') {
        let mut out = Vec::new();
        let mut depth = 0;
        let mut item = String::new();
        for c in rest.chars() {
            match c {
                '{' => depth += 1,
                '}' if depth == 0 => break,
                '}' => depth -= 1,
                ',' if depth == 0 => {
                    out.extend(paths_at(&item));
                    item.clear();
                    continue;
                }
                _ => {}
            }
            item.push(c);
        }
        out.extend(paths_at(&item));
        return out;
    }
    let path: String = s
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
        .collect();
    if path.is_empty() {
        return Vec::new();
    }
    let head = path.trim_end_matches(':');
    let head = if head == "self" { "" } else { head };
    let rest = &s[path.len()..];
    if path.ends_with("::") && rest.trim_start().starts_with('{') {
        paths_at(rest)
            .into_iter()
            .map(|p| match (head.is_empty(), p.is_empty()) {
                (_, true) => head.to_string(),
                (true, false) => p,
                (false, false) => format!("{head}::{p}"),
            })
            .collect()
    } else {
        vec![head.to_string()]
    }
}

/// The crate paths `module`'s code names: `crate::x::y` as `x::y`, `super::z` resolved.
fn imports(module: &str, code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let here: Vec<&str> = module.split("::").collect();
    let bytes = code.as_bytes();
    for (kw, is_super) in [("crate::", false), ("super::", true)] {
        let mut from = 0;
        while let Some(pos) = code[from..].find(kw) {
            let at = from + pos;
            from = at + kw.len();
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            if is_super && at >= 7 && &code[at - 7..at] == "super::" {
                continue; // counted from the first `super::` of a chain
            }
            let mut rest = &code[at + kw.len()..];
            let mut base: Vec<&str> = if is_super {
                here[..here.len().saturating_sub(1)].to_vec()
            } else {
                Vec::new()
            };
            while is_super && rest.starts_with("super::") {
                base.pop();
                rest = &rest["super::".len()..];
            }
            for p in paths_at(rest) {
                let mut full: Vec<&str> = base.clone();
                full.extend(p.split("::").filter(|s| !s.is_empty()));
                if !full.is_empty() {
                    out.insert(full.join("::"));
                }
            }
        }
    }
    out
}

fn floor(module: &str) -> Option<u32> {
    let top = module.split("::").next()?;
    FLOORS.iter().find(|(m, _)| *m == top).map(|(_, f)| *f)
}

/// `a::b::c` is inside `prefix` `a::b` (or is it); `a::bc` is not.
fn under(path: &str, prefix: &str) -> bool {
    match prefix.strip_suffix("::") {
        Some(p) => path.starts_with(prefix) || path == p,
        None => path == prefix || path.starts_with(&format!("{prefix}::")),
    }
}

struct Source {
    rel: PathBuf,
    module: Option<String>,
    text: String,
}

fn sources() -> Vec<Source> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    assert!(files.len() > 20, "{files:?}");
    files
        .into_iter()
        .map(|p| {
            let rel = p.strip_prefix(src()).unwrap().to_path_buf();
            Source {
                module: module_of(&rel),
                text: std::fs::read_to_string(&p).unwrap(),
                rel,
            }
        })
        .collect()
}

#[test]
fn no_module_imports_from_a_floor_above_its_own() {
    let mut violations = Vec::new();
    let mut edges = 0;
    for s in sources() {
        let Some(module) = &s.module else { continue };
        let Some(mine) = floor(module) else {
            violations.push(format!(
                "{}: module `{module}` has no floor (add it to FLOORS here and to \
                 docs/ARCHITECTURE.md)",
                s.rel.display()
            ));
            continue;
        };
        let top = module.split("::").next().unwrap();
        for target in imports(module, &code_of(&s.text)) {
            let target_top = target.split("::").next().unwrap();
            edges += 1;
            if target_top == top {
                for (from, to) in INSIDE {
                    if under(module, from) && under(&target, to) && !under(&target, from) {
                        violations.push(format!(
                            "{}: `{module}` imports `{target}` (forbidden inside `{top}`)",
                            s.rel.display()
                        ));
                    }
                }
                continue;
            }
            match floor(&target) {
                Some(theirs) if theirs < mine => {}
                Some(theirs) => violations.push(format!(
                    "{}: `{module}` (floor {mine}) imports `{target}` (floor {theirs})",
                    s.rel.display()
                )),
                None => violations.push(format!(
                    "{}: `{module}` imports `{target}`, which has no floor",
                    s.rel.display()
                )),
            }
        }
    }
    assert!(
        edges > 50,
        "the scan found only {edges} imports: is it still reading the code?"
    );
    assert!(
        violations.is_empty(),
        "{} upward imports:\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn every_source_file_has_a_header_and_at_most_900_lines() {
    let mut bad = Vec::new();
    for s in sources() {
        if !s.text.starts_with("//!") {
            bad.push(format!(
                "{}: does not start with a `//!` header",
                s.rel.display()
            ));
        }
        let lines = s.text.lines().count();
        if lines > MAX_LINES {
            bad.push(format!(
                "{}: {lines} lines (at most {MAX_LINES})",
                s.rel.display()
            ));
        }
    }
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_scanner_reads_code_not_comments_or_strings() {
    let code = code_of(
        "//! crate::a in a comment\nuse crate::{b::{C, d}, e as f, x::{self, y::{z}}};\nlet s = \"crate::g\";\n\
         let r = r#\"crate::h\"#; let c = '\"'; let q = b'\\''; fn x<'a>() {}\n\
         /* crate::i /* nested */ */ super::super::j::k(); crate::l::m();\n\
         #[cfg(test)]\nmod tests { use crate::n; }\n",
    );
    let got = imports("p::q::r", &code);
    let want: BTreeSet<String> = ["b::C", "b::d", "e", "x", "x::y::z", "p::j::k", "l::m"]
        .into_iter()
        .map(String::from)
        .collect();
    assert_eq!(got, want, "{code}");
    assert!(under("report::html::svg", "report::html"));
    assert!(!under("report::htmlx", "report::html"));
    assert!(under("report::build", "report::"));
}
