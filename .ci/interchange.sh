#!/usr/bin/env bash
# CI for courier::interchange beyond the workspace's test / clippy / fmt / doc (which .ci/run
# runs): the loom models, clippy under cfg(loom), and the builds for embedded targets.
#
#   bash .ci/interchange.sh
#
# Takes about 3.5 minutes on 2 cores from a clean clone, mostly compiling; the loom models
# themselves run in about 15 s. LOOM_MAX_PREEMPTIONS bounds the exploration (default 10, set
# it in the environment to change it). Run by hand without any bound, the models are
# exhaustive and still finish in about 15 s today; the bound keeps CI's time safe if they grow.
set -euo pipefail
cd "$(dirname "$0")/.."

target_root="${CARGO_TARGET_DIR:-target}"

echo "== interchange: loom models (LOOM_MAX_PREEMPTIONS=${LOOM_MAX_PREEMPTIONS:-10}) =="
# A separate target dir: --cfg loom rebuilds everything, and must not evict the normal build.
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-10}" \
    cargo test -p courier-core --lib --release --target-dir "$target_root/loom" \
    -- interchange::loom_models --test-threads=2

echo "== interchange: clippy under cfg(loom) =="
RUSTFLAGS="--cfg loom" cargo clippy -p courier-core --all-targets --target-dir "$target_root/loom" \
    -- -D warnings

echo "== interchange: embedded builds =="
if rustup target add thumbv7em-none-eabihf thumbv6m-none-eabi; then
    # Cortex-M4F: native compare-and-swap.
    cargo build -p courier-core --target thumbv7em-none-eabihf --target-dir "$target_root/embedded"
    cargo build -p courier-core --target thumbv7em-none-eabihf --release \
        --target-dir "$target_root/embedded"
    # A firmware app on #[courier::service(no_std)]: the facade without std, the generated
    # client and dispatcher over interchange.
    cargo build -p courier-firmware-example --target thumbv7em-none-eabihf --release \
        --target-dir "$target_root/embedded"
    # Cortex-M0: no compare-and-swap; atomics from portable-atomic, emulated either with
    # interrupts disabled (single core) or through a critical-section implementation.
    RUSTFLAGS="--cfg portable_atomic_unsafe_assume_single_core" \
        cargo build -p courier-core --target thumbv6m-none-eabi --features portable-atomic \
        --target-dir "$target_root/embedded-single-core"
    cargo build -p courier-core --target thumbv6m-none-eabi \
        --features portable-atomic,portable-atomic/critical-section \
        --target-dir "$target_root/embedded"
    # And without the feature it must not build there (no silent fallback).
    if cargo build -p courier-core --target thumbv6m-none-eabi \
        --target-dir "$target_root/embedded" >/dev/null 2>&1; then
        echo "error: courier-core built for thumbv6m-none-eabi without portable-atomic" >&2
        exit 1
    fi
else
    echo "################################################################################" >&2
    echo "WARNING: 'rustup target add thumbv7em-none-eabihf thumbv6m-none-eabi' FAILED" >&2
    echo "WARNING: the embedded builds of courier-core were SKIPPED, NOT CHECKED" >&2
    echo "################################################################################" >&2
fi

echo "== interchange: portable-atomic feature on the host =="
cargo test -p courier-core --lib --features portable-atomic --target-dir "$target_root/portable" \
    -- interchange

echo "interchange CI: ok"
