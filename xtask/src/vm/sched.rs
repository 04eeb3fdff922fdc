//! Scheduler features in the VM (`--sched-features NO_WAKEUP_PREEMPTION,...`): the names as
//! the user gives them, the /init fragment that applies them in the guest, and the host's
//! reading of what the guest reports back.
//!
//! Only the guest kernel can say which features it has (they differ between kernels: 6.1's CFS
//! has GENTLE_FAIR_SLEEPERS, 6.12's EEVDF has RUN_TO_PARITY), so validation happens there: /init
//! mounts debugfs, prints the features it finds, and writes the requested ones only when every
//! name is known (the base name, without `NO_`, is in the list), then prints the features in
//! force. Invariants: a name is `[A-Z][A-Z0-9_]*` with an optional `NO_` (checked on the host,
//! so the names are safe in the shell script unquoted); lockrace never runs in a guest whose
//! requested features were not all applied; the features in force are always those read back
//! from the kernel after the writes, never the requested list.

/// The kernel's file, in the guest.
pub const FEATURES_FILE: &str = "/sys/kernel/debug/sched/features";

/// One `--sched-features` name: `NAME` turns a feature on, `NO_NAME` off (clap value parser).
pub fn parse_feature(s: &str) -> Result<String, String> {
    let base = s.strip_prefix("NO_").unwrap_or(s);
    let ok = base.starts_with(|c: char| c.is_ascii_uppercase())
        && base
            .chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a scheduler feature name (hint: upper case, as the kernel writes them \
             in {FEATURES_FILE}: e.g. NO_WAKEUP_PREEMPTION or RUN_TO_PARITY)"
        ))
    }
}

/// The feature's name without its `NO_`.
pub fn base(name: &str) -> &str {
    name.strip_prefix("NO_").unwrap_or(name)
}

/// The requested names the kernel does not have: `available` is the features file's content
/// (space-separated, each name with `NO_` when off). The shell fragment applies the same rule.
pub fn unknown<'a>(requested: &'a [String], available: &[String]) -> Vec<&'a str> {
    requested
        .iter()
        .map(String::as_str)
        .filter(|r| !available.iter().any(|a| base(a) == base(r)))
        .collect()
}

/// The requested names that are not in force after the writes.
pub fn not_in_force<'a>(requested: &'a [String], in_force: &[String]) -> Vec<&'a str> {
    requested
        .iter()
        .map(String::as_str)
        .filter(|r| !in_force.iter().any(|f| f == r))
        .collect()
}

/// The features file's content as names.
pub fn parse_list(text: &str) -> Vec<String> {
    text.split_whitespace().map(String::from).collect()
}

/// The one-line error for names the guest kernel does not have.
pub fn unknown_error(unknown: &[&str], release: Option<&str>, available: &[String]) -> String {
    let mut names: Vec<&str> = available.iter().map(|a| base(a)).collect();
    names.sort_unstable();
    names.dedup();
    format!(
        "unknown scheduler feature{} {} in {}; this kernel has: {} (hint: --sched-features NAME \
         turns one on, NO_NAME off)",
        if unknown.len() == 1 { "" } else { "s" },
        unknown.join(", "),
        release.unwrap_or("this kernel"),
        names.join(" ")
    )
}

/// The /init fragment: mount debugfs, report the features, validate and apply `requested`,
/// report what is in force. On any failure it prints its marker and powers off (through
/// `halt_vm`, a shell function of /init), so lockrace never runs under the wrong features.
pub fn guest_script(requested: &[String]) -> String {
    // Names passed parse_feature: only [A-Z0-9_], safe unquoted.
    let want = requested.join(" ");
    format!(
        r#"mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
F={file}
want="{want}"
if [ -r $F ]; then
  have=$(cat $F)
  echo "===LOCKRACE-SCHED-AVAILABLE $have==="
  bad=""
  for f in $want; do
    n=${{f#NO_}}
    case " $have " in
      *" $n "*|*" NO_$n "*) ;;
      *) bad="$bad $f" ;;
    esac
  done
  if [ -n "$bad" ]; then
    echo "===LOCKRACE-SCHED-UNKNOWN$bad==="
    halt_vm
  fi
  for f in $want; do
    if ! echo $f > $F; then
      echo "===LOCKRACE-SCHED-REFUSED $f==="
      halt_vm
    fi
  done
  echo "===LOCKRACE-SCHED-FEATURES $(cat $F)==="
elif [ -n "$want" ]; then
  echo "===LOCKRACE-SCHED-UNAVAILABLE no $F==="
  halt_vm
else
  echo "===LOCKRACE-SCHED-UNAVAILABLE no $F==="
fi
"#,
        file = FEATURES_FILE,
    )
}

/// What the guest reported about its scheduler features.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Guest {
    /// The features file before any write (None: not seen).
    pub available: Option<Vec<String>>,
    /// The features file after the writes (None: not seen).
    pub in_force: Option<Vec<String>>,
    /// The names the guest refused as unknown.
    pub unknown: Option<Vec<String>>,
    /// A name whose write the kernel refused.
    pub refused: Option<String>,
    /// The guest has no features file (the reason).
    pub unavailable: Option<String>,
}

impl Guest {
    /// Takes one marker's text (`SCHED-...` and the rest); false when it is not one of ours.
    pub fn take(&mut self, marker: &str) -> bool {
        let (name, rest) = marker.split_once(' ').unwrap_or((marker, ""));
        let rest = rest.trim();
        match name {
            "SCHED-AVAILABLE" => self.available = Some(parse_list(rest)),
            "SCHED-FEATURES" => self.in_force = Some(parse_list(rest)),
            "SCHED-UNKNOWN" => self.unknown = Some(parse_list(rest)),
            "SCHED-REFUSED" => self.refused = Some(rest.to_string()),
            "SCHED-UNAVAILABLE" => self.unavailable = Some(rest.to_string()),
            _ => return false,
        }
        true
    }

    /// Why the run must not count, given what was requested (one line), if anything.
    pub fn error(&self, requested: &[String], release: Option<&str>) -> Option<String> {
        if let Some(names) = &self.unknown {
            let names: Vec<&str> = names.iter().map(String::as_str).collect();
            return Some(unknown_error(
                &names,
                release,
                self.available.as_deref().unwrap_or_default(),
            ));
        }
        // The host applies the guest's rule to the list the guest printed (the two must agree).
        if let Some(available) = &self.available {
            let missing = unknown(requested, available);
            if !missing.is_empty() {
                return Some(unknown_error(&missing, release, available));
            }
        }
        if let Some(name) = &self.refused {
            return Some(format!(
                "the guest kernel refused to set scheduler feature {name} (writing it to \
                 {FEATURES_FILE} failed)"
            ));
        }
        if requested.is_empty() {
            return None;
        }
        if let Some(why) = &self.unavailable {
            return Some(format!(
                "cannot set scheduler features in {}: {why} (hint: the kernel needs \
                 CONFIG_SCHED_DEBUG and CONFIG_DEBUG_FS)",
                release.unwrap_or("this kernel")
            ));
        }
        match &self.in_force {
            // The guest powers off before lockrace on every failure; a missing list means the
            // console lost it, and the run cannot show the features it ran under.
            None => Some("the guest did not report its scheduler features in force".into()),
            Some(now) => {
                let missing = not_in_force(requested, now);
                (!missing.is_empty()).then(|| {
                    format!(
                        "scheduler feature{} {} not in force after writing {FEATURES_FILE} (in \
                         force: {})",
                        if missing.len() == 1 { "" } else { "s" },
                        missing.join(", "),
                        now.join(" ")
                    )
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(s: &str) -> Vec<String> {
        parse_list(s)
    }

    /// 6.12's features file, trimmed.
    const HAVE: &str = "PLACE_LAG PLACE_DEADLINE_INITIAL RUN_TO_PARITY PREEMPT_SHORT \
                        NO_NEXT_BUDDY WAKEUP_PREEMPTION DELAY_DEQUEUE";

    #[test]
    fn names_are_upper_case_with_an_optional_no() {
        for ok in [
            "NO_WAKEUP_PREEMPTION",
            "RUN_TO_PARITY",
            "HRTICK_DL",
            "NO_SIS_UTIL",
            "A1",
        ] {
            assert_eq!(parse_feature(ok).as_deref(), Ok(ok));
        }
        for bad in [
            "",
            "NO_",
            "no_wakeup_preemption",
            "RUN TO",
            "X;reboot",
            "1ABC",
            "_A",
            "NO_1",
        ] {
            let e = parse_feature(bad).unwrap_err();
            assert!(e.contains("is not a scheduler feature name"), "{bad}: {e}");
            assert!(!e.contains('\n'));
        }
    }

    #[test]
    fn unknown_names_are_those_whose_base_the_kernel_lacks() {
        let have = names(HAVE);
        let req =
            names("NO_WAKEUP_PREEMPTION NEXT_BUDDY NO_RUN_TO_PARITY GENTLE_FAIR_SLEEPERS NO_FOO");
        assert_eq!(unknown(&req, &have), ["GENTLE_FAIR_SLEEPERS", "NO_FOO"]);
        assert!(unknown(&names("NO_PLACE_LAG"), &have).is_empty());
        assert_eq!(
            not_in_force(&names("NO_WAKEUP_PREEMPTION NEXT_BUDDY"), &have),
            ["NO_WAKEUP_PREEMPTION", "NEXT_BUDDY"]
        );
        assert!(not_in_force(&names("NO_NEXT_BUDDY RUN_TO_PARITY"), &have).is_empty());
    }

    #[test]
    fn the_unknown_error_is_one_line_naming_the_kernels_features() {
        let e = unknown_error(
            &["NO_FOO"],
            Some("6.12.117+deb12-cloud-amd64"),
            &names(HAVE),
        );
        assert_eq!(
            e,
            "unknown scheduler feature NO_FOO in 6.12.117+deb12-cloud-amd64; this kernel has: \
             DELAY_DEQUEUE NEXT_BUDDY PLACE_DEADLINE_INITIAL PLACE_LAG PREEMPT_SHORT \
             RUN_TO_PARITY WAKEUP_PREEMPTION (hint: --sched-features NAME turns one on, NO_NAME \
             off)"
        );
    }

    #[test]
    fn the_guest_report_is_read_and_judged() {
        let req = names("NO_WAKEUP_PREEMPTION");
        let mut g = Guest::default();
        assert!(g.take(&format!("SCHED-AVAILABLE {HAVE}")));
        let after = HAVE.replace("WAKEUP_PREEMPTION", "NO_WAKEUP_PREEMPTION");
        assert!(g.take(&format!("SCHED-FEATURES {after}")));
        assert!(!g.take("EXIT 0"));
        assert_eq!(g.error(&req, None), None);
        assert!(
            g.in_force
                .as_ref()
                .unwrap()
                .contains(&"NO_WAKEUP_PREEMPTION".to_string())
        );
        // Written but not in force (the file did not change).
        let mut same = g.clone();
        same.in_force = Some(names(HAVE));
        assert_eq!(
            same.error(&req, None).unwrap(),
            format!(
                "scheduler feature NO_WAKEUP_PREEMPTION not in force after writing \
                 {FEATURES_FILE} (in force: {HAVE})"
            )
        );
        // Unknown, as the guest says it.
        let mut u = Guest::default();
        u.take(&format!("SCHED-AVAILABLE {HAVE}"));
        u.take("SCHED-UNKNOWN NO_FOO BAR");
        let e = u
            .error(&names("NO_FOO BAR"), Some("6.12.117+deb12-cloud-amd64"))
            .unwrap();
        assert!(
            e.starts_with("unknown scheduler features NO_FOO, BAR in 6.12.117"),
            "{e}"
        );
        // The host applies the guest's rule to the list the guest printed, marker or not.
        let mut quiet = Guest::default();
        quiet.take(&format!("SCHED-AVAILABLE {HAVE}"));
        quiet.take(&format!("SCHED-FEATURES {HAVE}"));
        assert!(
            quiet
                .error(&names("GENTLE_FAIR_SLEEPERS"), None)
                .unwrap()
                .starts_with("unknown scheduler feature GENTLE_FAIR_SLEEPERS in this kernel;")
        );
        // No features file: fine unless some were asked for.
        let mut n = Guest::default();
        n.take(&format!("SCHED-UNAVAILABLE no {FEATURES_FILE}"));
        assert_eq!(n.error(&[], None), None);
        assert!(
            n.error(&req, Some("6.1.0-54-cloud-amd64"))
                .unwrap()
                .starts_with("cannot set scheduler features in 6.1.0-54-cloud-amd64: no /sys")
        );
        let mut r = Guest::default();
        r.take("SCHED-REFUSED NO_WAKEUP_PREEMPTION");
        assert!(r.error(&req, None).unwrap().contains("refused to set"));
        assert_eq!(
            Guest::default().error(&req, None).unwrap(),
            "the guest did not report its scheduler features in force"
        );
    }

    /// Runs the fragment in a real shell against a fake features file (sed rewrites the path),
    /// with `halt_vm` defined to exit: the same script the guest runs, minus debugfs.
    fn run_fragment(requested: &[String], have: Option<&str>) -> (String, String) {
        let dir = std::env::temp_dir().join(format!(
            "xtask-sched-{}-{}",
            std::process::id(),
            requested.join("_")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("features");
        let _ = std::fs::remove_file(&file);
        if let Some(h) = have {
            std::fs::write(&file, format!("{h}\n")).unwrap();
        }
        // A fake kernel: writing NAME or NO_NAME flips that name in the file.
        let script = format!(
            "halt_vm() {{ echo HALTED; exit 0; }}\nmount() {{ :; }}\n{}",
            guest_script(requested).replace(FEATURES_FILE, file.to_str().unwrap())
        );
        let script = script.replace(
            "if ! echo $f > $F; then",
            "n=${f#NO_}; if ! sed -i -E \"s/(^| )(NO_)?$n( |$)/\\1$f\\3/\" $F; then",
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let left = std::fs::read_to_string(&file).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        (text, left)
    }

    #[test]
    fn the_guest_fragment_validates_writes_and_reports() {
        let (out, left) = run_fragment(&names("NO_WAKEUP_PREEMPTION NO_RUN_TO_PARITY"), Some(HAVE));
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], format!("===LOCKRACE-SCHED-AVAILABLE {HAVE}==="));
        let after = "PLACE_LAG PLACE_DEADLINE_INITIAL NO_RUN_TO_PARITY PREEMPT_SHORT NO_NEXT_BUDDY \
                     NO_WAKEUP_PREEMPTION DELAY_DEQUEUE";
        assert_eq!(lines[1], format!("===LOCKRACE-SCHED-FEATURES {after}==="));
        assert_eq!(left.trim(), after);
        assert!(!out.contains("HALTED"));

        let (out, left) = run_fragment(&names("NO_WAKEUP_PREEMPTION NO_FOO"), Some(HAVE));
        assert!(
            out.contains("===LOCKRACE-SCHED-UNKNOWN NO_FOO===\nHALTED"),
            "{out}"
        );
        assert_eq!(
            left.trim(),
            HAVE,
            "nothing is written when a name is unknown"
        );

        let (out, _) = run_fragment(&names("NO_WAKEUP_PREEMPTION"), None);
        assert!(
            out.contains("===LOCKRACE-SCHED-UNAVAILABLE no ") && out.contains("HALTED"),
            "{out}"
        );
        let (out, _) = run_fragment(&[], None);
        assert!(
            out.contains("SCHED-UNAVAILABLE") && !out.contains("HALTED"),
            "{out}"
        );
        let (out, _) = run_fragment(&[], Some(HAVE));
        assert!(
            out.ends_with(&format!("===LOCKRACE-SCHED-FEATURES {HAVE}===\n")),
            "{out}"
        );
    }
}
