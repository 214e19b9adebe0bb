#!/usr/bin/env python3
"""Rewrites a `tokenwatch gen --format nginx` log (stdin) into the long field shapes that
independent generators and real gateways write (stdout), for parse benchmarks (issue 18):

- long browser/SDK user agents, some with escaped quotes (`\\"`);
- referers with query strings on about half the lines;
- request targets with long query strings, a few with nginx's `\\xNN` escapes;
- about one client in seven on IPv6 (compressed form), mapped per address;
- about half the tokens logged as the secret itself (`Bearer sk-proj-…`, the Authorization
  header as the token field), mapped per token so each token keeps one identity;
- an extra trailing `"$http_x_forwarded_for"` list on a quarter of the lines.

Times, statuses, reasons and which token/address each line has are kept, so detectors see
the same traffic. Deterministic: the same input gives the same output.
"""
import hashlib
import re
import sys

LINE = re.compile(
    rb'^(\S+) - (\S+) \[([^\]]+)\] "([A-Z]+) (\S+) (HTTP/[0-9.]+)" (\d{3}) (\S+) "([^"]*)" "([^"]*)" "([^"]*)" "([^"]*)"$'
)

AGENTS = [
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0",
    b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    b"Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
    b"Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    b"OpenAI/Python 1.55.3 (async:asyncio; arch:x86_64; os:Linux; runtime:CPython 3.12.7; \\\"langchain-openai/0.2.9\\\")",
    b"python-requests/2.32.3 (compatible; \\\"internal-batch-runner\\\" build 4471; +https://ci.example.internal/jobs)",
    b"Dify/0.11.2 (+https://dify.ai) node-fetch/3.3.2 axios/1.7.7 Node.js/v20.18.1 linux x64",
    b"Mozilla/5.0 (Linux; Android 14; Pixel 8 Pro Build/AP2A.240905.003) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.6723.107 Mobile Safari/537.36",
]


def h(*parts):
    m = hashlib.blake2b(digest_size=16)
    for p in parts:
        m.update(p)
        m.update(b"\0")
    return m.digest()


ip_map = {}
tok_map = {}


def ip(a):
    got = ip_map.get(a)
    if got is None:
        d = h(b"ip", a)
        if d[0] % 7 == 0:
            got = b"2a01:4f8:%x:%x::%x" % (d[1] << 8 | d[2], d[3] << 8 | d[4], d[5] << 8 | d[6])
        else:
            got = a
        ip_map[a] = got
    return got


def token(t):
    if t == b"-":
        return t
    got = tok_map.get(t)
    if got is None:
        d = h(b"tok", t)
        if d[0] % 2 == 0:
            got = b"Bearer sk-proj-" + (h(b"secret", t) + h(b"secret2", t)).hex().encode()[:48]
        else:
            got = t
        tok_map[t] = got
    return got


def main():
    out = sys.stdout.buffer
    for n, line in enumerate(sys.stdin.buffer):
        m = LINE.match(line.rstrip(b"\n"))
        if not m:
            out.write(line)
            continue
        addr, user, ts, method, path, proto, status, size, ref, ua, tok, reason = m.groups()
        d = h(b"line", str(n).encode())
        sep = b"&" if b"?" in path else b"?"
        path = path + sep + b"model=gpt-4o-mini-2024-07-18&stream=true&temperature=0.7&trace_id=" + d.hex().encode()
        if d[0] % 50 == 0:
            path += b"&q=caf\\xC3\\xA9+na\\xC3\\xAFve"
        if d[1] % 2 == 0:
            ref = b"https://app.example.com/workspace/" + d[2:10].hex().encode() + b"/chat?conversation_id=" + d[4:16].hex().encode() + b"&tab=history"
        ua = AGENTS[h(b"ua", ua, tok)[0] % len(AGENTS)]
        tail = b""
        if d[3] % 4 == 0:
            tail = b' "203.0.113.%d, 10.%d.0.%d"' % (d[4], d[5], d[6])
        out.write(
            b'%s - %s [%s] "%s %s %s" %s %s "%s" "%s" "%s" "%s"%s\n'
            % (ip(addr), user, ts, method, path, proto, status, size, ref, ua, token(tok), reason, tail)
        )


if __name__ == "__main__":
    main()
