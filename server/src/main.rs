//! `nexus`: the one binary of the Nexus platform. See `nexus --help`.
//!
//! This crate is the composition root: it parses the command line and configuration, builds
//! the subsystems (store, API, edge) and wires them into one HTTP server.

mod alert_ingest;
mod alerting;
mod cli;
mod config;
mod edge;
mod events;
mod http;
mod metrics;
mod openapi_extra;
mod realtime;
mod rooms;
mod rtc;
mod secrets;
mod serve;
mod sfu_metrics;
mod telemetry;
mod turn;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::main()
}
