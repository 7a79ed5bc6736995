//! End-to-end test of `courier-bench local --quick`: runs the built binary (killed if it takes
//! more than 60 s) and checks
//! - it exits with status 0;
//! - the header records the machine, rustc, commit and date;
//! - the table has a row for every implementation in every scenario, under both loads (idle,
//!   one core busy);
//! - every goal is reported with a verdict (PASS, MISS, or info where no peer is as fast);
//! - `--markdown-out` writes the same report and `--json` writes every row and goal.

mod support;
use support::{assert_header, both_loads, goals_judged, row, run_with_deadline};

#[test]
fn local_quick_prints_every_row() {
    let dir = std::env::temp_dir();
    let md_path = dir.join(format!("courier-bench-test-{}.md", std::process::id()));
    let json_path = dir.join(format!("courier-bench-test-{}.json", std::process::id()));
    let (status, out) = run_with_deadline(&[
        "local",
        "--quick",
        "--markdown-out",
        md_path.to_str().expect("utf-8 temp path"),
        "--json",
        json_path.to_str().expect("utf-8 temp path"),
    ]);
    let md = std::fs::read_to_string(&md_path);
    let json = std::fs::read_to_string(&json_path);
    let _ = std::fs::remove_file(&md_path);
    let _ = std::fs::remove_file(&json_path);
    assert!(status.success(), "exit status {status}; output:\n{out}");
    assert_eq!(md.expect("markdown file written"), out);
    let json = json.expect("json file written");
    assert!(
        json.starts_with('{') && json.trim_end().ends_with('}'),
        "{json}"
    );
    assert_eq!(
        json.matches("\"name\": \"courier::local\"").count(),
        2 * 4,
        "{json}"
    );
    assert_eq!(json.matches("\"scenario\": ").count(), 2 * 27, "{json}");
    assert_eq!(json.matches("\"load\": \"busy\"").count(), 27, "{json}");
    // Idle: thirteen goals; busy: median, p99, calls/s and CPU/call in each of four scenarios.
    assert_eq!(json.matches("\"verdict\": ").count(), 13 + 4 * 4, "{json}");
    assert_eq!(
        json.matches("\"verdict\": \"not measured\"").count(),
        0,
        "{json}"
    );

    assert_header(&out);

    let rows: &[(&str, &[&str])] = &[
        (
            "(1) sync 1:1",
            &[
                "courier::local",
                "courier::local busy-poll (opt-in)",
                "courier::local via #[courier::service]",
                "floor: two-thread spin ping-pong",
                "courier::local, handler works",
                "floor: two-thread spin ping-pong, handler works",
                "ump 0.13",
                "crossbeam-channel",
                "crossbeam-channel (reused reply)",
                "flume",
                "std::sync::mpsc",
                "tokio",
            ],
        ),
        (
            "(2) sync 4:1",
            &[
                "courier::local",
                "ump 0.13",
                "crossbeam-channel",
                "flume",
                "std::sync::mpsc",
                "tokio",
            ],
        ),
        (
            "(3) async",
            &["courier::local", "ump 0.13", "flume", "tokio"],
        ),
        (
            "(4) sync 1:1, 300 µs handler",
            &[
                "courier::local",
                "ump 0.13",
                "crossbeam-channel",
                "std::sync::mpsc",
                "floor: the handler's work, one thread",
            ],
        ),
    ];
    for (scenario, names) in rows.iter().flat_map(|(s, n)| both_loads(s).map(|s| (s, n))) {
        for name in *names {
            let cells = row(&out, &scenario, name);
            if *name == "courier::local" {
                assert_eq!(
                    &cells[5..7],
                    ["—", "—"],
                    "courier row has ratios: {cells:?}"
                );
            } else {
                for ratio in &cells[5..7] {
                    assert!(ratio.ends_with('x'), "peer row has no ratio: {cells:?}");
                }
            }
        }
    }

    assert_eq!(
        goals_judged(&out),
        13 + 4 * 4,
        "expected 29 goals in:\n{out}"
    );
}
