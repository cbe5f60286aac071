#!/usr/bin/env python3
"""Kernel time by kernel name over a whole trace (scripts/cupti-trace.sh), or
over the kernels before the first decode step (--prefill: everything before
the second launch of the embedding kernel, i.e. one prompt's prefill when the
traced command prefills once and then decodes), or for each prefill batch
(--batches: every stretch between two launches of the embedding kernel that
spans more than 20 ms, e.g. each frontier's prefill of a ds4-bench sweep).
Prints each name's total, share, launch count and mean duration, largest
first.
    python3 scripts/trace-sum.py trace.csv [--prefill | --batches] [top]"""
import sys
import importlib.util
import os

spec = importlib.util.spec_from_file_location("trace_step", os.path.join(os.path.dirname(__file__), "trace-step.py"))
trace_step = importlib.util.module_from_spec(spec)
spec.loader.exec_module(trace_step)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    prefill = "--prefill" in sys.argv
    top = int(args[1]) if len(args) > 1 else 40
    rows = []
    for line in open(args[0]):
        p = line.rstrip("\n").split(",", 4)
        if len(p) == 5 and p[2] != "0" and not p[4].startswith("memcpy:"):
            rows.append((int(p[0]), int(p[1]), trace_step.short(p[4])))
    rows.sort()
    embeds = [i for i, r in enumerate(rows) if r[2] == "embed_kernel"]
    if "--batches" in sys.argv:
        for a, b in zip(embeds, embeds[1:] + [len(rows)]):
            if rows[a:b] and max(r[1] for r in rows[a:b]) - rows[a][0] > 20e6:
                summary(rows[a:b], top)
        return
    if prefill and len(embeds) >= 2:
        rows = rows[:embeds[1]]
    summary(rows, top)


def summary(rows, top):
    total, by = 0, {}
    for s, e, name in rows:
        t = by.setdefault(name, [0, 0])
        t[0] += e - s
        t[1] += 1
        total += e - s
    span = (max(r[1] for r in rows) - rows[0][0]) if rows else 0
    print("kernels: %.3f ms of kernel time over a %.3f ms span, %d launches" % (total / 1e6, span / 1e6, len(rows)))
    for name, (t, n) in sorted(by.items(), key=lambda kv: -kv[1][0])[:top]:
        print("%9.3f ms %5.1f%% %6d x %8.1f us  %s" % (t / 1e6, 100.0 * t / total, n, t / n / 1e3, name))


if __name__ == "__main__":
    main()
