#!/usr/bin/env python3
"""Summarises a ONEDNN_VERBOSE=1 log on stdin (bench/run-bf16.sh): the ISA oneDNN reports for this
CPU and how many times each primitive ran on each implementation (kernel) with which source type.

  ONEDNN_VERBOSE=1 PROGRAM ... 2>&1 | bench/onednn_kernels.py LABEL
"""
import collections
import sys


def main():
    label = sys.argv[1] if len(sys.argv) > 1 else "oneDNN"
    isa, seen = None, collections.Counter()
    for line in sys.stdin:
        f = line.strip().split(",")
        if len(f) >= 4 and f[0] == "onednn_verbose" and f[1] == "info" and f[3].startswith("isa:"):
            isa = f[3][4:]
        elif len(f) > 6 and f[0] == "onednn_verbose" and f[1] == "exec":
            src = f[6].split()[0].split(":")[0] if f[6] else "?"
            seen[f"{f[3]} {f[4]} ({src})"] += 1
    print(f"  {label}: oneDNN ISA: {isa or 'n/a (oneDNN not used)'}")
    for k, n in seen.most_common():
        print(f"    {n:4d} x {k}")


if __name__ == "__main__":
    main()
