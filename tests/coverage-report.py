#!/usr/bin/python3
"""tests/coverage-report.py — the figures `./quickstart coverage` prints.

Reads gcovr's JSON (gcovr --json) of a coverage build after make check and
prints line and branch coverage per folder (virtmem/, client/,
server-mock/, wcfs/, and all four together; the demo programs, which make
check does not run, left out), then the largest uncovered
regions: runs of consecutive executable lines that never ran (lines with no
code between them do not break a run).

usage: coverage-report.py GCOVR_JSON [TOP_N]
"""
import json
import sys

FOLDERS = ["virtmem/", "client/", "server-mock/", "wcfs/"]


def main():
    data = json.load(open(sys.argv[1]))
    top_n = int(sys.argv[2]) if len(sys.argv) > 2 else 15
    totals = {f: [0, 0, 0, 0] for f in FOLDERS}  # lines hit, lines, branches hit, branches
    regions = []
    for f in data["files"]:
        name = f["file"]
        folder = next((d for d in FOLDERS if name.startswith(d)), None)
        if folder is None or name.endswith("/demo.c"):
            continue
        t = totals[folder]
        run = []
        for line in sorted(f["lines"], key=lambda l: l["line_number"]):
            if line.get("gcovr/noncode"):
                continue
            t[1] += 1
            hit = line["count"] > 0
            t[0] += hit
            for b in line.get("branches", []):
                t[3] += 1
                t[2] += b["count"] > 0
            if hit:
                if run:
                    regions.append((len(run), name, run[0], run[-1]))
                run = []
            else:
                run.append(line["line_number"])
        if run:
            regions.append((len(run), name, run[0], run[-1]))

    def pct(a, b):
        return "%5.1f%%" % (100.0 * a / b) if b else "   -  "

    print("%-13s %8s %13s %9s %15s" % ("folder", "lines", "(hit/all)", "branches", "(hit/all)"))
    every = [0, 0, 0, 0]
    for d in FOLDERS:
        t = totals[d]
        every = [a + b for a, b in zip(every, t)]
        print("%-13s %8s %13s %9s %15s" % (d, pct(t[0], t[1]), "%d/%d" % (t[0], t[1]),
                                           pct(t[2], t[3]), "%d/%d" % (t[2], t[3])))
    t = every
    print("%-13s %8s %13s %9s %15s" % ("all four", pct(t[0], t[1]), "%d/%d" % (t[0], t[1]),
                                       pct(t[2], t[3]), "%d/%d" % (t[2], t[3])))
    print("\nlargest uncovered regions (executable lines never run):")
    for n, name, first, last in sorted(regions, key=lambda r: (-r[0], r[1], r[2]))[:top_n]:
        print("  %4d lines  %s:%d-%d" % (n, name, first, last))


if __name__ == "__main__":
    main()
