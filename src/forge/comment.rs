//! The plan comment's text: the marker that finds it again, and fitting a long plan under the
//! forge's size limit with a link to the plan file for the rest. Pure.

/// The hidden line that marks homelab's comment on a pull request: a new plan for the same pull
/// request edits the comment that carries it instead of adding one.
pub const MARKER: &str = "<!-- homelab-plan -->";

/// The most a comment may hold. Forgejo's API documents no limit for a comment's body; what
/// this repository has found (plan/display.rs) is that Forgejo refuses comments over 65,535
/// characters, the size of a MySQL/MariaDB `TEXT` column. homelab counts bytes (never fewer
/// than characters), so it stays under either reading; `comment_limit` in
/// inventory/forge.yaml lowers it for a server that wants less.
pub const DEFAULT_LIMIT: usize = 65_535;

/// The comment for `markdown`: the marker, then the Markdown, cut at a line so the whole stays
/// within `limit` bytes, a code fence left open by the cut closed, and a link to `plan_url`
/// (the plan file on its branch) for what was left out. Returns the text and whether it was cut.
pub fn body(markdown: &str, limit: usize, plan_name: &str, plan_url: &str) -> (String, bool) {
    let head = format!("{MARKER}\n");
    if head.len() + markdown.len() <= limit {
        return (format!("{head}{markdown}"), false);
    }
    let tail = format!(
        "\n---\n**This plan is longer than a comment may be**: the rest is in the plan file, [`{plan_name}`]({plan_url}).\n"
    );
    // Room for the kept text, a closing fence, and the tail.
    let fence = "```\n";
    let room = limit.saturating_sub(head.len() + tail.len() + fence.len() + 1);
    let mut kept = String::new();
    for line in markdown.split_inclusive('\n') {
        if kept.len() + line.len() > room {
            break;
        }
        kept.push_str(line);
    }
    if kept.is_empty() {
        // One line longer than the room: cut it at a character boundary.
        let mut at = room.min(markdown.len());
        while !markdown.is_char_boundary(at) {
            at -= 1;
        }
        kept.push_str(&markdown[..at]);
    }
    if !kept.ends_with('\n') {
        kept.push('\n');
    }
    // An odd number of fence lines means the cut fell inside a code block.
    let fences = kept.lines().filter(|l| l.trim_start().starts_with("```")).count();
    if fences % 2 == 1 {
        kept.push_str(fence);
    }
    (format!("{head}{kept}{tail}"), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_plans_are_kept_whole_behind_the_marker() {
        let (b, cut) = body("### plan\n", 100, "plans/a.plan", "http://x/a");
        assert_eq!(b, "<!-- homelab-plan -->\n### plan\n");
        assert!(!cut);
    }

    #[test]
    fn long_plans_are_cut_at_a_line_within_the_limit_with_the_fence_closed_and_a_link() {
        let md = format!("### plan\n```diff\n{}```\n", "+ a line of the diff\n".repeat(500));
        let (b, cut) = body(&md, 2000, "plans/a.plan", "http://x/a");
        assert!(cut);
        assert!(b.len() <= 2000, "{} bytes", b.len());
        assert!(b.starts_with(MARKER));
        assert!(b.contains("[`plans/a.plan`](http://x/a)"));
        assert_eq!(b.lines().filter(|l| l.starts_with("```")).count() % 2, 0, "{b}");
    }

    #[test]
    fn a_single_long_line_is_cut_at_a_character_boundary() {
        let md = "é".repeat(5000);
        let (b, cut) = body(&md, 1000, "p", "u");
        assert!(cut && b.len() <= 1000);
    }
}
