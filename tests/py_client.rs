//! Runs a second, independent SignalR client, the Python `pysignalr` (`tests/python/smoke.py`,
//! pinned in `tests/python/requirements.txt`), against an in-process server on both drivers: Echo,
//! the `Message` event, `Stream(3)` and a clean close, over JSON and MessagePack.
//! `tests/run-all.sh` creates the venv `target/pysignalr-venv` first; without it this test fails.

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

on_both_drivers! {
    fn pysignalr_smoke_passes(driver) {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let python = root.join("target/pysignalr-venv/bin/python");
        assert!(
            python.is_file(),
            "{} missing: run `python3 -m venv target/pysignalr-venv && \
             target/pysignalr-venv/bin/pip install -r tests/python/requirements.txt` \
             (tests/run-all.sh does)",
            python.display()
        );
        let server = TestServer::start(driver, |c| {
            c.diagnostics.enabled = true;
            // The suites burst hundreds of calls; the rate limit has its own test.
            c.signalr.invocation_rate = 1_000_000;
            c.signalr.invocation_burst = 1_000_000;
        });
        let output = Command::new(&python)
            .arg(root.join("tests/python/smoke.py"))
            .current_dir(root)
            .env("HUB_BASE_URL", format!("http://{}", server.addr))
            .output()
            .expect("the venv's python runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "smoke.py failed ({})\n{stdout}\n{stderr}", output.status);
        // The closing line: `N passed, N failed`.
        let counts = stdout.lines().rev().find_map(|line| {
            let (passed, failed) = line.trim().split_once(" passed, ")?;
            let failed = failed.strip_suffix(" failed")?;
            Some((passed.parse::<u32>().ok()?, failed.parse::<u32>().ok()?))
        });
        let Some((passed, failed)) = counts else {
            panic!("no `N passed, N failed` line\n{stdout}\n{stderr}");
        };
        assert_eq!(failed, 0, "{stdout}\n{stderr}");
        assert!(passed > 0, "no check ran:\n{stdout}\n{stderr}");
    }
}
