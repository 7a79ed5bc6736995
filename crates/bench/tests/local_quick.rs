//! End-to-end test of `courier-bench local --quick`: runs the built binary (killed if it takes
//! more than 60 s) and checks
//! - it exits with status 0;
//! - the header records the machine, rustc, commit and date;
//! - the table has a row for every implementation in every scenario;
//! - every goal is reported with a PASS or MISS verdict;
//! - `--markdown-out` writes the same report and `--json` writes every row and goal.

mod support;
use support::run_with_deadline;

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
        3,
        "{json}"
    );
    assert_eq!(json.matches("\"scenario\": ").count(), 17, "{json}");
    let verdicts = json.matches("\"verdict\": \"PASS\"").count()
        + json.matches("\"verdict\": \"MISS\"").count();
    assert_eq!(verdicts, 5, "{json}");

    for header in ["- machine: nproc ", "- rustc: ", "- commit: ", "- date: "] {
        assert!(
            out.lines().any(|l| l.starts_with(header)),
            "no header line {header:?} in:\n{out}"
        );
    }

    let rows: &[(&str, &[&str])] = &[
        (
            "(1) sync 1:1",
            &[
                "courier::local",
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
    ];
    for (scenario, names) in rows {
        for name in *names {
            let prefix = format!("| {scenario} | {name} | ");
            let line = out
                .lines()
                .find(|l| l.starts_with(&prefix))
                .unwrap_or_else(|| panic!("no row {prefix:?} in:\n{out}"));
            let cells: Vec<&str> = line.split(" | ").collect();
            assert_eq!(
                cells.len(),
                10,
                "row {prefix:?} does not have 10 cells: {line}"
            );
            // cells: scenario, name, median, p99, calls/s, ratio median, ratio calls/s, ...
            if *name == "courier::local" {
                assert_eq!(&cells[5..7], ["—", "—"], "courier row has ratios: {line}");
            } else {
                for ratio in &cells[5..7] {
                    assert!(ratio.ends_with('x'), "peer row has no ratio: {line}");
                }
            }
        }
    }

    let goals: Vec<&str> = out
        .lines()
        .filter(|l| l.ends_with("| PASS |") || l.ends_with("| MISS |"))
        .collect();
    assert_eq!(goals.len(), 5, "expected 5 goal verdicts in:\n{out}");
}
