"""The Markdown report: one row per scenario × N × link, one column per tool (median seconds of
the checked runs and the ratio to the floor), homelab's round trips per node and peak RSS.
A failed run is never dropped: its cell says FAILED with the count, and the reasons follow the
table."""

import statistics

TOOLS = ["floor", "floor warm", "pyinfra", "ansible", "homelab"]
SCENARIOS = ["fresh", "noop", "change", "plan"]
SCENARIO_TEXT = {
    "fresh": "fresh apply", "noop": "no-op apply", "change": "one change per node",
    "plan": "plan only",
}


SKIPS = {}  # reason -> its number in the notes: a long reason is said once, not per cell


def median(xs):
    return statistics.median(xs) if xs else None


def cell(runs, floor):
    if not runs:
        return "–"
    if runs[0].get("skipped"):
        return f"skipped [{SKIPS.setdefault(runs[0]['skipped'], len(SKIPS) + 1)}]"
    ok = [r["seconds"] for r in runs if r["ok"]]
    failed = len(runs) - len(ok)
    m = median(ok)
    text = ""
    if m is not None:
        text = f"{m:.2f} s"
        if floor:
            text += f" · {m / floor:.2f}×"
    if failed:
        text = f"**FAILED {failed}/{len(runs)}**" + (f" ({text})" if text else "")
    return text


def render(results, meta):
    out = [f"# homelab benchmark, {meta['date']}", ""]
    out += [f"- {k}: {v}" for k, v in meta["about"].items()]
    out += ["", "Seconds are the median of the checked runs; `×` is the ratio to the floor "
            "(cold connections). homelab = plan + apply (approve not timed); for *plan only* "
            "every tool only reads and diffs (pyinfra `--dry`, ansible `--check`, the floor "
            "streams the deployed tree back).", ""]
    head = ["scenario", "N", "link", *TOOLS, "homelab round trips/node", "homelab peak RSS plan / apply"]
    out.append("| " + " | ".join(head) + " |")
    out.append("|" + "---|" * len(head))
    keys = sorted({(r["N"], r["link"]) for r in results}, key=lambda k: (k[1] != "loopback", k[0]))
    for scenario in SCENARIOS:
        for n, link in keys:
            rows = [r for r in results if r["N"] == n and r["link"] == link and r["scenario"] == scenario]
            if not rows:
                continue
            by = {t: [r for r in rows if r["tool"] == t] for t in TOOLS}
            floor = median([r["seconds"] for r in by["floor"] if r["ok"]])
            trips = sorted({v for r in by["homelab"] if r["ok"] for v in r["round_trips"].values()
                            if v is not None})
            trips_text = "–" if not trips else (
                str(trips[0]) if len(trips) == 1 else f"{trips[0]}–{trips[-1]}")
            if scenario != "plan" and not trips and any(r["ok"] for r in by["homelab"]):
                notes = {r.get("note") for r in by["homelab"]}
                trips_text = "0 (no apply: " + ", ".join(sorted(x for x in notes if x)) + ")"
            rp = max((r["rss_plan_kb"] for r in by["homelab"] if r.get("rss_plan_kb")), default=0)
            ra = max((r["rss_apply_kb"] for r in by["homelab"] if r.get("rss_apply_kb")), default=0)
            rss = f"{rp / 1024:.0f} MB" if rp else "–"
            rss += f" / {ra / 1024:.0f} MB" if ra else ""
            cells = [SCENARIO_TEXT[scenario], str(n), link,
                     *[cell(by[t], floor) for t in TOOLS], trips_text, rss]
            out.append("| " + " | ".join(cells) + " |")
    failures = [r for r in results if not r["ok"] and not r.get("skipped")]
    if failures:
        out += ["", "## Failed runs", ""]
        for r in failures:
            # The end of a tool's output is where it says why it failed.
            why = "; ".join(r["problems"][:6]).replace("\n", " ⏎ ")
            why = why if len(why) <= 700 else "…" + why[-700:]
            out.append(f"- {r['tool']}, {r['scenario']}, N={r['N']}, {r['link']}, round "
                       f"{r['round'] + 1}: {why}")
    notes = [f"skipped [{k}]: {reason}" for reason, k in SKIPS.items()] + (meta.get("notes") or [])
    if notes:
        out += ["", "## Notes", ""] + [f"- {x}" for x in notes]
    return "\n".join(out) + "\n"
