#!/usr/bin/env python3
"""Fails when a function in crates/*/src is longer than the limit (default 120 lines).

A function's length runs from its `fn` line to the line closing its body (brace matching that
skips strings, chars and comments). Exempt: the unpickler's opcode loop, a single `match` over
the pickle protocol that reads best whole.
"""
import pathlib
import re
import sys

LIMIT = int(sys.argv[1]) if len(sys.argv) > 1 else 120
EXEMPT = {("crates/torch-ext/src/pickle.rs", "run")}
FN = re.compile(r"^\s*(pub(\([^)]*\))?\s+)?(const\s+|async\s+|unsafe\s+|extern\s+\"C\"\s+)*fn\s+(\w+)")


def strip(line, state):
    """The line without string/char literals and comments; `state` carries block comments and
    multi-line strings across lines."""
    out, i = [], 0
    while i < len(line):
        c = line[i]
        if state["block"]:
            if line.startswith("*/", i):
                state["block"] = False
                i += 2
            else:
                i += 1
            continue
        if state["str"]:
            if c == "\\":
                i += 2
                continue
            if c == '"':
                state["str"] = False
            i += 1
            continue
        if line.startswith("//", i):
            break
        if line.startswith("/*", i):
            state["block"] = True
            i += 2
            continue
        if c == '"':
            state["str"] = True
            i += 1
            continue
        m = re.match(r"'(\\.|[^\\'])'", line[i:])
        if m:
            i += len(m.group(0))
            continue
        m = re.match(r'r(#*)"', line[i:])
        if m:
            end = line.find('"' + m.group(1), i + len(m.group(0)))
            i = len(line) if end < 0 else end + 1 + len(m.group(1))
            continue
        out.append(c)
        i += 1
    return "".join(out)


def long_functions(path):
    lines = path.read_text().splitlines()
    state = {"block": False, "str": False}
    clean = [strip(l, state) for l in lines]
    found = []
    for start, l in enumerate(clean):
        m = FN.match(l)
        if not m:
            continue
        depth, opened = 0, False
        for end in range(start, len(clean)):
            if not opened and ";" in clean[end] and "{" not in clean[end]:
                break  # a declaration without a body (trait method)
            depth += clean[end].count("{") - clean[end].count("}")
            opened = opened or "{" in clean[end]
            if opened and depth <= 0:
                n = end - start + 1
                if n > LIMIT:
                    found.append((m.group(4), start + 1, n))
                break
    return found


root = pathlib.Path(__file__).resolve().parent.parent
bad = []
for path in sorted(root.glob("crates/*/src/**/*.rs")):
    rel = str(path.relative_to(root))
    for name, line, n in long_functions(path):
        if (rel, name) not in EXEMPT:
            bad.append(f"{rel}:{line}: fn {name} is {n} lines (limit {LIMIT})")
print("\n".join(bad) if bad else f"no function in crates/*/src is over {LIMIT} lines")
sys.exit(1 if bad else 0)
