//! `berth`: parse the command line, reach the services, print. All behaviour lives in the
//! modules; this file only dispatches.

use clap::{Parser, Subcommand};
use std::process::ExitCode;

mod cmd;
mod context;

/// A Docker-like container engine built from gRPC services.
#[derive(Parser, Debug)]
#[command(name = "berth", version, about, disable_help_subcommand = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: context::GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Top-level commands. Each area owns its own flattened enum in `cmd/`.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Manage Berth itself: info, df, prune.
    #[command(subcommand)]
    System(cmd::system::SystemCommand),
    #[command(flatten)]
    Image(cmd::image::ImageCommand),
    #[command(flatten)]
    Container(cmd::container::ContainerCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let ctx = match context::Context::load(cli.global) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("berth: {e:#}");
            return ExitCode::from(125);
        }
    };
    let result = match cli.command {
        Command::System(c) => cmd::system::run(c, &ctx).await,
        Command::Image(c) => cmd::image::run(c, &ctx).await,
        Command::Container(c) => cmd::container::run(c, &ctx).await,
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("Error: {e:#}");
            ExitCode::from(cmd::exit_code_of(&e))
        }
    }
}
