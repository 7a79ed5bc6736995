#!/usr/bin/env bash
# The interchange benchmark: courier::interchange beside the interchange crate 0.3, in one run.
# Installs valgrind (for the callgrind instruction counts) if it is missing, then prints the
# markdown tables (README.md, "Performance").
#
#   bash crates/bench/interchange.sh            # full run, about a minute
#   bash crates/bench/interchange.sh --quick    # a few seconds, figures not meaningful
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v valgrind >/dev/null 2>&1; then
    echo "installing valgrind (for callgrind)..." >&2
    if [ "$(id -u)" = 0 ]; then sudo=""; else sudo="sudo"; fi
    $sudo apt-get update -qq && $sudo apt-get install -y -qq valgrind >/dev/null \
        || echo "WARNING: could not install valgrind: instruction counts will be missing" >&2
fi

cargo run --release -q -p courier-bench -- interchange "$@"
