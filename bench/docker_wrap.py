#!/usr/bin/env python3
"""Wraps plain log lines (stdin) in Docker's json-file format (stdout), as the json-file
driver writes them: {"log":"<line>\\n","stream":"stdout","time":"<RFC 3339 nano>"}.
Lines over 16 KiB are split like Docker splits them (pieces without the trailing \\n)."""
import json
import sys

SPLIT = 16 * 1024
out = sys.stdout
n = 0
for line in sys.stdin:
    n += 1
    t = '"2026-03-02T13:%02d:%02d.%09dZ"' % ((n // 60_000_000) % 60, (n // 1_000_000) % 60, n % 1_000_000_000)
    pieces = [line[i:i + SPLIT] for i in range(0, len(line), SPLIT)] or [line]
    for p in pieces:
        out.write('{"log":%s,"stream":"stdout","time":%s}\n'
                  % (json.dumps(p, ensure_ascii=False), t))
