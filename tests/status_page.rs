//! The status page at `/`: how it is served (raw HTTP), and what it does in a real browser.
//!
//! The browser half runs `tests/js/browser.test.mjs` (headless Debian Chromium driven by
//! `playwright-core`, both from `tests/run-all.sh`): the page loads under its own strict CSP,
//! connects to the Health hub through its own SignalR client and shows numbers that move with
//! traffic, asks for a key when the Health hub needs one, reconnects after its socket drops;
//! and the official `@microsoft/signalr` browser bundle, served from another origin, connects
//! to a virtual-key hub through the CORS preflight and the `access_token` query.

mod support;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use support::*;

on_both_drivers! {
    fn the_status_page_is_one_html_document_under_a_strict_content_security_policy(driver) {
        let server = TestServer::start(driver, |_| {});
        let page = get(server.addr, "/");
        assert_eq!(page.status, 200);
        assert_eq!(page.header("content-type"), Some("text/html; charset=utf-8"));
        let policy = page.header("content-security-policy").unwrap();
        assert!(policy.starts_with("default-src 'none'; script-src 'sha256-"), "{policy}");
        assert!(policy.contains("connect-src 'self'"), "{policy}");
        assert!(!policy.contains("unsafe"), "{policy}");
        assert_eq!(page.header("x-content-type-options"), Some("nosniff"));
        let html = page.body_str();
        assert!(html.starts_with("<!doctype html>"));
        assert!(html.contains(r#"content="/hubs/health" data-auth="anonymous" data-method="GetHealth""#));

        let mut stream = connect(server.addr);
        stream.write_all(b"HEAD / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").unwrap();
        let head = String::from_utf8(read_to_close(&mut stream)).unwrap();
        assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
        assert!(head.contains(&format!("content-length: {}\r\n", page.body.len())), "{head}");
        assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");

        let post = http(server.addr, b"POST / HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        assert_eq!((post.status, post.header("allow")), (405, Some("GET, HEAD")));
        // Hubs and the other routes are where they were.
        assert_eq!(get(server.addr, "/health").status, 200);
        assert_eq!(get(server.addr, "/hubs/health").status, 400, "a hub still wants an upgrade");
        assert_eq!(get(server.addr, "/index.html").status, 404);
    }

    fn with_the_status_page_off_the_root_path_is_not_found(driver) {
        let server = TestServer::start(driver, |c| c.status_page.enabled = false);
        assert_eq!(get(server.addr, "/").status, 404);
    }
}

on_both_drivers! {
    fn the_status_page_and_the_official_browser_client_work_in_headless_chromium(driver) {
        let Some(chromium) = chromium() else {
            return;
        };
        let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/js");
        assert!(
            js.join("node_modules/playwright-core").is_dir(),
            "npm packages missing: run `npm ci --prefix tests/js` (tests/run-all.sh does)"
        );
        let keys = std::env::temp_dir().join(format!("ringhub-browser-{}-{driver:?}", std::process::id()));
        let _ = std::fs::remove_dir_all(&keys);
        std::fs::create_dir_all(&keys).unwrap();
        let key_file = keys.join("keys.json");
        let (key, _) = ringhub::auth::keys::add_key(&key_file, "browser", false, None).unwrap();

        // Two static origins that serve the official browser bundle: CORS allows the first only.
        let bundle = std::fs::read(js.join("node_modules/@microsoft/signalr/dist/browser/signalr.min.js"))
            .expect("the @microsoft/signalr browser bundle");
        let app = serve_static(bundle.clone());
        let foreign = serve_static(bundle);
        let server = TestServer::start(driver, |c| {
            c.workers = std::num::NonZeroUsize::new(2).unwrap();
            c.auth.key_file = key_file.clone();
            c.cors.allowed_origins = vec![app.clone()];
            c.health.push_interval = Duration::from_millis(500);
        });
        // The same, with a Health hub that needs a virtual key.
        let keyed = TestServer::start(driver, |c| {
            c.auth.key_file = key_file.clone();
            c.hubs.push(ringhub::config::HubConfig {
                name: "health".into(),
                path: "/hubs/health".into(),
                auth: ringhub::config::HubAuth::VirtualKey,
                max_message_size: None,
                methods: vec![("GetHealth".into(), "health".into())],
                protocols: vec!["json".into()],
                join_on_connect: Vec::new(),
                redis_name: None,
                events_url: None,
            });
        });
        run_js_suite(
            &js,
            "browser.test.mjs",
            &server,
            &[
                ("HUB_CHROMIUM", chromium.to_str().unwrap()),
                ("HUB_VIRTUAL_KEY", &key),
                ("HUB_KEYED_BASE_URL", &format!("http://{}", keyed.addr)),
                ("HUB_APP_ORIGIN", &app),
                ("HUB_FOREIGN_ORIGIN", &foreign),
            ],
            5,
        );
    }
}

/// Serves `/` (a page that loads the bundle) and `/signalr.min.js` on a new port; returns the
/// origin.
fn serve_static(bundle: Vec<u8>) -> String {
    let page = b"<!doctype html><meta charset=\"utf-8\"><title>app</title>\
                 <link rel=\"icon\" href=\"data:,\"><script src=\"/signalr.min.js\"></script>";
    serve_files(vec![
        ("/".to_owned(), "text/html; charset=utf-8", page.to_vec()),
        ("/signalr.min.js".to_owned(), "text/javascript", bundle),
    ])
}
