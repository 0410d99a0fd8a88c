//! The documentation under `docs/` cannot rot: every JavaScript, TypeScript and HTML snippet in
//! its markdown is a region of a script in `docs/examples/` (marked `<!-- example:
//! examples/FILE#REGION -->` before the code block, and `// #region REGION` … `// #endregion`
//! or `<!-- #region REGION -->` … `<!-- #endregion -->` in the file; the block equals the
//! region's lines with their common indentation removed, byte for byte); every TOML snippet is
//! a configuration ringhub accepts; and every example runs against a real server with the
//! official `@microsoft/signalr` client (Node, from `tests/js/node_modules`) and prints what the
//! docs say it prints. The browser example runs in headless Chromium (`playwright-core`, as in
//! `tests/status_page.rs`) from another origin, through CORS.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::*;

/// Each Node example, and fragments its output must contain (what the docs show).
const NODE_EXAMPLES: &[(&str, &[&str])] = &[
    ("quick-start.mjs", &["connected, connection id ", "stopped"]),
    (
        "navigation.mjs",
        &[
            "User navigated to: conversation-detail",
            "the other tab heard conversation 123",
            "current view: conversation-detail",
            "late tab starts at: conversation-detail",
        ],
    ),
    (
        "media-progress.mjs",
        &[
            "Generation 10% complete",
            "Generation 100% complete",
            "Video ready: https://cdn.example.com/v/42.mp4",
        ],
    ),
    (
        "lifecycle.mjs",
        &[
            "Connection lost, attempting to reconnect... Server returned an error on close: Connection closed with an error.",
            "invoke failed: Server returned an error on close: Connection closed with an error.",
            "Successfully reconnected as ",
            "Connection closed cleanly",
        ],
    ),
    (
        "admin.mjs",
        &[
            "admin update: maintenance at 18:00",
            "admin update: key 1 reached 80% of its budget",
            "sent to admin: 202",
            "virtual key on the Admin hub: 403",
        ],
    ),
    (
        "health.mjs",
        &[
            "Healthy: 1 connections, backplane in-process up",
            "health: 1",
            "pushed: Healthy",
        ],
    ),
    (
        "messagepack.mjs",
        &["state over MessagePack: over-messagepack"],
    ),
    (
        "debug-logging.mjs",
        &[
            "Debug: Starting HubConnection.",
            "Debug: Selecting transport 'WebSockets'.",
        ],
    ),
    (
        "stream-response.mjs",
        &[
            "streamed answer: Hello, world",
            "replayed to a late subscriber: Hello, world",
        ],
    ),
    (
        "upstream.mjs",
        &[
            "connected: ",
            "You asked: What is ringhub?",
            "An unexpected error occurred invoking 'Ask' on the server. HubException: Ask needs a question",
            "disconnected: ",
        ],
    ),
    (
        "reconnect.mjs",
        &["fixed connected", "forever connected", "stateful connected"],
    ),
    (
        "manage.mjs",
        &[
            "add to ops: 200",
            "ops exists: 200",
            "close: 200",
            "received: to ops, to the key",
            "closed by the server: Server returned an error on close: maintenance",
        ],
    ),
    (
        "getting-started.mjs",
        &[
            "listening on /hubs/notifications as ",
            "[info] Your image is ready",
            "publish answered 202",
        ],
    ),
];

/// The browser example, run by `tests/js/docs-browser.test.mjs`.
const BROWSER_EXAMPLE: &str = "browser.html";

/// Languages whose code blocks must be example regions.
const CHECKED_LANGUAGES: [&str; 5] = ["js", "javascript", "html", "ts", "typescript"];

const ADMIN_KEY: &str = "docs-examples-admin-key";
const SERVER_KEY: &str = "rhsk_docs-examples-server-key";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn docs() -> PathBuf {
    repo().join("docs")
}

fn examples() -> PathBuf {
    docs().join("examples")
}

/// Every markdown file under `docs/`, sorted.
fn markdown_files() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "md") {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(&docs(), &mut out);
    out.sort();
    out
}

/// A fenced code block of a markdown file.
struct Block {
    /// `file:line` of the opening fence.
    place: String,
    /// The info string's first word.
    language: String,
    /// The lines between the fences, joined by `\n`.
    text: String,
    /// `examples/FILE#REGION` from an `<!-- example: … -->` line right before the fence.
    example: Option<String>,
}

fn code_blocks(path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap();
    let name = path.strip_prefix(repo()).unwrap().display().to_string();
    let lines: Vec<&str> = text.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim_start();
        let Some(info) = line.strip_prefix("```") else {
            i += 1;
            continue;
        };
        let indent = lines[i].len() - line.len();
        let language = info.split_whitespace().next().unwrap_or("").to_owned();
        let example = lines[..i]
            .iter()
            .rev()
            .find(|l| !l.trim().is_empty())
            .and_then(|l| l.trim().strip_prefix("<!-- example:"))
            .and_then(|l| l.strip_suffix("-->"))
            .map(|l| l.trim().to_owned());
        let start = i + 1;
        let mut end = start;
        while end < lines.len() && lines[end].trim() != "```" {
            end += 1;
        }
        assert!(end < lines.len(), "{name}:{}: unclosed code block", i + 1);
        let body: Vec<&str> = lines[start..end]
            .iter()
            .map(|l| l.get(indent..).unwrap_or(l.trim_start()))
            .collect();
        blocks.push(Block {
            place: format!("{name}:{}", i + 1),
            language,
            text: body.join("\n"),
            example,
        });
        i = end + 1;
    }
    blocks
}

/// The lines of region `name` in `source`, common indentation removed; `None` if absent.
fn region(source: &str, name: &str) -> Option<String> {
    let is_start = |line: &str| {
        let line = line.trim();
        line.strip_prefix("// #region ")
            .or_else(|| {
                line.strip_prefix("<!-- #region ")
                    .and_then(|l| l.strip_suffix("-->"))
            })
            .is_some_and(|n| n.trim() == name)
    };
    let is_end = |line: &str| {
        let line = line.trim();
        line == "// #endregion" || line == "<!-- #endregion -->"
    };
    let lines: Vec<&str> = source.lines().collect();
    let start = lines.iter().position(|l| is_start(l))? + 1;
    let end = start + lines[start..].iter().position(|l| is_end(l))?;
    let body = &lines[start..end];
    let indent = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.len() - l.trim_start().len())
        .min()
        .unwrap_or(0);
    Some(
        body.iter()
            .map(|l| l.get(indent..).unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

#[test]
fn every_javascript_and_html_snippet_in_the_docs_is_a_verbatim_region_of_an_example() {
    let mut checked = 0;
    let mut problems = Vec::new();
    for file in markdown_files() {
        for block in code_blocks(&file) {
            if !CHECKED_LANGUAGES.contains(&block.language.as_str()) {
                continue;
            }
            let Some(example) = &block.example else {
                problems.push(format!(
                    "{}: a ```{} block without <!-- example: examples/FILE#REGION --> before it",
                    block.place, block.language
                ));
                continue;
            };
            let Some((file, name)) = example.split_once('#') else {
                problems.push(format!("{}: '{example}' names no #region", block.place));
                continue;
            };
            let Ok(source) = std::fs::read_to_string(docs().join(file)) else {
                problems.push(format!("{}: docs/{file} does not exist", block.place));
                continue;
            };
            match region(&source, name) {
                None => problems.push(format!("{}: docs/{file} has no region '{name}'", block.place)),
                Some(region) if region != block.text => problems.push(format!(
                    "{}: differs from docs/{file}#{name}\n--- the docs:\n{}\n--- the example:\n{region}",
                    block.place, block.text
                )),
                Some(_) => checked += 1,
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n\n"));
    assert!(checked >= 20, "only {checked} snippets were checked");
}

#[test]
fn every_example_in_docs_examples_is_run_by_this_suite() {
    let mut found: Vec<String> = std::fs::read_dir(examples())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".mjs") || n.ends_with(".js") || n.ends_with(".html"))
        .collect();
    found.sort();
    let mut run: Vec<String> = NODE_EXAMPLES
        .iter()
        .map(|(name, _)| (*name).to_owned())
        .chain([BROWSER_EXAMPLE.to_owned()])
        .collect();
    run.sort();
    assert_eq!(found, run);
}

#[test]
fn every_toml_snippet_in_the_docs_is_a_configuration_ringhub_accepts() {
    let mut checked = 0;
    let mut snippets: Vec<(String, String)> = markdown_files()
        .iter()
        .flat_map(|f| code_blocks(f))
        .filter(|b| b.language == "toml")
        .map(|b| (b.place, b.text))
        .collect();
    let upstream = examples().join("upstream.toml");
    snippets.push((
        "docs/examples/upstream.toml".into(),
        std::fs::read_to_string(upstream).unwrap(),
    ));
    let mut problems = Vec::new();
    for (place, text) in snippets {
        match ringhub::config::Config::from_toml_str(&text, &place) {
            Err(error) => problems.push(format!("{place}: {error}")),
            Ok(config) => match ringhub::hub::definitions(&config) {
                Err(error) => problems.push(format!("{place}: {error}")),
                Ok(_) => checked += 1,
            },
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    assert!(checked >= 5, "only {checked} TOML snippets were checked");
}

/// A server with what the examples need: a virtual key (id 1), an admin key, a server key,
/// CORS for `origin`, and `upstream.toml`'s hub bound to a backend on `backend_port`.
fn examples_server(
    driver: ringhub::config::DriverKind,
    name: &str,
    backend_port: u16,
    origin: Option<String>,
) -> (TestServer, String) {
    let dir = std::env::temp_dir().join(format!(
        "ringhub-docs-{name}-{}-{driver:?}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let key_file = dir.join("keys.json");
    let (key, record) = ringhub::auth::keys::add_key(&key_file, "docs", false, None).unwrap();
    assert_eq!(record.id, 1, "the examples' HUB_KEY_ID");
    let upstream = std::fs::read_to_string(examples().join("upstream.toml"))
        .unwrap()
        .replace("127.0.0.1:9000", &format!("127.0.0.1:{backend_port}"));
    let upstream = ringhub::config::Config::from_toml_str(&upstream, "upstream.toml").unwrap();
    let server = TestServer::start(driver, |c| {
        c.workers = std::num::NonZeroUsize::new(2).unwrap();
        c.auth.key_file = key_file.clone();
        c.auth.admin_key_hashes = vec![ringhub::auth::keys::hash_key(ADMIN_KEY)];
        c.auth.server_key_hashes = vec![ringhub::auth::keys::hash_key(SERVER_KEY)];
        c.health.push_interval = Duration::from_millis(500);
        c.cors.allowed_origins = origin.into_iter().collect();
        c.hubs = upstream.hubs;
    });
    (server, key)
}

/// A port nothing listens on right now (for the upstream example's backend).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A copy of `docs/examples` under the target directory whose `node_modules` is the test
/// suite's (ES modules resolve packages from the script's own directory, not `NODE_PATH`).
fn staged_examples(driver: ringhub::config::DriverKind) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("docs-examples-{driver:?}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(examples()).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            std::fs::copy(&path, dir.join(path.file_name().unwrap())).unwrap();
        }
    }
    let modules = repo().join("tests/js/node_modules");
    assert!(
        modules.join("@microsoft/signalr").is_dir(),
        "npm packages missing: run `npm ci --prefix tests/js` (tests/run-all.sh does)"
    );
    std::os::unix::fs::symlink(&modules, dir.join("node_modules")).unwrap();
    dir
}

/// Runs `node script` in `dir` with `env`; returns stdout and stderr, or fails the test when it
/// exits non-zero or runs longer than a minute.
fn run_node(dir: &Path, script: &str, env: &[(&str, &str)]) -> (String, String) {
    let mut child = Command::new("node")
        .arg(script)
        .current_dir(dir)
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    let (mut stdout, mut stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let out = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (out.join().unwrap(), err.join().unwrap());
    match status {
        None => panic!("{script} ran for over a minute\n{stdout}\n{stderr}"),
        Some(status) => assert!(
            status.success(),
            "{script} failed ({status})\n{stdout}\n{stderr}"
        ),
    }
    (stdout, stderr)
}

on_both_drivers! {
    fn every_node_example_runs_against_a_server_and_prints_what_the_docs_show(driver) {
        let backend_port = free_port();
        let (server, key) = examples_server(driver, "node", backend_port, None);
        let dir = staged_examples(driver);
        let base = format!("http://{}", server.addr);
        let port = backend_port.to_string();
        let env = [
            ("HUB_URL", base.as_str()),
            ("HUB_KEY", key.as_str()),
            ("HUB_KEY_ID", "1"),
            ("HUB_ADMIN_KEY", ADMIN_KEY),
            ("HUB_SERVER_KEY", SERVER_KEY),
            ("BACKEND_PORT", port.as_str()),
        ];
        for (script, expected) in NODE_EXAMPLES {
            let (stdout, stderr) = run_node(&dir, script, &env);
            let output = format!("{stdout}{stderr}");
            for fragment in *expected {
                assert!(output.contains(fragment), "{script} did not print {fragment:?}:\n{output}");
            }
        }
    }
}

on_both_drivers! {
    fn the_browser_example_connects_from_another_origin_in_headless_chromium(driver) {
        let Some(chromium) = chromium() else {
            return;
        };
        let bundle = std::fs::read(
            repo().join("tests/js/node_modules/@microsoft/signalr/dist/browser/signalr.min.js"),
        )
        .expect("the @microsoft/signalr browser bundle (npm ci --prefix tests/js)");
        let page = std::fs::read(examples().join(BROWSER_EXAMPLE)).unwrap();
        let origin = serve_files(vec![
            (format!("/{BROWSER_EXAMPLE}"), "text/html; charset=utf-8", page),
            ("/signalr.min.js".into(), "text/javascript", bundle),
        ]);
        let (server, key) = examples_server(driver, "browser", free_port(), Some(origin.clone()));
        run_js_suite(
            &repo().join("tests/js"),
            "docs-browser.test.mjs",
            &server,
            &[
                ("HUB_CHROMIUM", chromium.to_str().unwrap()),
                ("HUB_VIRTUAL_KEY", &key),
                ("HUB_PAGE_URL", &format!("{origin}/{BROWSER_EXAMPLE}")),
            ],
            1,
        );
    }
}
