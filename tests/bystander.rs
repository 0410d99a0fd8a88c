//! The hostile-input suite's bystander (`tests/support/bystander.rs`) on its own: it receives
//! every published message on a quiet server, and it notices when its connection is cut.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::bystander::{self, Bystander};
use support::*;

on_both_drivers! {
    fn a_bystander_on_a_quiet_server_gets_every_message_in_order(driver) {
        let server = TestServer::start(driver, bystander::configure);
        let mut b = Bystander::start(&server);
        std::thread::sleep(Duration::from_millis(200));
        b.check();
        std::thread::sleep(Duration::from_millis(200));
        b.finish();
    }

    fn a_bystander_whose_server_stops_fails_its_finish(driver) {
        let mut server = TestServer::start(driver, bystander::configure);
        let b = Bystander::start(&server);
        std::thread::sleep(Duration::from_millis(100));
        server.shutdown();
        std::thread::sleep(Duration::from_millis(300));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| b.finish()));
        let message = outcome.expect_err("finish must fail once the server is gone");
        let text = message
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| message.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        assert!(
            text.contains("publisher") || text.contains("disconnected"),
            "an unexpected failure: {text}"
        );
    }
}
