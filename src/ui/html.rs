//! The page's HTML: one escaping function every piece of text goes through, the frame every
//! page shares (viewport, navigation, style sheet), and the style sheet. No JavaScript.
//!
//! Everything shown comes from files others wrote (plans, events, world files), so [`esc`]
//! HTML-escapes it and makes hidden characters (ESC, CR, bidirectional overrides) visible as
//! `\x1b`-style escapes, as `show` does for a terminal. Pure; no IO.

use std::fmt::Write as _;

/// `s` as HTML text or attribute value: `& < > " '` escaped, hidden characters made visible.
pub fn esc(s: &str) -> String {
    let shown = crate::plan::display::escape(s);
    let mut out = String::with_capacity(shown.len() + 8);
    for c in shown.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query-string value, percent-encoded (for links the page makes to itself).
pub fn query_value(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~@".contains(&b) {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// What the frame needs to know of the visitor.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// Logged in with the token (a valid session cookie).
    pub logged_in: bool,
    /// Whether the server has a token at all (without one the page is read-only for everyone).
    pub token_configured: bool,
    /// The hidden CSRF field every form carries.
    pub csrf: String,
}

impl Viewer {
    /// The hidden input every form carries.
    pub fn csrf_input(&self) -> String {
        format!("<input type=\"hidden\" name=\"csrf\" value=\"{}\">", esc(&self.csrf))
    }
}

/// The sections of the navigation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    World,
    Plans,
    Events,
    Login,
}

/// A whole page: `title` is text (escaped here), `body` is HTML made by this module's callers.
pub fn page(title: &str, nav: Nav, viewer: &Viewer, body: &str) -> String {
    let link = |n: Nav, href: &str, label: &str| {
        let current = if n == nav { " aria-current=\"page\"" } else { "" };
        format!("<a href=\"{href}\"{current}>{label}</a>")
    };
    let who = if viewer.logged_in {
        format!(
            "<form method=\"post\" action=\"/logout\" class=\"inline\">{}<button type=\"submit\" class=\"link\">log out</button></form>",
            viewer.csrf_input()
        )
    } else if viewer.token_configured {
        link(Nav::Login, "/login", "log in")
    } else {
        "<span class=\"muted\">read-only</span>".to_owned()
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
<meta name=\"referrer\" content=\"same-origin\">\n\
<title>{} · homelab</title>\n<link rel=\"stylesheet\" href=\"/style.css\">\n</head>\n<body>\n\
<header><nav><strong>homelab</strong> {} {} {} <span class=\"who\">{who}</span></nav></header>\n\
<main>\n<h1>{}</h1>\n{body}\n</main>\n</body>\n</html>\n",
        esc(title),
        link(Nav::World, "/", "world"),
        link(Nav::Plans, "/plans", "plans"),
        link(Nav::Events, "/events", "events"),
        esc(title),
    )
}

/// A notice above a page's content: `kind` is `ok`, `warn` or `error`; `text` is escaped.
pub fn notice(kind: &str, text: &str) -> String {
    let role = if kind == "error" { " role=\"alert\"" } else { "" };
    format!("<p class=\"notice {kind}\"{role}>{}</p>\n", esc(text))
}

/// A status word as a coloured badge (the class is chosen from a fixed list).
pub fn badge(word: &str) -> String {
    let class = match word {
        "online" | "healthy" | "completed" | "closed" | "reachable" | "approved" | "applied"
        | "ready" | "valid" => "good",
        "offline" | "unreachable" | "unhealthy" | "failed" | "rollback_failed" | "open"
        | "error" | "critical" | "rejected" | "refused" => "bad",
        "running" | "rolling_back" | "rolled_back" | "warning" | "pending" | "expired"
        | "unknown" => "warn",
        _ => "plain",
    };
    format!("<span class=\"badge {class}\">{}</span>", esc(word))
}

/// The style sheet, served as `/style.css` (no inline style: the page's CSP forbids it).
pub const STYLE: &str = r#":root { color-scheme: light dark; --fg: #1b1f23; --bg: #fff; --muted: #6a737d;
  --line: #d0d7de; --good: #1a7f37; --bad: #cf222e; --warn: #9a6700; --code: #f6f8fa;
  --add: #e6ffec; --del: #ffebe9; }
@media (prefers-color-scheme: dark) { :root { --fg: #e6edf3; --bg: #0d1117; --muted: #8b949e;
  --line: #30363d; --good: #3fb950; --bad: #f85149; --warn: #d29922; --code: #161b22;
  --add: #12261e; --del: #25171c; } }
* { box-sizing: border-box; }
body { margin: 0; font: 16px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif;
  color: var(--fg); background: var(--bg); }
header { border-bottom: 1px solid var(--line); padding: .6rem 1rem; position: sticky; top: 0;
  background: var(--bg); }
nav { display: flex; flex-wrap: wrap; gap: .4rem 1rem; align-items: baseline; }
nav a { color: inherit; }
nav a[aria-current] { font-weight: 600; text-decoration-thickness: 2px; }
nav .who { margin-left: auto; }
main { padding: 0 1rem 2rem; max-width: 72rem; margin: 0 auto; }
h1 { font-size: 1.4rem; overflow-wrap: anywhere; }
h2 { font-size: 1.15rem; margin-top: 1.6rem; }
h3 { font-size: 1rem; }
.table { overflow-x: auto; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .5rem; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { font-weight: 600; }
code, pre, textarea { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: .85rem; }
pre { background: var(--code); padding: .6rem; overflow-x: auto; border-radius: 6px; margin: .4rem 0; }
pre.diff span { display: block; white-space: pre; }
pre.diff .add { background: var(--add); }
pre.diff .del { background: var(--del); }
pre.diff .hunk { color: var(--muted); }
pre.cmd { white-space: pre-wrap; overflow-wrap: anywhere; }
.muted { color: var(--muted); }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 1rem; border: 1px solid currentColor;
  font-size: .8rem; white-space: nowrap; }
.badge.good { color: var(--good); } .badge.bad { color: var(--bad); } .badge.warn { color: var(--warn); }
.notice { padding: .6rem .8rem; border-radius: 6px; border: 1px solid var(--line); overflow-wrap: anywhere; }
.notice.ok { border-color: var(--good); } .notice.error { border-color: var(--bad); }
.notice.warn { border-color: var(--warn); }
details { margin: .5rem 0; } summary { cursor: pointer; }
form.box { border: 1px solid var(--line); border-radius: 6px; padding: .8rem; margin: 1rem 0; }
form.inline { display: inline; }
label { display: block; margin: .5rem 0 .2rem; font-weight: 600; }
input[type=text], input[type=password], input[type=search], select, textarea { width: 100%;
  padding: .5rem; font-size: 1rem; border: 1px solid var(--line); border-radius: 6px;
  background: var(--bg); color: var(--fg); }
textarea { min-height: 9rem; }
button { margin-top: .7rem; padding: .55rem 1.1rem; font-size: 1rem; border-radius: 6px;
  border: 1px solid var(--line); background: var(--code); color: var(--fg); cursor: pointer; }
button.primary { border-color: var(--good); } button.danger { border-color: var(--bad); }
button.link { border: 0; background: none; padding: 0; margin: 0; text-decoration: underline;
  color: inherit; font-size: inherit; }
.filters { display: grid; grid-template-columns: repeat(auto-fit, minmax(9rem, 1fr)); gap: .5rem; align-items: end; }
.filters label { margin: 0; font-weight: normal; font-size: .85rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(15rem, 1fr)); gap: .7rem; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; }
.card h3 { margin: 0 0 .3rem; }
dl { display: grid; grid-template-columns: max-content 1fr; gap: .2rem .8rem; margin: .3rem 0; }
dt { color: var(--muted); } dd { margin: 0; overflow-wrap: anywhere; }
@media (max-width: 40rem) { body { font-size: 15px; } main { padding: 0 .6rem 2rem; }
  th, td { padding: .3rem .3rem; } .hide-narrow { display: none; } }
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_hidden_characters_shown() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
        assert_eq!(esc("\u{1b}[2J\r\u{202e}"), "\\x1b[2J\\x0d\\u{202e}");
    }

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(query_value("web@alpha"), "web@alpha");
        assert_eq!(query_value("a b&c=<d>"), "a%20b%26c%3D%3Cd%3E");
    }

    #[test]
    fn the_frame_escapes_its_title_and_has_a_viewport() {
        let v = Viewer { logged_in: false, token_configured: true, csrf: "c\"".to_owned() };
        let p = page("<b>", Nav::World, &v, "<p>body</p>");
        assert!(p.contains("<title>&lt;b&gt; · homelab</title>"));
        assert!(p.contains("name=\"viewport\""));
        assert!(p.contains("<p>body</p>"));
        assert!(p.contains("href=\"/login\""));
        assert!(!p.contains("<script"));
        let v = Viewer { logged_in: true, ..v };
        assert!(page("t", Nav::Plans, &v, "").contains("value=\"c&quot;\""));
    }
}
