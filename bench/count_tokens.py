#!/usr/bin/env python3
"""Baseline: a plain Python script counting checks and rejections per token in the
tokenwatch nginx format (the reference point of the brief). Prints totals."""
import sys
from collections import Counter

checks, rejected = Counter(), Counter()
with open(sys.argv[1], "rb") as f:
    for line in f:
        parts = line.split(b'"')
        if len(parts) < 9:
            continue
        token = parts[-4] if len(parts) >= 11 else b"-"
        status = parts[2].split()[0] if len(parts[2].split()) > 0 else b""
        checks[token] += 1
        if status in (b"401", b"403"):
            rejected[token] += 1
print(sum(checks.values()), sum(rejected.values()), len(checks))
