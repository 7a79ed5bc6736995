#!/usr/bin/env bash
# courier::flat checks beyond README's `cargo test --workspace ...` / clippy / fmt / doc (which .ci/run runs):
# the layout signatures of fixed-width types must be identical in a 32-bit build
# (i686-unknown-linux-musl, run on this x86_64 host) and in the 64-bit host build.
set -euo pipefail
cd "$(dirname "$0")/.."

TARGET=i686-unknown-linux-musl
EXAMPLE=flat_signatures
TARGET_DIR="${CARGO_TARGET_DIR:-target}"

loud_skip() {
    echo "########################################################################" >&2
    echo "## WARNING: SKIPPING the 32-bit signature check: $1" >&2
    echo "########################################################################" >&2
    exit 0
}

echo "== flat: 64-bit host signatures"
cargo build -q -p courier-core --example "$EXAMPLE"
host_out="$("$TARGET_DIR/debug/examples/$EXAMPLE")"
echo "$host_out"

echo "== flat: 32-bit ($TARGET) signatures"
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
    rustup target add "$TARGET" || loud_skip "could not install the $TARGET target"
fi
cargo build -q -p courier-core --example "$EXAMPLE" --target "$TARGET"
bin32="$TARGET_DIR/$TARGET/debug/examples/$EXAMPLE"
if ! out32="$("$bin32")"; then
    loud_skip "the $TARGET binary does not run on this host"
fi
echo "$out32"

fixed_host="$(grep -v '^width-dependent' <<<"$host_out")"
fixed_32="$(grep -v '^width-dependent' <<<"$out32")"
if [[ "$fixed_host" != "$fixed_32" ]]; then
    echo "FAIL: fixed-width layout signatures differ between 64-bit and 32-bit builds" >&2
    diff <(echo "$fixed_host") <(echo "$fixed_32") >&2 || true
    exit 1
fi
# Every width-dependent layout must differ, line by line (which also proves that the second
# binary really was 32-bit).
dep_host="$(grep '^width-dependent' <<<"$host_out")"
dep_32="$(grep '^width-dependent' <<<"$out32")"
while IFS= read -r line; do
    if grep -qxF "$line" <<<"$dep_32"; then
        echo "FAIL: a width-dependent signature is the same on both targets: $line" >&2
        exit 1
    fi
done <<<"$dep_host"
echo "flat: 32/64-bit signature check: $(wc -l <<<"$fixed_host") signatures identical, $(wc -l <<<"$dep_host") width-dependent signatures differ as expected"

# Miri (Stacked Borrows, then Tree Borrows) over courier-core's flat unit tests, when a nightly
# toolchain with Miri is already installed; never installed here, to keep this script short.
if cargo +nightly miri --version >/dev/null 2>&1; then
    echo "== flat: Miri (stacked borrows) on courier-core flat tests"
    cargo +nightly miri test -q -p courier-core --lib flat
    echo "== flat: Miri (tree borrows) on courier-core flat tests"
    MIRIFLAGS="-Zmiri-tree-borrows" cargo +nightly miri test -q -p courier-core --lib flat
else
    echo "flat: NOTE: nightly Miri not installed; skipping the Miri run (rustup component add miri --toolchain nightly)"
fi
