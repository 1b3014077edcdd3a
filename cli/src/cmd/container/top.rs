//! `berth top CONTAINER [ps OPTIONS]`: the container's processes as the runtime host's `ps`
//! shows them (default `-ef`: UID PID PPID C STIME TTY TIME CMD), as docker.

use super::{client, daemon_err};
use crate::context::Context;
use crate::output::Table;
use anyhow::Result;
use berth_proto::runtime::v1 as pb;
use std::process::ExitCode;

/// `berth top` flags.
#[derive(clap::Args, Debug)]
pub struct TopOpts {
    /// Container (ID, ID prefix or name).
    pub container: String,
    /// Options for ps (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

/// Runs `top`.
pub async fn top(ctx: &Context, o: TopOpts) -> Result<ExitCode> {
    let mut rt = client(ctx).await?;
    let r =
        rt.top(pb::TopRequest { container: o.container, ps_args: o.ps_args }).await.map_err(daemon_err)?.into_inner();
    let mut t = Table::new(r.titles);
    for p in r.processes {
        t.row(p.cells);
    }
    print!("{t}");
    Ok(ExitCode::SUCCESS)
}
