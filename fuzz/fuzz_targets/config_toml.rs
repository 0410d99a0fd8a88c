//! The config loader: any TOML text gives a validated config or an error naming a key; never a
//! panic. A config that loads also builds its hub definitions without panicking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringhub::config::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = Config::from_toml_str(text, "fuzz") {
        let _ = ringhub::hub::definitions(&config);
    }
});
