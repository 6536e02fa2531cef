"""Reads the wandb runs under a wandb directory (offline runs: `run-*.wandb` files) back, as the
wandb SDK wrote them, and prints them as one JSON object: {"runs": [...]} in start order, each
with its id, project, name, notes, config, history rows (`_step` and the logged keys), saved
files and exit code.

Usage: wandb-history.py WANDB_DIR

The records are decoded with wandb's own protobuf classes (`wandb.proto.wandb_internal_pb2`).
The file framing is wandb's LevelDB-style log (a 7-byte `:W&B` header, then 32 KiB blocks of
records, each with a CRC-32 of its type and data); wandb 0.31 dropped the Python reader of it
(`wandb.sdk.internal.datastore`) for its Go core, so the few lines that walk the framing are
here, and every record's CRC is checked.
"""

import glob
import json
import os
import struct
import sys
import zlib

from wandb.proto import wandb_internal_pb2 as pb

HEADER = 7  # a record's header: CRC-32 (4), length (2), type (1); also the file header's size
BLOCK = 32768
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def records(path):
    """Every record of a .wandb file, in order."""
    with open(path, "rb") as f:
        data = f.read()
    ident, magic, version = struct.unpack("<4sHB", data[:HEADER])
    if (ident, magic, version) != (b":W&B", 0xBEE1, 0):
        sys.exit(f"{path}: not a wandb log (header {data[:HEADER]!r})")
    i, parts = HEADER, []
    while i < len(data):
        left = BLOCK - i % BLOCK
        if left < HEADER:  # a block's tail too short for a header is zero padding
            i += left
            continue
        crc, n, kind = struct.unpack("<IHB", data[i : i + HEADER])
        body = data[i + HEADER : i + HEADER + n]
        i += HEADER + n
        if kind == 0 and n == 0:  # zero padding at the end of a file still being written
            continue
        if zlib.crc32(body, zlib.crc32(bytes([kind]))) != crc:
            sys.exit(f"{path}: bad CRC at byte {i - n - HEADER}")
        parts = [body] if kind in (FULL, FIRST) else parts + [body]
        if kind in (FULL, LAST):
            r = pb.Record()
            r.ParseFromString(b"".join(parts))
            yield r


def items(updates):
    return {u.key or "/".join(u.nested_key): json.loads(u.value_json) for u in updates}


def run_of(path):
    run = {"file": path, "history": [], "files": [], "exit_code": None}
    for r in records(path):
        kind = r.WhichOneof("record_type")
        if kind == "run":
            run.update(
                id=r.run.run_id,
                project=r.run.project,
                name=r.run.display_name,
                notes=r.run.notes,
                start=r.run.start_time.ToNanoseconds(),
                config=items(r.run.config.update),
            )
        elif kind == "history":
            run["history"].append(items(r.history.item))
        elif kind == "files":
            run["files"] += [f.path for f in r.files.files]
        elif kind == "exit":
            run["exit_code"] = r.exit.exit_code
    return run


def main():
    # Each run's own folder ({offline-,}run-DATE-ID), not the `latest-run` link to one of them.
    paths = [
        p
        for p in glob.glob(os.path.join(sys.argv[1], "*run-*", "run-*.wandb"))
        if not os.path.islink(os.path.dirname(p))
    ]
    runs = sorted((run_of(p) for p in paths), key=lambda r: r["start"])
    print(json.dumps({"runs": runs}))


if __name__ == "__main__":
    main()
