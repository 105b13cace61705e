#!/usr/bin/env python3
"""One table from a bench/results/<timestamp>/ folder written by compare.sh or cluster.sh.

    python3 bench/summarize.py compare RESULTS_DIR
    python3 bench/summarize.py cluster RESULTS_DIR

Standard library only (runs with any python3).  Both scripts write
RESULTS_DIR/runs.tsv, one row of the table per line, TAB separated:

    id  kind  data  setting  invocation  selector  ref

kind is "ours" (our coordinator; its --metrics-json is INVOCATION.metrics.json)
or an anchor tool ("implicit", "spark", "surprise": the one JSON line the
anchor script printed is in INVOCATION.out); selector picks one entry of the
anchor's "runs" list ("key=value,key=value", compared as strings); ref is the
id of our row to compare with (ratio = ours s/iter / theirs s/iter, < 1 means
ours is faster).  INVOCATION.rc holds the exit code and INVOCATION.err the
log.  A failed or missing run becomes a table row that says so; this script
itself never fails on bad input.  The table is printed and also written to
RESULTS_DIR/table.md, the parsed rows to RESULTS_DIR/summary.json.
"""
import json
import math
import os
import sys


def read_text(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def last_json_line(text):
    """The last line of text that parses as a JSON object (anchor scripts print one)."""
    for line in reversed((text or "").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    return None


def exit_code(d, inv):
    t = read_text(os.path.join(d, inv + ".rc"))
    if t is None:
        return None
    try:
        return int(t.strip())
    except ValueError:
        return None


def tail_error(d, inv):
    """A short reason from the end of the run's log, for the table."""
    t = read_text(os.path.join(d, inv + ".err")) or ""
    lines = [l.strip() for l in t.splitlines() if l.strip()]
    for l in reversed(lines):
        if any(w in l.lower() for w in ("error", "exception", "failed", "not found", "no such", "killed", "timeout")):
            return l[:90]
    return lines[-1][:90] if lines else ""


def num(x):
    if isinstance(x, bool) or x is None:
        return None
    if isinstance(x, (int, float)) and math.isfinite(x):
        return float(x)
    return None


def read_rows(d):
    rows = []
    text = read_text(os.path.join(d, "runs.tsv"))
    if text is None:
        return rows
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        f = line.split("\t")
        f += [""] * (7 - len(f))
        rows.append(dict(zip(["id", "kind", "data", "setting", "inv", "selector", "ref"], f[:7])))
    return rows


def select_run(doc, selector):
    runs = doc.get("runs") or []
    want = [kv.split("=", 1) for kv in selector.split(",") if "=" in kv]
    for r in runs:
        if all(str(r.get(k)) == v for k, v in want):
            return r
    return None


def ours_result(d, row):
    """s/iter and quality of our coordinator from its --metrics-json."""
    m = read_text(os.path.join(d, row["inv"] + ".metrics.json"))
    if m is None:
        return None, "no metrics JSON"
    try:
        m = json.loads(m)
    except ValueError as e:
        return None, "bad metrics JSON: %s" % e
    final = m.get("final") or {}
    res = {"s_per_iter": num(m.get("seconds_per_iteration"))}
    if num(final.get("ndcg@10")) is not None:
        res["quality"], res["metric"] = num(final["ndcg@10"]), "NDCG@10"
    elif num(final.get("rmse_raw")) is not None:
        # Raw (unclipped) predictions: the anchors protocol, step 4.
        res["quality"], res["metric"] = num(final["rmse_raw"]), "RMSE"
        res["rmse_clipped"] = num(final.get("rmse"))
    elif num(final.get("rmse")) is not None:
        res["quality"], res["metric"] = num(final["rmse"]), "RMSE"
    res["executor"] = m.get("executor")
    its = m.get("iterations") or []
    res["iterations"] = len(its)
    for key in ("bytes_sent", "bytes_min", "compute_seconds", "transfer_seconds", "seconds"):
        vals = [num(it.get(key)) for it in its if isinstance(it, dict)]
        vals = [v for v in vals if v is not None]
        res[key] = sum(vals) if vals else None
    return res, None


def anchor_result(d, row):
    doc = last_json_line(read_text(os.path.join(d, row["inv"] + ".out")))
    if doc is None:
        return None, "no JSON output"
    r = select_run(doc, row["selector"])
    if r is None:
        return None, "no run matching %s" % row["selector"]
    res = {"s_per_iter": num(r.get("s_per_iter")), "others_cpu_s": num(r.get("others_cpu_s"))}
    if r.get("mode") == "implicit":
        res["quality"], res["metric"] = num(r.get("ndcg")), "NDCG@10"
    else:
        res["quality"], res["metric"] = num(r.get("rmse")), "RMSE"
    if r.get("marginal_s_per_iter") is not None:
        res["marginal_s_per_iter"] = num(r.get("marginal_s_per_iter"))
    return res, None


def evaluate(d, row):
    rc = exit_code(d, row["inv"])
    if rc is None:
        return None, "did not run"
    if rc != 0:
        why = tail_error(d, row["inv"])
        return None, "FAILED (exit %s%s)" % (rc, ": " + why if why else "")
    res, err = (ours_result if row["kind"] == "ours" else anchor_result)(d, row)
    if res is None:
        return None, "FAILED (%s)" % err
    return res, None


def fmt(x, nd):
    return "-" if x is None else ("%." + str(nd) + "f") % x


def fmt_bytes(x):
    if x is None:
        return "-"
    for unit, s in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if x >= s:
            return "%.2f %s" % (x / s, unit)
    return "%d B" % x


def table(header, lines):
    widths = [max(len(str(r[i])) for r in [header] + lines) for i in range(len(header))]
    out = ["| " + " | ".join(str(h).ljust(w) for h, w in zip(header, widths)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in lines:
        out.append("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")
    return "\n".join(out)


def compare(d):
    rows = read_rows(d)
    results = {}
    for row in rows:
        results[row["id"]] = evaluate(d, row)
    lines, summary = [], []
    for row in rows:
        res, err = results[row["id"]]
        tool = "ours" if row["kind"] == "ours" else row["kind"]
        if res is None:
            lines.append([tool, row["data"], row["setting"], err, "", ""])
            summary.append({**row, "error": err})
            continue
        q = "-" if res.get("quality") is None else "%s %.4f" % (res["metric"], res["quality"])
        ratio = ""
        if row["ref"]:
            ours, _ = results.get(row["ref"], (None, None))
            if ours and ours.get("s_per_iter") and res.get("s_per_iter"):
                ratio = "%.2f" % (ours["s_per_iter"] / res["s_per_iter"])
            else:
                ratio = "n/a (ours failed)"
        lines.append([tool, row["data"], row["setting"], fmt(res.get("s_per_iter"), 4), q, ratio])
        summary.append({**row, **res, "ratio_ours_over_theirs": ratio or None})
    out = table(["tool", "data", "setting", "s/iter", "quality", "ours/theirs s/iter"], lines)
    out += ("\n\nours/theirs < 1: ours is faster per iteration (ratio against the `ours` row with"
            " the matching setting).\nSurprise is SGD: its s/iter is per epoch.  Spark's s/iter is"
            " fit time / iterations (includes its per-fit job overhead, not the JVM start).\n"
            "RMSE is on raw (unclipped) predictions for every tool (anchors protocol, step 4).")
    finish(d, out, summary)


def cluster(d):
    rows = read_rows(d)
    lines, summary = [], []
    base = None
    parsed = []
    for row in rows:
        res, err = evaluate(d, row)
        parsed.append((row, res, err))
        if res and row["id"] == "in-process":
            base = res.get("s_per_iter")
    for row, res, err in parsed:
        if res is None:
            lines.append([row["setting"], err, "", "", "", "", "", "", ""])
            summary.append({**row, "error": err})
            continue
        s = res.get("s_per_iter")
        over = "-" if not (base and s) else "%.3f" % (s / base)
        sent, mn = res.get("bytes_sent"), res.get("bytes_min")
        ratio = "-" if not (sent and mn) else "%.3f" % (sent / mn)
        lines.append([row["setting"], str(res.get("executor") or "?"), fmt(s, 3), over,
                      fmt_bytes(sent), fmt_bytes(mn), ratio,
                      fmt(res.get("compute_seconds"), 2), fmt(res.get("transfer_seconds"), 2)])
        summary.append({**row, **res})
    out = table(["mode", "executor (as run)", "s/iter", "vs in-process", "bytes_sent", "bytes_min", "sent/min",
                 "compute s", "transfer s"], lines)
    out += ("\n\nbytes and seconds are summed over all iterations; \"vs in-process\" is"
            " s/iter divided by the in-process s/iter (aim <= 1.15); sent/min aim <= 1.05.\n"
            "\"executor (as run)\" is the metrics JSON's \"executor\": if it says in-process for a"
            " --local run, that build fell back to in-process training.")
    finish(d, out, summary)


def finish(d, out, summary):
    print(out)
    try:
        with open(os.path.join(d, "table.md"), "w") as f:
            f.write(out + "\n")
        with open(os.path.join(d, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
    except OSError as e:
        print("(could not write table.md/summary.json: %s)" % e, file=sys.stderr)


def main(argv):
    if len(argv) != 3 or argv[1] not in ("compare", "cluster"):
        print(__doc__.strip().splitlines()[2:4], file=sys.stderr)
        print("usage: summarize.py compare|cluster RESULTS_DIR", file=sys.stderr)
        return 2
    (compare if argv[1] == "compare" else cluster)(argv[2])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
