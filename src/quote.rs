//! How a message quotes what it was given: never whole. A hostile or broken input (a 10 MB
//! principal, an option word, a plan's summary line) must not make an error megabytes long,
//! on a terminal, in a log or on the operator page. Owns nothing else; imports nothing.

/// The most characters of one input a message quotes.
pub const MAX_QUOTED: usize = 200;

/// `s` cut to [`MAX_QUOTED`] characters, with `…` and the size it had when it was longer.
pub fn cut(s: &str) -> String {
    cut_to(s, MAX_QUOTED)
}

/// `s` cut to `max` characters (on a character boundary), with `…` and the size it had when
/// it was longer.
pub fn cut_to(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        None => s.to_owned(),
        Some((at, _)) => format!("{}… ({} bytes in all)", &s[..at], s.len()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn short_text_is_whole_and_long_text_is_cut_on_a_character() {
        assert_eq!(super::cut_to("abc", 3), "abc");
        assert_eq!(super::cut_to("abcd", 3), "abc… (4 bytes in all)");
        assert_eq!(super::cut_to("üüüü", 2), "üü… (8 bytes in all)");
        let huge = "x".repeat(10 << 20);
        assert!(super::cut(&huge).len() < super::MAX_QUOTED + 40);
    }
}
