#!/usr/bin/env python3
"""After the test suite: nothing it started may still run. scripts/test.sh gives `cargo test`
(and so every process the tests start, and what those start: servers, ranks, slurm steps, which
srun exports it to) CLIP_TEST_RUN=ID in its environment; this lists every process whose
environment holds it, kills them (SIGKILL: they are the suite's own, and orphans) and exits 1
naming them. Processes of other runs (another suite on the same machine) are left alone.

    check-leftovers.py ID
"""
import os
import signal
import sys

marker = f"CLIP_TEST_RUN={sys.argv[1]}".encode()
me = os.getpid()
left = []
for pid in filter(str.isdigit, os.listdir("/proc")):
    if int(pid) == me:
        continue
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = f.read().split(b"\0")
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            cmd = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:  # gone meanwhile, or not ours to read
        continue
    if marker in env and cmd:  # a zombie has no command line and holds nothing
        left.append((int(pid), cmd))
for pid, cmd in left:
    print(f"check-leftovers: still running after the tests, killed: pid {pid}: {cmd[:300]}",
          file=sys.stderr)
    try:
        os.kill(pid, signal.SIGKILL)
    except OSError:
        pass
if left:
    sys.exit(f"check-leftovers: {len(left)} process(es) the tests started outlived them")
print("check-leftovers: nothing the tests started is left")
