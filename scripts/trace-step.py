#!/usr/bin/env python3
"""One decode step of a kernel trace (scripts/cupti-trace.sh): every kernel's
start and end relative to the step's first kernel, its duration, its stream,
and the idle time on its stream before it (negative: it was launched early
by programmatic dependent launch and waited). A step is the span between two
launches of the embedding kernel; the last complete one is shown, then what
happens between its last kernel and the next step's first kernel (copies,
and the host's CUDA runtime calls, stream "host"). With --walls instead:
each step's wall time (one embedding launch to the next; the first stretch,
a prefill, left out) summed up, and the longest steps (e.g. those that
close a compressor window).
    python3 scripts/trace-step.py trace.csv [step-from-end | --walls]"""
import re
import sys


def short(name):
    """Kernel name out of an Itanium-mangled one, with integer template args."""
    m = re.match(r"_Z(\d+)", name)
    if not m:
        return name[:40]
    n = int(m.group(1))
    base = name[m.end():m.end() + n]
    args = re.findall(r"Li(-?\d+)E|Lb([01])E", name[m.end() + n:m.end() + n + 60])
    if name[m.end() + n:].startswith("I") and args:
        base += "<" + ",".join(a or b for a, b in args) + ">"
    return base


def main():
    rows = []
    for line in open(sys.argv[1]):
        p = line.rstrip("\n").split(",", 4)
        if len(p) == 5:
            rows.append((int(p[0]), int(p[1]), int(p[2]), short(p[4])))
    rows.sort()
    starts = [i for i, r in enumerate(rows) if r[3] == "embed_kernel"]
    if len(sys.argv) > 2 and sys.argv[2] == "--walls":
        walls = sorted(((rows[b][0] - rows[a][0]) / 1e3, k) for k, (a, b) in enumerate(zip(starts[1:], starts[2:])))
        if not walls:
            sys.exit("trace-step: fewer than two decode steps in the trace")
        mid = walls[len(walls) // 2][0]
        print("%d steps: median %.1f us, mean %.1f us, shortest %.1f us" %
              (len(walls), mid, sum(w for w, _ in walls) / len(walls), walls[0][0]))
        print("longest: " + ", ".join("step %d %.1f us" % (k, w) for w, k in walls[::-1][:4]))
        return
    back = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    if len(starts) < back + 1:
        sys.exit("trace-step: fewer than %d steps in the trace" % (back + 1))
    a, b = starts[-back - 1], starts[-back]
    step, t0 = rows[a:b], rows[a][0]
    end = max(r[1] for r in step if r[2] != 0 and not r[3].startswith("memcpy:"))
    nxt = rows[b][0]
    print("step: %.1f us of kernels, then %.1f us until the next step's first kernel" % ((end - t0) / 1e3,
                                                                                      (nxt - end) / 1e3))
    last = {}
    for s, e, st, name in step:
        if st == 0 or name.startswith("memcpy:"):
            continue
        idle = (s - last[st]) / 1e3 if st in last else 0.0
        last[st] = e
        print("%8.1f %8.1f  %6.1f us  idle %6.1f  stream %-4d %s" % ((s - t0) / 1e3, (e - t0) / 1e3, (e - s) / 1e3,
                                                                     idle, st, name))
    print("between steps (times from the step's last kernel):")
    for s, e, st, name in rows[a:b + 1]:
        if e > end and s < nxt or (s, e, st, name) == rows[b]:
            print("%8.1f %8.1f  %6.1f us  %-6s %s" % ((s - end) / 1e3, (e - end) / 1e3, (e - s) / 1e3,
                                                   "host" if st == 0 else "s%d" % st, name))


if __name__ == "__main__":
    main()
