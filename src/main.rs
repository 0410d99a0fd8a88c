//! The `ringhub` binary: command line → config → logging → server, then wait for a signal.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Parser;
use mimalloc::MiMalloc;
use ringhub::config::{Config, ConfigSources, LogFormat, default_config_toml};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
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
    /// Manage the virtual keys in the file store (`auth.key_file`), or mint a server key.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Send a message to a hub's clients through a server's REST publish API.
    Publish(PublishArgs),
    /// Print a generated reference page (Markdown) on stdout; docs/ holds their output.
    #[command(subcommand)]
    Docs(DocsCommand),
}

/// `ringhub docs …`: the generated pages, from the same code the server runs.
#[derive(Debug, clap::Subcommand)]
enum DocsCommand {
    /// docs/configuration.md: every config key, its default, variable and trade-off.
    Config,
    /// docs/hub-reference.md: every hub the configuration serves (--config and --set apply),
    /// its methods, groups and events.
    Hubs,
    /// The metrics table of docs/advanced/monitoring-and-diagnostics.md.
    Metrics,
}

/// `ringhub publish …`: one `POST /api/hubs/{hub}[/(groups|users|connections)/{name}]/:send`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("to").args(["group", "user", "connection"])))]
struct PublishArgs {
    /// The server's base URL (plain HTTP), e.g. http://127.0.0.1:8080.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// The hub's name (its `[hubs.NAME]` table name).
    #[arg(long)]
    hub: String,
    /// Send to the members of this group.
    #[arg(long)]
    group: Option<String>,
    /// Send to every connection of this user (a virtual key id).
    #[arg(long)]
    user: Option<String>,
    /// Send to this connection id (ids may start with `-`: base64url).
    #[arg(long, allow_hyphen_values = true)]
    connection: Option<String>,
    /// The client method to invoke.
    #[arg(long)]
    target: String,
    /// The arguments, a JSON array.
    #[arg(long, default_value = "[]")]
    arguments: String,
    /// Connection ids that must not receive it (repeatable; ids may start with `-`).
    #[arg(long, allow_hyphen_values = true)]
    excluded: Vec<String>,
    /// A server key (its SHA-256 is in the server's `auth.server_key_hashes`).
    #[arg(long, env = "HUB_SERVER_KEY", hide_env_values = true)]
    server_key: String,
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
    /// Mint a server key for the REST publish API: prints the key, then its SHA-256 to add
    /// to `auth.server_key_hashes`. Nothing is stored.
    AddServer,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.print_default_config {
        print!("{}", default_config_toml());
        return ExitCode::SUCCESS;
    }
    match &cli.command {
        Some(Command::Publish(args)) => return publish(args),
        Some(Command::Keys(KeysCommand::AddServer)) => return add_server_key(),
        Some(Command::Docs(DocsCommand::Config)) => {
            print!("{}", ringhub::config::reference_markdown());
            return ExitCode::SUCCESS;
        }
        Some(Command::Docs(DocsCommand::Metrics)) => {
            print!("{}", ringhub::metrics::reference_markdown());
            return ExitCode::SUCCESS;
        }
        _ => {}
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
    if let Some(Command::Docs(DocsCommand::Hubs)) = &cli.command {
        let command = match &cli.config {
            Some(path) => format!("ringhub --config {} docs hubs", path.display()),
            None => ringhub::hub::reference::COMMAND.to_owned(),
        };
        return match ringhub::hub::reference::markdown(&config, &command) {
            Ok(page) => {
                print!("{page}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("ringhub: {error}");
                ExitCode::from(2)
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
    match run(config, &cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `ringhub keys add-server`.
fn add_server_key() -> ExitCode {
    let mut bytes = [0u8; 32];
    if getrandom::fill(&mut bytes).is_err() {
        eprintln!("ringhub: the operating system's random source failed");
        return ExitCode::FAILURE;
    }
    let key = format!("rhsk_{}", URL_SAFE_NO_PAD.encode(bytes));
    let hash = ringhub::auth::hash_key(&key);
    println!("{key}");
    println!("{hash}");
    eprintln!(
        "ringhub: a new server key (first line, shown only once) and its SHA-256 (second line); \
         add the hash to auth.server_key_hashes, e.g. server_key_hashes = [\"{hash}\"]"
    );
    ExitCode::SUCCESS
}

/// `ringhub publish`: posts one message and prints the answer.
fn publish(args: &PublishArgs) -> ExitCode {
    match post_message(args) {
        Ok((status, body)) => {
            println!("{status}{}{body}", if body.is_empty() { "" } else { " " });
            if (200..300).contains(&status) {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(error) => {
            eprintln!("ringhub: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Sends the request over a plain blocking socket and returns the status and body.
fn post_message(args: &PublishArgs) -> anyhow::Result<(u16, String)> {
    use ringhub::http::publish::request::{encode_segment, send_path};
    use ringhub::hub::actions::Target;
    use std::io::{Read, Write};
    use std::net::ToSocketAddrs;

    let arguments: serde_json::Value =
        serde_json::from_str(&args.arguments).context("--arguments is not JSON")?;
    anyhow::ensure!(arguments.is_array(), "--arguments must be a JSON array");
    let body = serde_json::json!({ "target": args.target, "arguments": arguments }).to_string();
    let target = match (&args.group, &args.user, &args.connection) {
        (Some(group), _, _) => Target::Group(group.clone()),
        (_, Some(user), _) => Target::User(user.clone()),
        (_, _, Some(id)) => Target::Connection(id.clone()),
        _ => Target::All,
    };
    let rest = args
        .url
        .strip_prefix("http://")
        .context("--url must start with http:// (TLS is not supported by this client)")?;
    let (authority, base) = rest.split_once('/').unwrap_or((rest, ""));
    anyhow::ensure!(!authority.is_empty(), "--url has no host");
    let mut path = format!("/{}", base.trim_end_matches('/'));
    if path == "/" {
        path.clear();
    }
    path.push_str(&send_path(&args.hub, &target));
    for (i, id) in args.excluded.iter().enumerate() {
        path.push(if i == 0 { '?' } else { '&' });
        path.push_str("excluded=");
        path.push_str(&encode_segment(id));
    }
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let socket = address
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {address}"))?
        .next()
        .with_context(|| format!("{address} has no address"))?;
    let timeout = std::time::Duration::from_secs(30);
    let mut stream = std::net::TcpStream::connect_timeout(&socket, timeout)
        .with_context(|| format!("cannot connect to {socket}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {authority}\r\nAuthorization: Bearer {}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        args.server_key.trim(),
        body.len()
    );
    stream.write_all(request.as_bytes())?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response)?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .context("the server's answer is not HTTP")?;
    Ok((status, body.to_owned()))
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

fn run(config: Config, cli: &Cli) -> anyhow::Result<()> {
    let mut signals =
        Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signal handlers")?;
    let config = Arc::new(config);
    let deadline = config.shutdown.deadline;
    let drain_delay = config.shutdown.drain_delay;
    let mut server = ringhub::server::start(Arc::clone(&config))?;
    // SIGHUP reloads hub definitions and keys (the same sources as at start); SIGINT or SIGTERM
    // drains and stops.
    for signal in signals.forever() {
        if signal != SIGHUP {
            tracing::info!(
                signal,
                ?drain_delay,
                ?deadline,
                "graceful stop requested; draining"
            );
            break;
        }
        match load_config(cli)
            .map_err(anyhow::Error::from)
            .and_then(|reloaded| Ok(server.reload(&reloaded)?))
        {
            Ok(()) => tracing::info!(
                "reloaded hub definitions and the key store; other settings apply at the next start"
            ),
            Err(error) => {
                tracing::warn!("reload refused, keeping the running configuration: {error:#}")
            }
        }
    }
    // Not ready from now on, so load balancers stop sending new clients.
    server.drain();
    // A second stop signal ends the process at once; so does overrunning the drain delay plus the
    // deadline plus a grace second.
    std::thread::spawn(move || {
        if signals.forever().any(|signal| signal != SIGHUP) {
            eprintln!("ringhub: second signal, exiting now");
            std::process::exit(130);
        }
    });
    std::thread::spawn(move || {
        std::thread::sleep(drain_delay + deadline + std::time::Duration::from_secs(1));
        eprintln!("ringhub: shards did not stop within the shutdown deadline, exiting");
        std::process::exit(1);
    });
    std::thread::sleep(drain_delay);
    server.shutdown();
    server.join()?;
    tracing::info!("stopped");
    Ok(())
}
