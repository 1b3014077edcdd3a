//! `berth context ls|show|use|create|rm`: named sets of endpoints in the config file, like
//! `docker context`.

use crate::config::{self, ConfigFile, ContextConfig, TlsConfig, DEFAULT_CONTEXT};
use crate::context::GlobalOpts;
use crate::output::Table;
use anyhow::{bail, Context as _, Result};
use std::path::PathBuf;
use std::process::ExitCode;

/// `berth context ...`
#[derive(clap::Subcommand, Debug)]
pub enum ContextCommand {
    /// List contexts; the current one is marked with *.
    #[command(alias = "list")]
    Ls,
    /// Print the name of the current context.
    Show,
    /// Make a context the current one ("default" is the local stack).
    Use {
        /// Context name.
        name: String,
    },
    /// Create a context from --store/--registry/--runtime endpoints (and/or --root).
    ///
    /// Example: berth context create prod --store https://store:7443 --registry https://registry:7443
    /// --runtime https://node1:7443 --tls-ca ca.pem --tls-cert client.pem --tls-key client-key.pem
    Create {
        /// Context name.
        name: String,
        /// Free text shown by `context ls`.
        #[arg(long)]
        description: Option<String>,
        /// CA bundle for https endpoints.
        #[arg(long, value_name = "PEM")]
        tls_ca: Option<PathBuf>,
        /// Client certificate (mutual TLS).
        #[arg(long, value_name = "PEM")]
        tls_cert: Option<PathBuf>,
        /// Client key (mutual TLS).
        #[arg(long, value_name = "PEM")]
        tls_key: Option<PathBuf>,
        /// Server name to verify when it differs from the endpoint host.
        #[arg(long)]
        tls_server_name: Option<String>,
    },
    /// Remove contexts.
    #[command(alias = "remove")]
    Rm {
        /// Context names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

fn config_path() -> Result<PathBuf> {
    config::default_path().context("no config file location: set BERTH_CONFIG or HOME")
}

pub async fn run(cmd: ContextCommand, global: &GlobalOpts) -> Result<ExitCode> {
    let path = config_path()?;
    let mut cfg = ConfigFile::load(&path)?;
    let current = global
        .context
        .clone()
        .or_else(|| std::env::var("BERTH_CONTEXT").ok().filter(|s| !s.is_empty()))
        .or_else(|| cfg.current_context.clone())
        .unwrap_or_else(|| DEFAULT_CONTEXT.to_string());
    match cmd {
        ContextCommand::Ls => {
            let mut t = Table::new(["NAME", "DESCRIPTION", "STORE", "REGISTRY", "RUNTIME"]);
            let mark = |n: &str| if n == current { format!("{n} *") } else { n.to_string() };
            t.row([
                mark(DEFAULT_CONTEXT),
                "Local stack (started on demand)".into(),
                "-".into(),
                "-".into(),
                "-".into(),
            ]);
            for (name, c) in &cfg.contexts {
                let ep = |e: &Option<String>| e.clone().unwrap_or_else(|| "local stack".into());
                let desc = c.description.clone().unwrap_or_else(|| match &c.root {
                    Some(r) => format!("Local stack in {}", r.display()),
                    None => String::new(),
                });
                t.row([mark(name), desc, ep(&c.store), ep(&c.registry), ep(&c.runtime)]);
            }
            print!("{t}");
        }
        ContextCommand::Show => println!("{current}"),
        ContextCommand::Use { name } => {
            if name != DEFAULT_CONTEXT && !cfg.contexts.contains_key(&name) {
                bail!("context {name:?} does not exist; see `berth context ls`");
            }
            cfg.current_context = (name != DEFAULT_CONTEXT).then(|| name.clone());
            cfg.save(&path)?;
            println!("{name}");
            eprintln!("Current context is now {name:?}");
        }
        ContextCommand::Create { name, description, tls_ca, tls_cert, tls_key, tls_server_name } => {
            if name == DEFAULT_CONTEXT {
                bail!("{DEFAULT_CONTEXT:?} is the built-in local stack and cannot be created");
            }
            if cfg.contexts.contains_key(&name) {
                bail!("context {name:?} already exists");
            }
            let tls = (tls_ca.is_some() || tls_cert.is_some() || tls_key.is_some() || tls_server_name.is_some())
                .then_some(TlsConfig { ca: tls_ca, cert: tls_cert, key: tls_key, server_name: tls_server_name });
            let c = ContextConfig {
                description,
                root: global.root.clone(),
                store: global.store.clone(),
                registry: global.registry.clone(),
                runtime: global.runtime.clone(),
                tls,
            };
            c.validate(&name)?;
            cfg.contexts.insert(name.clone(), c);
            cfg.save(&path)?;
            println!("{name}");
            eprintln!("Successfully created context {name:?} in {}", path.display());
        }
        ContextCommand::Rm { names } => {
            for name in &names {
                if cfg.contexts.remove(name).is_none() {
                    bail!("context {name:?} does not exist");
                }
                if cfg.current_context.as_deref() == Some(name) {
                    cfg.current_context = None;
                }
            }
            cfg.save(&path)?;
            for name in names {
                println!("{name}");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
