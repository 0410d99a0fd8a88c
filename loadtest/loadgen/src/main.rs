//! `loadgen`: ringhub's load generator (see `loadtest/README.md`).

use std::process::ExitCode;

use clap::Parser;
use ringhub_loadgen::cli::Cli;

fn main() -> ExitCode {
    let cli = Cli::parse();
    ringhub_loadgen::raise_nofile();
    match ringhub_loadgen::run(cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("loadgen: {error:#}");
            ExitCode::from(2)
        }
    }
}
