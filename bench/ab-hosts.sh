#!/usr/bin/env bash
# Compares two builds of the host on one ping-pong rally, run alternately (two host builds cannot
# share a process, and this machine's speed drifts: alternating short runs and taking medians
# holds the comparison to what changed).
#
#   bench/ab-hosts.sh BASE NEW [sdk|fn|raw] [ROUNDS]
#
# BASE and NEW are copies of the `pingpong` bench binary (`cargo bench -p bunraku-bench --bench
# pingpong --no-run` prints its path; copy it aside before rebuilding). Each round runs BASE, then
# NEW, for 2 s each (`BUNRAKU_BENCH_ONLY`, `BUNRAKU_BENCH_SECS`). Each binary builds the guests
# of the checkout it was built from: built in one checkout, both run its current guests; for a
# change on both sides of the ABI, build BASE in a `git worktree` of its own (with the shared
# target directory, clean the workspace crates' release artifacts afterwards: `cargo clean
# --release -p bunraku-runtime ...`, or cargo may take the worktree's build as fresh). Prints
# the median time per message of each and their ratio.
set -euo pipefail
base=$1 new=$2 only=${3:-raw} rounds=${4:-8}
cd "$(dirname "$0")"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for _ in $(seq "$rounds"); do
  for side in base new; do
    bin=$base
    [ "$side" = new ] && bin=$new
    BUNRAKU_BENCH_ONLY=$only BUNRAKU_BENCH_SECS=2 "$bin" --bench 2>/dev/null |
      awk -v side="$side" '$1 == "'"$only"'" { print side, $2 }' >>"$out"
  done
done
python3 - "$out" "$only" <<'PY'
import statistics, sys
samples = {"base": [], "new": []}
for line in open(sys.argv[1]):
    side, ns = line.split()
    samples[side].append(float(ns))
b, n = (statistics.median(samples[k]) for k in ("base", "new"))
print(f"{sys.argv[2]}: base {b:.0f} ns, new {n:.0f} ns per message (medians of "
      f"{len(samples['base'])} and {len(samples['new'])} samples); new/base {n / b:.3f}")
PY
