#!/usr/bin/env bash
# Runs every fuzz target of courier for a bounded time: `fuzz/run.sh [seconds-per-target]`
# (default 30). Installs cargo-fuzz if it is missing, builds the targets (libFuzzer + ASan),
# runs each on its corpus under fuzz/corpus/<target>/ (the committed seeds, grown in place;
# only seed-* files are committed), and prints per target the executions, exec/s and
# coverage (libFuzzer's `cov:` and `ft:`). Exits 1 if any target crashed, hung or leaked
# (the reproducer is in fuzz/artifacts/<target>/), 2 if this toolchain cannot fuzz.
#
# Environment: TARGETS="a b" to run only some targets; CARGO_TARGET_DIR as usual.
set -uo pipefail
cd "$(dirname "$0")"

secs="${1:-30}"
targets="${TARGETS:-flat_from_slice segment_header channel rpc_server rpc_client net_frame}"

# cargo-fuzz passes nightly-only flags (-Zsanitizer=address, sanitizer coverage) to rustc.
# A stable rustc accepts them with RUSTC_BOOTSTRAP=1; without a working sanitizer runtime
# there is nothing to fuzz with.
export RUSTC_BOOTSTRAP=1
if ! rustc -Z unstable-options --print target-list >/dev/null 2>&1; then
    echo "fuzz: this rustc refuses -Z flags even with RUSTC_BOOTSTRAP=1: cannot build the" \
        "libFuzzer targets here (cargo-fuzz needs nightly flags); skipping." >&2
    exit 2
fi
if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    if ! cargo install cargo-fuzz --locked; then
        echo "fuzz: could not install cargo-fuzz; skipping." >&2
        exit 2
    fi
fi
cargo fuzz --version

# Service names and runtime directories of the targets live in a private temporary
# directory, removed at the end.
scratch="$(mktemp -d)"
logs="$scratch/logs"
mkdir -p "$logs"
export TMPDIR="$scratch"
trap 'rm -rf "$scratch"' EXIT

echo "fuzz: building $targets"
# Every target in one cargo invocation when all are asked for (their binaries then build in
# parallel), else one at a time.
if [ -z "${TARGETS:-}" ]; then
    builds=("")
else
    builds=($targets)
fi
for t in "${builds[@]}"; do
    log="$logs/build-${t:-all}.log"
    if ! cargo fuzz build $t >"$log" 2>&1; then
        cat "$log" >&2
        if grep -q "only accepted on the nightly compiler\|sanitizer is not supported\|unsupported sanitizer" \
            "$log"; then
            echo "fuzz: the toolchain cannot build with the sanitizer flags; skipping." >&2
            exit 2
        fi
        echo "fuzz: building ${t:-the targets} failed" >&2
        exit 1
    fi
done

failed=()
printf '\n%-16s %10s %8s %7s %7s %6s  %s\n' target executions exec/s cov ft corpus result
for t in $targets; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="$logs/$t.log"
    # -timeout: one input running 20 s is a hang (every operation has a deadline far below);
    # -rss_limit_mb: the sanitizer's shadow memory plus the server's segments.
    cargo fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=20 -rss_limit_mb=4096 -max_len=512 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | grep -E 'cov: ' | tail -1)
    cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.*ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.*corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
    if [ "$rc" = 0 ]; then
        result=ok
    else
        result="FAILED (exit $rc)"
        failed+=("$t")
    fi
    printf '%-16s %10s %8s %7s %7s %6s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "${cov:-?}" \
        "${ft:-?}" "${corp:-?}" "$result"
    if [ "$rc" != 0 ]; then
        echo "---- $t: the end of libFuzzer's output ----"
        grep -E -A12 'panicked|ERROR: libFuzzer|ERROR: AddressSanitizer|Test unit written' "$log" \
            | head -60
        echo "---- reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run $t fuzz/artifacts/$t/<file> ----"
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]}"
    exit 1
fi
echo "fuzz: every target ran ${secs}s without a crash, hang or leak"
