#!/usr/bin/env bash
# courier::shm between a 32-bit and a 64-bit process: the cross-process tests of courier-shm
# (rpc.rs: every message kind, scalars at full u64 width, lends, pushes, deferred answers,
# faults; xous.rs; channel.rs: ShmChannel) run in this 64-bit (x86_64) test process against
# peer processes built for i686-unknown-linux-musl. The peers play both parts: 32-bit servers
# for a 64-bit client, and 32-bit clients of a 64-bit server. Each test binary finds its peer
# through COURIER_SHM_TEST_PEER_EXE (tests/support/mod.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=i686-unknown-linux-musl
TESTS=(rpc xous channel)

loud_skip() {
    echo "########################################################################" >&2
    echo "## WARNING: SKIPPING the 32/64-bit peer tests: $1" >&2
    echo "########################################################################" >&2
    exit 0
}

if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    rustup target add "$TARGET" || loud_skip "could not install the $TARGET target"
fi

# The test executables cargo built, by test name, from its JSON messages.
executables() {
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["kind"] == ["test"]:
        print(m["target"]["name"], m["executable"])
'
}

args=()
for t in "${TESTS[@]}"; do args+=(--test "$t"); done
echo "== peer32: building the $TARGET peers and the host tests"
peers="$(cargo test -q -p courier-shm "${args[@]}" --target "$TARGET" --no-run --message-format=json | executables)"
hosts="$(cargo test -q -p courier-shm "${args[@]}" --no-run --message-format=json | executables)"

for t in "${TESTS[@]}"; do
    peer="$(awk -v t="$t" '$1 == t { print $2 }' <<<"$peers")"
    host="$(awk -v t="$t" '$1 == t { print $2 }' <<<"$hosts")"
    if [[ -z "$peer" || -z "$host" ]]; then
        echo "FAIL: no executable for test $t (peer '$peer', host '$host')" >&2
        exit 1
    fi
    if command -v file >/dev/null && ! file -b "$peer" | grep -q '32-bit'; then
        echo "FAIL: the peer of $t is not a 32-bit executable: $peer" >&2
        exit 1
    fi
    if ! "$peer" --list >/dev/null 2>&1; then
        loud_skip "the $TARGET executables do not run on this host"
    fi
    echo "== peer32: $t (64-bit test process, 32-bit peers)"
    COURIER_SHM_TEST_PEER_EXE="$peer" "$host" --test-threads=1
done
echo "peer32: the courier-shm process tests pass between 32-bit and 64-bit processes"
