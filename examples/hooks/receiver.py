#!/usr/bin/env python3
"""A minimal tokenwatch webhook receiver: verifies X-Tokenwatch-Signature, ignores
duplicates by Idempotency-Key, and prints what it would revoke. Replace `revoke()`.

    TOKENWATCH_HOOK_KEY=... python3 receiver.py 8080
"""
import hashlib, hmac, json, os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer

KEY = os.environb[b"TOKENWATCH_HOOK_KEY"]
SEEN = set()  # use a persistent store in production


def revoke(record):
    print(f"{record['event']}: token {record.get('token')} ({record['detector']})", flush=True)


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        want = "sha256=" + hmac.new(KEY, body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, self.headers.get("X-Tokenwatch-Signature", "")):
            return self.answer(401)  # 4xx: tokenwatch will not retry
        key = self.headers.get("Idempotency-Key", "")
        if key not in SEEN:
            revoke(json.loads(body))
            SEEN.add(key)
        self.answer(204)

    def answer(self, code):
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()


HTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8080), Handler).serve_forever()
