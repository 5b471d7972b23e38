//! The one function that turns an argument vector into a command line for a remote POSIX
//! shell. Every name and value that reaches a node goes through `argv`: each argument becomes
//! a single-quoted word, so spaces, quotes, `$`, backticks, `;`, newlines and a leading `-`
//! arrive as data, never as syntax. The login shell of the node's user must be POSIX (sh,
//! dash, bash, zsh); fish and csh are not supported.

/// Why an argument cannot be passed at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("argument {index} holds a NUL byte, which no command line can carry")]
pub struct QuoteError {
    pub index: usize,
}

/// Quotes one word: `'` + text + `'`, each `'` inside written as `'\''`.
pub fn word(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// Quotes an argument vector into one command line.
pub fn argv<S: AsRef<str>>(args: &[S]) -> Result<String, QuoteError> {
    let mut out = String::new();
    for (index, a) in args.iter().enumerate() {
        let a = a.as_ref();
        if a.contains('\0') {
            return Err(QuoteError { index });
        }
        if index > 0 {
            out.push(' ');
        }
        out.push_str(&word(a));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Every hostile value survives a real `sh` byte for byte, as one argument.
    #[test]
    fn hostile_arguments_arrive_intact_through_a_real_shell() {
        let hostile = [
            "plain",
            "",
            "with space",
            "it's",
            "'",
            "''",
            "\"double\"",
            "$(touch /tmp/homelab-pwned)",
            "`touch /tmp/homelab-pwned`",
            "$HOME ${HOME} $0 $@",
            "a;b&&c||d|e>f<g",
            "line1\nline2\n",
            "-n",
            "--help",
            "-e \\x41",
            "\\",
            "tab\there",
            "*?[a-z]~",
            "# not a comment",
            "ünïcödé ✓",
            "!history",
        ];
        let mut args = vec!["printf", "%s\\0"];
        args.extend(hostile);
        let line = argv(&args).unwrap();
        let out = Command::new("sh").arg("-c").arg(&line).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let got: Vec<&[u8]> = out.stdout.split(|b| *b == 0).collect();
        assert_eq!(got.len(), hostile.len() + 1);
        for (h, g) in hostile.iter().zip(got) {
            assert_eq!(h.as_bytes(), g);
        }
        assert!(!std::path::Path::new("/tmp/homelab-pwned").exists());
    }

    #[test]
    fn nul_bytes_are_refused() {
        assert_eq!(argv(&["ok", "a\0b"]), Err(QuoteError { index: 1 }));
    }
}
