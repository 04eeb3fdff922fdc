//! The one error style, at the bottom of the house (every floor may use it): `lockrace: <what
//! went wrong>` lowercase, then a hint when we know what the user can do about it. [`hinted`]
//! makes such an error, [`render_error`] is the one line `main` prints.
//!
//! Invariant: a rendered error is one line (causes joined with ": ", newlines folded), so a
//! user's terminal and a test's `stderr` see the same text.

/// An error with a hint for the user ("run it as root", "mount tracefs", ...).
#[derive(Debug)]
pub struct Hinted {
    pub message: String,
    pub hint: String,
}

impl std::fmt::Display for Hinted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (hint: {})", self.message, self.hint)
    }
}
impl std::error::Error for Hinted {}

/// Appended to `command not found: CMD` (record and trace exit 127 with it, like a shell).
pub const COMMAND_NOT_FOUND_HINT: &str =
    " (hint: the command after `--` is looked up in PATH; check its name or give its path)";

pub fn hinted(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Error {
    anyhow::Error::new(Hinted {
        message: message.into(),
        hint: hint.into(),
    })
}

/// One line: the error and its causes joined with ": ".
pub fn render_error(err: &anyhow::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for cause in err.chain() {
        let s = cause.to_string();
        if parts.last().is_none_or(|p| !p.contains(&s)) {
            parts.push(s);
        }
    }
    parts.join(": ").replace('\n', " ")
}
