#!/usr/bin/env bash
# The control path at 8…512 ranks before and after issue 20, side by side: `clip-tool sim-ranks`
# built from this checkout (after) and from commit 1af4a92 with scripts/control-path-before.py
# putting 7342318's store-based control path back (before), each run on the same machine one
# after the other. Both are dev builds; the before build goes to target/before (a cold build:
# ~11 min on 2 cores). Before is run with fewer plain steps past 64 ranks (a step takes seconds).
#   bash scripts/bench-control-path.sh            # W = 8,64,256,512 (≈ 25 min)
#   RANKS=8,64 bash scripts/bench-control-path.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RANKS=${RANKS:-8,64,256,512}
STEPS=${STEPS:-200}
PINNED=1af4a92
cargo build -p clip-train --bin clip-tool
after=${CARGO_TARGET_DIR:-target}/debug/clip-tool
src=$(mktemp -d)
trap 'git worktree remove --force "$src" >/dev/null 2>&1 || rm -rf "$src"' EXIT
git worktree add --detach "$src" "$PINNED" >/dev/null
python3 scripts/control-path-before.py "$src"
ln -s "$PWD/.deps" "$src/.deps"
(cd "$src" && CARGO_TARGET_DIR="$OLDPWD/target/before" cargo build -p clip-train --bin clip-tool)
before=target/before/debug/clip-tool
for w in ${RANKS//,/ }; do
    steps=$STEPS
    if [ "$w" -gt 64 ]; then steps=$((STEPS / 10 > 3 ? STEPS / 10 : 3)); fi
    echo "== W = $w, before (7342318's control path), --steps $steps; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$before" sim-ranks --ranks "$w" --steps "$steps"
    echo "== W = $w, after, --steps $STEPS; load: $(cut -d' ' -f1-3 /proc/loadavg)"
    "$after" sim-ranks --ranks "$w" --steps "$STEPS"
done
