#!/usr/bin/env python3
"""Where one kernel's time goes, from Nsight Compute's per-instruction page.
Record and export on the GPU machine (one launch of the kernel; the mangled
name pattern picks the template instance, e.g. 'ILi16ELi4' for the IQ2_XXS
streaming GEMV with x in registers):
    ncu --kernel-name-base mangled -k regex:PATTERN --launch-skip 30 --launch-count 1 \\
        --section WarpStateStats --section SourceCounters -o /tmp/rep CMD...
    ncu -i /tmp/rep.ncu-rep --page source --print-source sass --csv > src.csv
then here:
    python3 scripts/ncu-source.py src.csv [top] [--loop=N]
Prints the stall samples by reason, by opcode (with the executed warp
instructions) and by region, and the instructions with the most samples.
Regions come from the execution counts: an instruction run at least N
times (default: a third of the largest count) is in a loop, one run fewer
times but at all runs once a warp or block (prologue, epilogue). Sampling
is sparse: shares under ~2% are noise."""
import csv
import sys
from collections import Counter, defaultdict

SAMPLES = "Warp Stall Sampling (All Samples)"
EXECUTED = "Instructions Executed"


def opcode(src):
    words = src.split()
    if not words:
        return ""
    word = words[1] if words[0].startswith("@") and len(words) > 1 else words[0]
    return word.split(".")[0]


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    if not args:
        sys.exit(__doc__)
    top = int(args[1]) if len(args) > 1 else 20
    with open(args[0], newline="") as f:
        rows = list(csv.reader(f))
    head = next((i for i, r in enumerate(rows) if r and r[0] == "Address"), None)
    if head is None:
        sys.exit("ncu-source: no 'Address' header row: is this ncu's --page source --csv output?")
    col = {name: i for i, name in enumerate(rows[head])}
    data = [r for r in rows[head + 1:] if len(r) == len(rows[head])]
    num = lambda r, name: int(r[col[name]] or 0) if name in col else 0
    reasons = [n for n in rows[head] if n.startswith("stall_") and "(Not Issued)" not in n]
    total = sum(num(r, SAMPLES) for r in data) or 1
    executed = sum(num(r, EXECUTED) for r in data) or 1
    counts = Counter(num(r, EXECUTED) for r in data if num(r, EXECUTED) > 0)
    loop_min = max(counts) // 3 if counts else 1
    for a in sys.argv[1:]:
        if a.startswith("--loop="):
            loop_min = int(a.split("=", 1)[1])
    print(f"{total} stall samples, {executed} warp instructions executed, {len(data)} SASS instructions")

    by_reason = {n: sum(num(r, n) for r in data) for n in reasons}
    print("\nby reason:")
    for n, v in sorted(by_reason.items(), key=lambda kv: -kv[1]):
        if v:
            print(f"  {n[6:]:20s} {v / total:6.1%}")

    by_op = defaultdict(lambda: [0, 0])
    by_region = defaultdict(lambda: [0, 0])
    for r in data:
        s, e = num(r, SAMPLES), num(r, EXECUTED)
        op = opcode(r[col["Source"]].strip())
        by_op[op][0] += s
        by_op[op][1] += e
        region = "loop" if e >= loop_min else "once a warp or block" if e > 0 else "not executed"
        by_region[region][0] += s
        by_region[region][1] += e
    print(f"\nby region (loop: executed at least {loop_min} times):")
    for k, (s, e) in sorted(by_region.items(), key=lambda kv: -kv[1][0]):
        print(f"  {k:22s} samples {s / total:6.1%}  executed {e / executed:6.1%}")
    print("\nby opcode (executed, samples):")
    for k, (s, e) in sorted(by_op.items(), key=lambda kv: -kv[1][1])[:top]:
        print(f"  {k:10s} {e / executed:6.1%} {s / total:6.1%}")
    print("\ninstructions with the most samples (address, count, samples, main reasons):")
    for r in sorted(data, key=lambda r: -num(r, SAMPLES))[:top]:
        why = sorted(((num(r, n), n[6:]) for n in reasons), reverse=True)[:2]
        print(f"  {r[0][-6:]} {r[col['Source']].strip()[:56]:56s} {num(r, EXECUTED):8d} {num(r, SAMPLES):5d}  "
              + ", ".join(f"{n} {v}" for v, n in why if v))


if __name__ == "__main__":
    main()
