#!/usr/bin/env python3
"""How long `dtl lsp` takes to answer an edit with diagnostics, per example.

Opens every example (and the zoo) in one server, then sends whole-document
changes and times each until the diagnostics of that version arrive (the
first publication: the checks that need no data; the data check follows in
the background). Prints the median of 9 edits per file and its share of the
50 ms budget an editor user notices. Run with a release build for the goal:

    cargo build --release && python3 benches/lsp_latency.py target/release/dtl
"""
import json
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
BUDGET_MS = 50.0
EDITS = 9


def main() -> int:
    binary = sys.argv[1] if len(sys.argv) > 1 else str(ROOT / "target/debug/dtl")
    server = subprocess.Popen([binary, "lsp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)

    def send(message):
        body = json.dumps(message).encode()
        server.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        server.stdin.flush()

    def receive():
        length = 0
        while True:
            line = server.stdout.readline().strip()
            if not line:
                break
            if line.startswith(b"Content-Length:"):
                length = int(line.split()[1])
        return json.loads(server.stdout.read(length))

    def diagnostics_of(uri, version):
        while True:
            m = receive()
            if m.get("method") == "textDocument/publishDiagnostics" and m["params"]["uri"] == uri \
                    and m["params"].get("version") == version:
                return m["params"]["diagnostics"]

    send({"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {"capabilities": {}}})
    receive()
    send({"jsonrpc": "2.0", "method": "initialized", "params": {}})
    files = sorted((ROOT / "examples").glob("*.dtl")) + sorted((ROOT / "examples/zoo").glob("*.dtl"))
    print(f"{'file':<32} {'ms per edit':>12} {'of budget':>10}")
    worst = 0.0
    for path in files:
        uri = path.as_uri()
        text = path.read_text()
        send({"jsonrpc": "2.0", "method": "textDocument/didOpen", "params": {
            "textDocument": {"uri": uri, "languageId": "dtl", "version": 1, "text": text}}})
        diagnostics_of(uri, 1)
        times = []
        for version in range(2, 2 + EDITS):
            start = time.perf_counter()
            # A real edit: a blank line more each time, so the text changes.
            send({"jsonrpc": "2.0", "method": "textDocument/didChange", "params": {
                "textDocument": {"uri": uri, "version": version},
                "contentChanges": [{"text": text + "\n" * version}]}})
            diagnostics_of(uri, version)
            times.append((time.perf_counter() - start) * 1000)
        median = statistics.median(times)
        worst = max(worst, median)
        print(f"{str(path.relative_to(ROOT)):<32} {median:>12.1f} {median / BUDGET_MS:>9.2f}x")
    send({"jsonrpc": "2.0", "id": 1, "method": "shutdown", "params": None})
    send({"jsonrpc": "2.0", "method": "exit", "params": None})
    server.wait(timeout=10)
    print(f"worst median: {worst:.1f} ms ({worst / BUDGET_MS:.2f}x the {BUDGET_MS:.0f} ms budget)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
