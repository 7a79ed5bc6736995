//! End-to-end tests of `courier bench` that never run (or build) the benchmark itself:
//! - `--help` says what it runs;
//! - `--dry-run` names the command, with extra arguments passed through;
//! - an option of its own given a value is refused with a clear message.

mod support;

use std::time::Duration;
use support::courier;

const DEADLINE: Duration = Duration::from_secs(30);

#[test]
fn help_names_the_benchmark() {
    let out = courier(&["bench", "--help"], &[], DEADLINE);
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stdout.contains("courier-bench rpc --progress"),
        "help does not say what runs:\n{}",
        out.stdout
    );
}

#[test]
fn dry_run_shows_the_command_and_passes_arguments() {
    let out = courier(&["bench", "--dry-run", "--quick", "x"], &[], DEADLINE);
    assert!(out.status.success(), "{}", out.stderr);
    let shown = out.stdout.trim();
    assert!(
        shown.contains("courier-bench") && shown.contains("rpc --progress --quick x"),
        "dry run showed {shown:?}"
    );
}

#[test]
fn bad_option_value_is_refused() {
    let out = courier(&["bench", "--dry-run=maybe"], &[], DEADLINE);
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("--dry-run") && out.stderr.contains("maybe"),
        "unclear message:\n{}",
        out.stderr
    );
}
