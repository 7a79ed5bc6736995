//! `interchange`: `courier::interchange` beside the `interchange` crate 0.3, in one run.
//!
//! Three measurements, both libraries on the same scenario with `u64` requests and responses:
//!
//! 1. Instructions for one full cycle (`request` → `take_request` → `respond` →
//!    `take_response`) on one thread, counted by `valgrind --tool=callgrind`: the benchmark
//!    runs itself under callgrind twice per library (N₁ and N₂ cycles) and reports
//!    `(I(N₂) − I(N₁)) / (N₂ − N₁)`, so start-up cost cancels out and the figure is stable on
//!    a noisy machine.
//! 2. A two-thread ping-pong where each side spins on the channel's state: median ns per
//!    round trip over several runs.
//! 3. `size_of` of a channel for a few payloads.
//!
//! ```text
//! cargo run --release -p courier-bench -- interchange
//! cargo run --release -p courier-bench -- interchange --quick
//! ```

use std::hint::black_box;
use std::mem::size_of;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use courier::interchange as courier_ix;

/// Set in the environment of the copies of this benchmark run under callgrind:
/// `courier:N` or `interchange:N` runs N one-thread cycles of that library and exits.
const CYCLES_ENV: &str = "COURIER_BENCH_INTERCHANGE_CYCLES";

/// Cycles of the two callgrind runs per library.
const CALLGRIND_CYCLES: (u64, u64) = (1_000, 101_000);

/// Command-line options.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Tiny counts: a smoke test in a few seconds, figures not meaningful.
    #[arg(long)]
    quick: bool,
    /// Skip the callgrind instruction counts.
    #[arg(long)]
    no_callgrind: bool,
    /// Round trips per ping-pong run.
    #[arg(long, default_value_t = 200_000)]
    rounds: u64,
    /// Ping-pong runs per library (the median is reported).
    #[arg(long, default_value_t = 7)]
    runs: usize,
}

/// Runs the benchmark and prints a markdown report.
pub(crate) fn run(args: &Args) -> Result<(), String> {
    if let Ok(spec) = std::env::var(CYCLES_ENV) {
        return run_cycles(&spec);
    }
    let (rounds, runs) = if args.quick {
        (2_000, 3)
    } else {
        (args.rounds, args.runs.max(1))
    };

    println!("## courier::interchange beside interchange 0.3\n");
    println!("{}\n", machine());

    println!("### One full cycle on one thread (instructions, callgrind)\n");
    if args.no_callgrind {
        println!("(skipped: --no-callgrind)\n");
    } else {
        match (
            callgrind_per_cycle("courier"),
            callgrind_per_cycle("interchange"),
        ) {
            (Ok(ours), Ok(theirs)) => {
                println!("| library | instructions per cycle | ratio to interchange |");
                println!("|---|---:|---:|");
                println!(
                    "| courier::interchange | {ours:.1} | {:.2} |",
                    ours / theirs
                );
                println!("| interchange 0.3.3 | {theirs:.1} | 1.00 |\n");
            }
            (ours, theirs) => {
                println!(
                    "callgrind unavailable: {:?} / {:?}\n",
                    ours.err(),
                    theirs.err()
                );
            }
        }
    }

    println!(
        "### Two-thread ping-pong, each side spinning on the state \
         ({rounds} round trips per run, {runs} runs each, interleaved)\n"
    );
    // Interleaved, so a change in the machine's load hits both libraries alike.
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        ours.push(courier_ping_pong(rounds));
        theirs.push(interchange_ping_pong(rounds));
    }
    let (ours_median, theirs_median) = (median(&mut ours), median(&mut theirs));
    let (ours_best, theirs_best) = (ours[0], theirs[0]);
    println!("| library | median ns per round trip | ratio | best ns per round trip | ratio |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| courier::interchange | {ours_median:.0} | {:.2} | {ours_best:.0} | {:.2} |",
        ours_median / theirs_median,
        ours_best / theirs_best
    );
    println!("| interchange 0.3.3 | {theirs_median:.0} | 1.00 | {theirs_best:.0} | 1.00 |\n");

    println!("### size_of the channel (bytes)\n");
    println!("| payloads (Rq, Rp) | courier::interchange | interchange 0.3.3 |");
    println!("|---|---:|---:|");
    size_row::<u8, u8>("u8, u8");
    size_row::<u32, u32>("u32, u32");
    size_row::<u64, u32>("u64, u32");
    size_row::<u128, u8>("u128, u8");
    size_row::<[u8; 1024], [u8; 16]>("[u8; 1024], [u8; 16]");
    size_row::<[u64; 128], [u8; 16]>("[u64; 128], [u8; 16]");
    println!();
    Ok(())
}

/// One `size_of` row.
fn size_row<Rq, Rp>(name: &str) {
    println!(
        "| {name} | {} | {} |",
        size_of::<courier_ix::Channel<Rq, Rp>>(),
        size_of::<interchange::Channel<Rq, Rp>>()
    );
}

/// The machine, toolchain and commit, for the report.
fn machine() -> String {
    let output = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_else(|| "unknown".to_owned())
    };
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = thread::available_parallelism().map_or(0, |n| n.get());
    format!(
        "Machine: {cpu}, {cores} cores, {}; {}; commit {}",
        output("uname", &["-sr"]),
        output("rustc", &["--version"]),
        output("git", &["rev-parse", "--short", "HEAD"]),
    )
}

/// The child side of the callgrind runs: `courier:N` or `interchange:N`.
fn run_cycles(spec: &str) -> Result<(), String> {
    let (library, n) = spec
        .split_once(':')
        .ok_or_else(|| format!("bad {CYCLES_ENV}={spec}"))?;
    let n: u64 = n
        .parse()
        .map_err(|e| format!("bad {CYCLES_ENV}={spec}: {e}"))?;
    let sum = match library {
        "courier" => courier_cycles(n),
        "interchange" => interchange_cycles(n),
        other => return Err(format!("unknown library {other}")),
    };
    // Uses the result so the loop cannot be dropped.
    if sum == u64::MAX {
        println!("{sum}");
    }
    Ok(())
}

/// Defines `$name(n)`: `n` full cycles on one thread with the channel type of `$lib`. One
/// body for both libraries, so they run exactly the same code.
macro_rules! one_thread_cycles {
    ($name:ident, $lib:path) => {
        #[inline(never)]
        fn $name(n: u64) -> u64 {
            use $lib as lib;
            static CHANNEL: lib::Channel<u64, u64> = lib::Channel::new();
            let (mut rq, mut rp) = CHANNEL.split().expect("unclaimed");
            let mut sum = 0u64;
            for i in 0..n {
                rq.request(black_box(i)).expect("idle");
                let request = rp.take_request().expect("requested");
                rp.respond(request + 1).expect("building response");
                sum = sum.wrapping_add(rq.take_response().expect("responded"));
            }
            sum
        }
    };
}

one_thread_cycles!(courier_cycles, courier::interchange);
one_thread_cycles!(interchange_cycles, ::interchange);

/// Instructions per cycle of `library`, from two callgrind runs of this executable.
fn callgrind_per_cycle(library: &str) -> Result<f64, String> {
    let (small, large) = CALLGRIND_CYCLES;
    let small_count = callgrind_total(library, small)?;
    let large_count = callgrind_total(library, large)?;
    Ok((large_count as f64 - small_count as f64) / (large - small) as f64)
}

/// Total instructions of one run of `n` cycles under callgrind.
fn callgrind_total(library: &str, n: u64) -> Result<u64, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = std::env::temp_dir().join(format!(
        "courier-bench-interchange-{}-{library}-{n}.callgrind",
        std::process::id()
    ));
    let status = Command::new("valgrind")
        .arg("--tool=callgrind")
        .arg(format!("--callgrind-out-file={}", out.display()))
        .arg(&exe)
        .args(std::env::args_os().skip(1))
        .env(CYCLES_ENV, format!("{library}:{n}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("valgrind: {e}"))?;
    if !status.success() {
        return Err(format!("valgrind exited with {status}"));
    }
    let text = std::fs::read_to_string(&out).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_file(&out);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("summary:")
                .or_else(|| l.strip_prefix("totals:"))
        })
        .and_then(|n| n.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| "no instruction total in the callgrind output".to_owned())
}

/// Median of `samples`, which it sorts.
fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// Gives up a ping-pong that stopped making progress (a bug, not a slow machine).
const STALL: Duration = Duration::from_secs(60);

/// Defines `$name(rounds)`: ns per round trip of a two-thread ping-pong with the channel
/// type of `$lib`, each side spinning on the state. One body for both libraries.
macro_rules! ping_pong {
    ($name:ident, $lib:path) => {
        fn $name(rounds: u64) -> f64 {
            use $lib as lib;
            let channel: &'static lib::Channel<u64, u64> = Box::leak(Box::new(lib::Channel::new()));
            let (mut rq, mut rp) = channel.split().expect("unclaimed");
            let responder = thread::spawn(move || {
                for _ in 0..rounds {
                    let deadline = Instant::now() + STALL;
                    while rp.state() != lib::State::Requested {
                        assert!(Instant::now() < deadline, "stalled");
                        std::hint::spin_loop();
                    }
                    let request = rp.take_request().expect("requested");
                    rp.respond(request + 1).expect("building response");
                }
            });
            let start = Instant::now();
            for i in 0..rounds {
                rq.request(i).expect("idle");
                let deadline = Instant::now() + STALL;
                while rq.state() != lib::State::Responded {
                    assert!(Instant::now() < deadline, "stalled");
                    std::hint::spin_loop();
                }
                assert_eq!(rq.take_response(), Some(i + 1));
            }
            let elapsed = start.elapsed();
            responder.join().expect("responder");
            elapsed.as_nanos() as f64 / rounds as f64
        }
    };
}

ping_pong!(courier_ping_pong, courier::interchange);
ping_pong!(interchange_ping_pong, ::interchange);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_libraries_run_the_same_cycle() {
        assert_eq!(courier_cycles(10), interchange_cycles(10));
        assert_eq!(courier_cycles(10), (1..=10).sum::<u64>());
    }

    #[test]
    fn ping_pongs_complete() {
        assert!(courier_ping_pong(100) > 0.0);
        assert!(interchange_ping_pong(100) > 0.0);
    }

    #[test]
    fn courier_channels_are_the_smaller() {
        assert!(
            size_of::<courier_ix::Channel<u64, u32>>()
                < size_of::<interchange::Channel<u64, u32>>()
        );
    }
}
