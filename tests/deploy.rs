//! The deployment kit in `deploy/` stays true to the binary: the example production config
//! passes `--check-config`, every series the Grafana dashboard queries is one `src/metrics.rs`
//! declares, and the systemd unit's flags, signals and limits match the binary and the config.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_ringhub");

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(file)
}

/// The example's `cluster.secret_file` (`/etc/ringhub/cluster-secret` on a real host) pointed
/// at a freshly written secret, as the install steps create it.
fn secret_override(name: &str) -> String {
    let path = std::env::temp_dir().join(format!("ringhub-deploy-{}-{name}", std::process::id()));
    std::fs::write(
        &path,
        "a-cluster-secret-of-at-least-32-bytes-for-the-test\n",
    )
    .unwrap();
    format!("cluster.secret_file={}", path.display())
}

/// The example production config as a host with its secret file would load it.
fn production_config(name: &str) -> ringhub::config::Config {
    ringhub::config::Config::load(&ringhub::config::ConfigSources {
        file: Some(deploy("ringhub.production.toml")),
        env: Vec::new(),
        overrides: vec![secret_override(name)],
    })
    .unwrap()
}

#[test]
fn the_example_production_config_passes_check_config() {
    let output = Command::new(BIN)
        .arg("--config")
        .arg(deploy("ringhub.production.toml"))
        .args(["--set", &secret_override("check")])
        .arg("--check-config")
        .env_remove("RINGHUB_CONFIG")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let config = production_config("load");
    assert_eq!(config.backplane.kind, ringhub::config::BackplaneKind::Redis);
    assert!(!config.cors.allowed_origins.is_empty());
    assert!(config.shutdown.drain_delay > std::time::Duration::ZERO);
}

/// Every `ringhub_…` name in `text`.
fn metric_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("ringhub_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.push(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn every_series_the_grafana_dashboard_queries_is_declared_in_metrics_rs() {
    let text = std::fs::read_to_string(deploy("grafana/ringhub-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    let families = ringhub::metrics::FAMILIES;
    let declared = |name: &str| {
        families.iter().any(|f| {
            f.name == name
                || (f.kind == ringhub::metrics::Kind::Histogram
                    && ["_bucket", "_sum", "_count"]
                        .iter()
                        .any(|suffix| name.strip_suffix(suffix) == Some(f.name)))
        })
    };
    let mut used = Vec::new();
    for panel in panels {
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for target in targets {
            let expr = target["expr"].as_str().unwrap();
            for name in metric_names(expr) {
                assert!(
                    declared(&name),
                    "{name} (in {:?}) is not declared",
                    panel["title"]
                );
                used.push(name);
            }
        }
    }
    // The operational families all have a panel (build info, shards and uptime are facts).
    for family in families {
        if matches!(
            family.name,
            "ringhub_build_info" | "ringhub_runtime_shards" | "ringhub_process_uptime_seconds"
        ) {
            continue;
        }
        assert!(
            used.iter().any(|u| u.starts_with(family.name)),
            "{} has no panel",
            family.name
        );
    }
}

/// The value of `key=` in the unit file (the first uncommented one).
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("{key}= missing from the unit"))
        .to_owned()
}

#[test]
fn the_systemd_unit_matches_the_binary_flags_signals_and_limits() {
    let unit = std::fs::read_to_string(deploy("ringhub.service")).unwrap();
    let exec = unit_value(&unit, "ExecStart");
    assert!(exec.contains(" --config "), "{exec}");
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--config"));
    assert_eq!(unit_value(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(unit_value(&unit, "KillSignal"), "SIGTERM");
    assert_eq!(unit_value(&unit, "AmbientCapabilities"), "");
    assert_eq!(unit_value(&unit, "NoNewPrivileges"), "yes");

    let nofile: u64 = unit_value(&unit, "LimitNOFILE").parse().unwrap();
    let config = production_config("unit");
    let max = config.limits.max_connections.get() as u64;
    assert!(
        max < nofile,
        "limits.max_connections {max} leaves no descriptors below LimitNOFILE {nofile}"
    );
    let sysctl = std::fs::read_to_string(deploy("sysctl.d/90-ringhub.conf")).unwrap();
    let nr_open: u64 = sysctl
        .lines()
        .find_map(|l| l.strip_prefix("fs.nr_open = "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        nr_open >= nofile,
        "fs.nr_open {nr_open} < LimitNOFILE {nofile}"
    );
    // Stopping waits for the drain delay and the deadline before systemd's SIGKILL.
    let stop: u64 = unit_value(&unit, "TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .unwrap();
    let needed = (config.shutdown.drain_delay + config.shutdown.deadline).as_secs();
    assert!(
        stop > needed,
        "TimeoutStopSec {stop}s <= drain + deadline {needed}s"
    );
}
