#!/usr/bin/env bash
# A longer kill -9 soak of the event store than CI runs: `bunraku run` with the ledger guest is
# killed with SIGKILL while appends are in flight, restarted, and checked (every acknowledged
# event present with the bytes sent, no gaps, PRAGMA integrity_check clean), N times.
#
#   scripts/soak-kill9.sh [ITERATIONS]     (default 200; CI runs 20)
set -euo pipefail
cd "$(dirname "$0")/.."
BUNRAKU_KILL_ITERATIONS="${1:-200}" exec cargo test -p bunraku-tests --test all -- \
    --exact events::acknowledged_events_survive_kill_9_of_the_host_in_a_loop --nocapture
