//! `--processes P`: the parent re-executes itself P times with `--worker-index i`. Each
//! worker runs its share and talks to the parent over its stdin/stdout, one line each way
//! per barrier (`BARRIER k` → `GO <monotonic ns>`), then prints `RESULT <tally JSON>`.
//! Anything else a worker prints on stdout is passed through to stderr.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::clock::now_ns;
use crate::observer::Observer;
use crate::recorder::Tally;
use crate::run::Host;
use crate::scenario::Plan;

/// Runs `processes` workers and merges their tallies.
pub fn run_parent(processes: usize, plan: &Plan, observer: &mut Observer) -> anyhow::Result<Tally> {
    let exe = std::env::current_exe().context("finding my own executable")?;
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let (tx, rx) = mpsc::channel::<(usize, Option<String>)>();
    let mut children = Vec::new();
    let mut stdins = Vec::new();
    for i in 0..processes {
        let mut child = Command::new(&exe)
            .args(&args)
            .arg("--worker-index")
            .arg(i.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting worker {i}"))?;
        let stdout = child.stdout.take().context("worker stdout")?;
        stdins.push(child.stdin.take());
        let tx = tx.clone();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((i, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((i, None));
        });
        children.push(child);
    }
    drop(tx);
    let mut results: Vec<Option<Tally>> = vec![None; processes];
    let mut ended = vec![false; processes];
    let mut reached: Vec<Option<usize>> = vec![None; processes];
    let mut next_barrier = 0;
    loop {
        if next_barrier < plan.barriers
            && (0..processes).all(|i| ended[i] || reached[i].is_some_and(|k| k >= next_barrier))
        {
            let at = observer.release_at(next_barrier);
            for stdin in stdins.iter_mut().flatten() {
                let _ = writeln!(stdin, "GO {at}");
                let _ = stdin.flush();
            }
            next_barrier += 1;
            continue;
        }
        if ended.iter().all(|&e| e) {
            break;
        }
        match rx.recv_timeout(Duration::from_millis(2)) {
            Ok((i, Some(line))) => {
                if let Some(k) = line.strip_prefix("BARRIER ") {
                    reached[i] = k.trim().parse().ok();
                } else if let Some(json) = line.strip_prefix("RESULT ") {
                    results[i] = Some(
                        serde_json::from_str(json)
                            .with_context(|| format!("reading worker {i}'s result"))?,
                    );
                } else {
                    eprintln!("[w{i}] {line}");
                }
            }
            Ok((i, None)) => ended[i] = true,
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        observer.poll(now_ns(), None);
    }
    let mut tally = Tally::default();
    for (i, mut child) in children.into_iter().enumerate() {
        let status = child
            .wait()
            .with_context(|| format!("waiting for worker {i}"))?;
        match &results[i] {
            Some(result) => tally.merge(result),
            None => bail!("worker {i} ended ({status}) without a result"),
        }
    }
    Ok(tally)
}

/// A worker's side of the barrier protocol.
#[derive(Debug, Default)]
pub struct WorkerHost;

impl Host for WorkerHost {
    fn release(&mut self, index: usize) -> anyhow::Result<u64> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "BARRIER {index}")?;
        out.flush()?;
        drop(out);
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("waiting for the parent")?;
        line.trim()
            .strip_prefix("GO ")
            .and_then(|t| t.parse().ok())
            .with_context(|| format!("unexpected line from the parent: {line:?}"))
    }
}
