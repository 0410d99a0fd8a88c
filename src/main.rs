//! The `ringhub` binary: command line → config → logging → server, then wait for a signal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use mimalloc::MiMalloc;
use ringhub::config::{Config, ConfigSources, LogFormat, default_config_toml};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

/// Thread-per-core io_uring WebSocket edge server speaking the ASP.NET Core SignalR protocol.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    /// TOML config file (also RINGHUB_CONFIG).
    #[arg(long, short = 'c', value_name = "FILE", env = "RINGHUB_CONFIG")]
    config: Option<PathBuf>,
    /// Listen address, e.g. 0.0.0.0:8080 (overrides `listen`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Number of shards, 0 = one per core (overrides `workers`).
    #[arg(long, value_name = "N")]
    workers: Option<u32>,
    /// Any config key, e.g. --set http.header_timeout=5s (repeatable; beats file and env).
    #[arg(long = "set", short = 's', value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Validate the configuration and exit.
    #[arg(long)]
    check_config: bool,
    /// Print every config key with its default and a comment, then exit.
    #[arg(long)]
    print_default_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

/// Operator commands besides serving.
#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Manage the virtual keys in the file store (`auth.key_file`).
    #[command(subcommand)]
    Keys(KeysCommand),
}

/// `ringhub keys …`
#[derive(Debug, clap::Subcommand)]
enum KeysCommand {
    /// Create a virtual key, store its hash, and print the key once.
    Add {
        /// A name for the key (shown in logs instead of the key).
        #[arg(long)]
        name: String,
        /// Mark it an admin virtual key (Conduit's `isAdmin` metadata).
        #[arg(long)]
        admin: bool,
        /// Expire it after this long, e.g. 30d or 12h (never, if omitted).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<humantime::Duration>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", default_config_toml());
        return ExitCode::SUCCESS;
    }
    let config = match load_config(&cli) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("ringhub: {error}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Keys(KeysCommand::Add {
        name,
        admin,
        expires_in,
    })) = &cli.command
    {
        let expires_at = expires_in.map(|d| ringhub::hub::access::unix_now() + d.as_secs());
        return match ringhub::auth::keys::add_key(&config.auth.key_file, name, *admin, expires_at) {
            Ok((key, record)) => {
                println!("{key}");
                eprintln!(
                    "ringhub: added key {} ('{}') to {}; it is shown only once",
                    record.id,
                    record.name,
                    config.auth.key_file.display()
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("ringhub: {error}");
                ExitCode::FAILURE
            }
        };
    }
    if cli.check_config {
        if let Err(error) = ringhub::hub::definitions(&config) {
            eprintln!("ringhub: {error}");
            return ExitCode::from(2);
        }
        println!("configuration OK");
        return ExitCode::SUCCESS;
    }
    init_logging(&config);
    match run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(cli: &Cli) -> Result<Config, ringhub::config::ConfigError> {
    let mut overrides = Vec::new();
    if let Some(listen) = &cli.listen {
        overrides.push(format!("listen={listen}"));
    }
    if let Some(workers) = cli.workers {
        overrides.push(format!("workers={workers}"));
    }
    overrides.extend(cli.set.iter().cloned());
    Config::load(&ConfigSources {
        file: cli.config.clone(),
        env: std::env::vars().collect(),
        overrides,
    })
}

fn init_logging(config: &Config) {
    let filter = std::env::var("RINGHUB_LOG")
        .ok()
        .and_then(|directives| EnvFilter::try_new(directives).ok())
        .or_else(|| EnvFilter::try_new(&config.log.level).ok())
        .unwrap_or_else(|| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn run(config: Config) -> anyhow::Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let config = Arc::new(config);
    let deadline = config.shutdown.deadline;
    let mut server = ringhub::server::start(Arc::clone(&config))?;
    if let Some(signal) = signals.forever().next() {
        tracing::info!(signal, ?deadline, "graceful stop requested");
    }
    server.shutdown();
    // A second signal, or the deadline plus a grace second, ends the process at once.
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            eprintln!("ringhub: second signal, exiting now");
            std::process::exit(130);
        }
    });
    std::thread::spawn(move || {
        std::thread::sleep(deadline + std::time::Duration::from_secs(1));
        eprintln!("ringhub: shards did not stop within the shutdown deadline, exiting");
        std::process::exit(1);
    });
    server.join()?;
    tracing::info!("stopped");
    Ok(())
}
