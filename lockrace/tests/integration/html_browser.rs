//! The HTML report in a real browser: `lockrace report` renders the recorded posix/reopen
//! fixture (lockrace/tests/fixtures/events/posix-reopen.jsonl) to HTML, headless Chromium loads
//! it with the network made unusable (every host name resolves to nothing, every connection goes
//! to a dead proxy), and the test checks
//! - the file is self-contained (no URL, no script, no outside src/href) and the browser made no
//!   request on its behalf (its network log, proven able to see a page's requests on a control
//!   page first);
//! - the DOM the browser built: the verdict, one SVG lane per task of the worst handoff, one
//!   wakeup arrow per wakeup in it, compared with the JSON report of the same run;
//! - a screenshot that is not blank: many distinct colours, among them the span colours.
//!
//! Chromium is required: `cargo xtask setup` installs it (Debian's `chromium`); without it this
//! test fails and says so. It needs no root.
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::html_support::assert_self_contained;

/// The browser binary, or a failure that says how to get it.
fn chromium() -> PathBuf {
    for name in ["chromium", "chromium-browser"] {
        for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
            let p = dir.join(name);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!(
        "chromium is not installed, and the HTML report test needs a real browser: run \
         `cargo xtask setup` (it installs Debian's chromium package)"
    );
}

/// Run `cmd` to completion with a time limit, capturing stdout and stderr.
fn run_with_timeout(mut cmd: Command, limit: Duration) -> Output {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start chromium");
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out_pipe.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err_pipe.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait for chromium") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

/// Headless Chromium with no usable network, logging every URL request it makes.
fn browser(profile: &Path) -> Command {
    let mut cmd = Command::new(chromium());
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        // Any name resolves to nothing, any connection goes to a closed port: a fetch fails.
        "--host-resolver-rules=MAP * ~NOTFOUND",
        "--proxy-server=127.0.0.1:9",
        "--enable-logging=stderr",
        "--v=0",
        // The network service logs each request it is asked to make (with its URL).
        "--vmodule=network_delegate=1",
    ]);
    cmd.arg(format!("--user-data-dir={}", profile.display()));
    cmd
}

const REQUEST_LOG: &str = "NotifyBeforeURLRequest: ";

/// URLs the browser was asked to fetch.
fn requested_urls(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter_map(|l| l.split_once(REQUEST_LOG))
        .map(|(_, url)| url.trim().to_string())
        .collect()
}

/// Requests Chromium makes for itself whatever the page (clock, updates, accounts), by host.
fn browser_own(url: &str) -> bool {
    let host = url
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', ':']).next().unwrap_or(""))
        .unwrap_or("");
    [
        "google.com",
        "googleapis.com",
        "gstatic.com",
        "gvt1.com",
        "googleusercontent.com",
    ]
    .iter()
    .any(|d| host == *d || host.ends_with(&format!(".{d}")))
}

fn dump_dom(profile: &Path, page: &Path) -> (String, String) {
    let mut cmd = browser(profile);
    cmd.arg("--dump-dom").arg(file_url(page));
    let out = run_with_timeout(cmd, Duration::from_secs(90));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "chromium --dump-dom failed ({}): {}",
        out.status,
        tail(&stderr)
    );
    (String::from_utf8_lossy(&out.stdout).into_owned(), stderr)
}

fn file_url(p: &Path) -> String {
    format!("file://{}", p.canonicalize().unwrap().display())
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Text as Chromium serializes a text node (only &, <, > and no-break spaces are escaped).
fn dom_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\u{a0}', "&nbsp;")
}

/// The part of `dom` from the element starting with `open` to its closing `</tag>`.
fn element<'a>(dom: &'a str, open: &str, tag: &str) -> &'a str {
    let start = dom
        .find(open)
        .unwrap_or_else(|| panic!("{open} not in the DOM"));
    let end = dom[start..]
        .find(&format!("</{tag}>"))
        .unwrap_or_else(|| panic!("{open} is never closed"));
    &dom[start..start + end]
}

/// Values of `attr` on every element opened with `open` (e.g. `<g class="lane"`).
fn attrs(part: &str, open: &str, attr: &str) -> Vec<String> {
    part.match_indices(open)
        .map(|(i, _)| {
            let tag_end = part[i..].find('>').unwrap() + i;
            let tag = &part[i..tag_end];
            let key = format!("{attr}=\"");
            let v = tag
                .find(&key)
                .unwrap_or_else(|| panic!("{tag} has no {attr}"));
            let rest = &tag[v + key.len()..];
            rest[..rest.find('"').unwrap()].to_string()
        })
        .collect()
}

#[test]
fn the_html_report_renders_in_chromium_without_network() {
    let dir = tempfile::tempdir().unwrap();
    let fixture =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/events/posix-reopen.jsonl");
    let (html_path, json_path) = (
        dir.path().join("report.html"),
        dir.path().join("report.json"),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_lockrace"))
        .arg("report")
        .arg(&fixture)
        .arg("--json")
        .arg(&json_path)
        .arg("--html")
        .arg(&html_path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "lockrace report failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let html = std::fs::read_to_string(&html_path).unwrap();
    assert_self_contained(&html);
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json_path).unwrap()).unwrap();

    // The detector works: a control page that does fetch shows up in the request log, and its
    // fetches fail.
    let control = dir.path().join("control.html");
    std::fs::write(
        &control,
        "<!DOCTYPE html><html><body><p>control</p>\
         <img src=\"https://lockrace-control.invalid/x.png\"></body></html>",
    )
    .unwrap();
    let (_, ctl_err) = dump_dom(&dir.path().join("profile-control"), &control);
    assert!(
        requested_urls(&ctl_err)
            .iter()
            .any(|u| u.contains("lockrace-control.invalid")),
        "chromium's request log did not show the control page's fetch; the no-network check \
         would prove nothing:\n{}",
        tail(&ctl_err)
    );

    // The report: nothing requested on its behalf, nothing failed.
    let (dom, stderr) = dump_dom(&dir.path().join("profile-dom"), &html_path);
    let foreign: Vec<String> = requested_urls(&stderr)
        .into_iter()
        .filter(|u| !u.starts_with("file:") && !browser_own(u))
        .collect();
    assert!(
        foreign.is_empty(),
        "loading the report requested {foreign:?}"
    );
    let failed: Vec<&str> = stderr.lines().filter(|l| l.contains("net::ERR")).collect();
    assert!(failed.is_empty(), "something failed to load: {failed:?}");

    // The verdict, sentence by sentence.
    let verdict = doc["verdict"].as_array().unwrap();
    assert!(!verdict.is_empty());
    for line in verdict {
        let want = format!(
            "<p class=\"verdict-line\">{}</p>",
            dom_text(line.as_str().unwrap())
        );
        assert!(
            dom.contains(&want),
            "verdict line missing from the DOM: {want}"
        );
    }
    assert!(dom.contains("self_barge"), "the self-barges are not named");

    // The worst handoff: one lane per task in it, one arrow per wakeup in it.
    let worst = &doc["worst_handoffs"][0];
    let figure = element(&dom, "<figure class=\"handoff\" data-rank=\"1\"", "figure");
    let svg = element(figure, "<svg class=\"timeline\"", "svg");
    let lanes: Vec<u32> = attrs(svg, "<g class=\"lane\"", "data-tid")
        .iter()
        .map(|t| t.parse().unwrap())
        .collect();
    let tid = |v: &serde_json::Value| v.as_u64().unwrap() as u32;
    let mut tasks = BTreeSet::new();
    tasks.insert(tid(&worst["releaser"]["tid"]));
    for w in worst["waiters"].as_array().unwrap() {
        tasks.insert(tid(&w["tid"]));
    }
    if !worst["next"].is_null() {
        tasks.insert(tid(&worst["next"]["tid"]));
    }
    for t in worst["timeline"].as_array().unwrap() {
        tasks.insert(tid(&t["tid"]));
    }
    assert_eq!(
        lanes.iter().copied().collect::<BTreeSet<u32>>(),
        tasks,
        "lanes {lanes:?}"
    );
    assert_eq!(lanes.len(), tasks.len(), "one lane per task: {lanes:?}");
    assert!(tasks.len() >= 2, "a handoff has a releaser and a waiter");

    let woke: Vec<(u32, u32)> = worst["wakeups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| (tid(&w["waker_tid"]), tid(&w["wakee_tid"])))
        .collect();
    let woke_items = worst["timeline"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["event"] == "woke")
        .count();
    assert_eq!(woke.len(), woke_items, "a wakeup per `woke` timeline item");
    assert!(
        !woke.is_empty(),
        "the worst handoff of this fixture has a wakeup"
    );
    let from = attrs(svg, "<line class=\"wakeup\"", "data-from");
    let to = attrs(svg, "<line class=\"wakeup\"", "data-to");
    let arrows: Vec<(u32, u32)> = from
        .iter()
        .zip(&to)
        .map(|(f, t)| (f.parse().unwrap(), t.parse().unwrap()))
        .collect();
    assert_eq!(arrows, woke, "one arrow per wakeup, waker -> wakee");
    assert!(svg.contains("marker-end=\"url(#"), "arrows have heads");
    assert!(svg.contains("class=\"span blocked\""), "blocked span drawn");
    assert!(svg.contains("class=\"span holding\""), "holding span drawn");
    assert!(svg.contains("<path class=\"grant\""), "the grant is drawn");
    assert!(svg.contains(" µs</text>"), "a time axis in µs");
    // As many figures as asked for by default (5 of the fixture's 8).
    assert_eq!(dom.matches("<figure class=\"handoff\"").count(), 5);
    assert_eq!(dom.matches("<svg class=\"histogram").count(), 2);

    // A screenshot that is not blank.
    let png_path = dir.path().join("report.png");
    let mut cmd = browser(&dir.path().join("profile-shot"));
    cmd.arg(format!("--screenshot={}", png_path.display()))
        .arg("--window-size=1280,2000")
        .arg(file_url(&html_path));
    let out = run_with_timeout(cmd, Duration::from_secs(90));
    assert!(
        out.status.success() && png_path.exists(),
        "chromium --screenshot failed ({}): {}",
        out.status,
        tail(&String::from_utf8_lossy(&out.stderr))
    );
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(&png_path).unwrap(),
    ));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (1280, 2000));
    let channels = info.color_type.samples();
    assert!(channels >= 3, "{:?}", info.color_type);
    let colours: BTreeSet<[u8; 3]> = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    assert!(
        colours.len() > 50,
        "the screenshot has only {} colours: blank?",
        colours.len()
    );
    // The span colours of the stylesheet: holding, runnable, blocked.
    for (name, rgb) in [
        ("holding", [0x2b, 0x7b, 0xb9]),
        ("runnable", [0xf0, 0xa2, 0x02]),
        ("blocked", [0xd6, 0x45, 0x45]),
    ] {
        assert!(
            colours.contains(&rgb),
            "no {name} bar ({rgb:02x?}) in the screenshot"
        );
    }
}
