//! ringhub's load generator, as a library so its codecs can be tested and reused; the
//! `loadgen` binary is a thin wrapper around [`run()`]. See `loadtest/README.md` for the
//! scenarios.
//!
//! Layout, bottom up: [`clock`] (the shared monotonic clock), codecs without I/O ([`ws`],
//! [`msgpack`], [`signalr`], [`http`], [`payload`]), the connection ([`conn`]) and its
//! thread's state ([`client`]), schedules ([`schedule`]), measurements ([`recorder`]),
//! threads and barriers ([`mod@run`]), processes ([`fanout`]), server samples ([`probe`],
//! [`observer`]) and the soak's flatness verdict ([`flat`]), the [`scenario`]s, and the
//! [`report`].

pub mod cli;
pub mod client;
pub mod clock;
pub mod conn;
pub mod fanout;
pub mod flat;
pub mod http;
pub mod msgpack;
pub mod observer;
pub mod os;
pub mod payload;
pub mod probe;
pub mod recorder;
pub mod report;
pub mod run;
pub mod scenario;
pub mod schedule;
pub mod signalr;
pub mod ws;

use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;

use crate::cli::Cli;
use crate::client::Gate;
use crate::fanout::WorkerHost;
use crate::observer::Observer;
use crate::report::Report;
use crate::run::run_process;

/// Lifts the open-files soft limit to the hard limit.
pub fn raise_nofile() {
    if let Err(error) = os::raise_nofile() {
        eprintln!("loadgen: could not raise the open-files limit: {error}");
    }
}

/// Runs the command line: the whole run (spawning workers for `--processes`), or one
/// worker's share; prints the report and returns the exit code.
///
/// # Errors
/// Bad flags, a URL that does not resolve, or a worker that failed.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let plan = scenario::plan(&cli)?;
    let common = cli.common.clone();
    let cli = Arc::new(cli);
    let gate = plan.gate.then(|| Arc::new(Gate::default()));
    let window = run::WindowSpec {
        barrier: plan.window_barrier,
        offset_ns: clock::ns(plan.window_offset),
        len_ns: clock::ns(plan.window_len),
    };
    if let Some(index) = common.worker_index {
        let label = (!common.quiet).then(|| format!("w{index}"));
        let tally = run_process(
            run::ProcessSpec {
                threads: common.threads,
                barriers: plan.barriers,
                process: index,
                processes: common.processes,
                gate,
                progress: label,
                window,
            },
            &mut WorkerHost,
            scenario::body(cli),
        )?;
        let mut out = std::io::stdout().lock();
        writeln!(out, "RESULT {}", serde_json::to_string(&tally)?)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut observer = Observer::new(&plan, common.server_pid);
    let tally = if common.processes > 1 {
        fanout::run_parent(common.processes, &plan, &mut observer)?
    } else {
        let label = (!common.quiet).then(|| plan.name.to_owned());
        run_process(
            run::ProcessSpec {
                threads: common.threads,
                barriers: plan.barriers,
                process: 0,
                processes: 1,
                gate,
                progress: label,
                window,
            },
            &mut observer,
            scenario::body(cli.clone()),
        )?
    };
    observer.finish(None);
    let report = Report::build(&cli, &plan, &tally, &observer);
    let text = if common.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        report.human()
    };
    // A closed stdout (e.g. `| head`) is not worth a panic; the exit code still counts.
    let _ = std::io::stdout().lock().write_all(text.as_bytes());
    Ok(if report.failed(common.require_zero_loss) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
