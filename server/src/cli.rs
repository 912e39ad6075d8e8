//! Command-line interface. Exit codes: 0 success, 1 failed check or invalid input, 2 bad usage.

use crate::config::{Config, Overrides};
use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use nexus_auth::{Claims, Grant, Role, RoomKind};
use std::io::Read;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Nexus: real-time server for crisis response and telemedicine.
#[derive(Debug, Parser)]
#[command(name = "nexus", version, about, long_about = None)]
struct Cli {
    /// TOML configuration file (layered over defaults, under NEXUS_* variables and flags).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Data directory (SQLite file, generated secrets) [env: NEXUS_DATA_DIR].
    #[arg(long, global = true, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Database URL, sqlite://… or postgres://… [env: NEXUS_DATABASE_URL].
    #[arg(long, global = true, value_name = "URL")]
    database_url: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve HTTP, WebSocket and media until SIGTERM/SIGINT, then drain and exit 0.
    Serve(ServeArgs),
    /// Apply store migrations and exit.
    Migrate,
    /// Configuration tools.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Mint a signed JWT for local use and print it.
    Token(TokenArgs),
    /// Administrator accounts.
    #[command(subcommand)]
    Admin(AdminCommand),
    /// API keys for server-to-server callers.
    #[command(subcommand)]
    Apikey(ApikeyCommand),
    /// CAP (Common Alerting Protocol) tools.
    #[command(subcommand)]
    Cap(CapCommand),
}

#[derive(Debug, Subcommand)]
enum CapCommand {
    /// Validate CAP 1.0/1.1/1.2 documents: one `FILE: ok` line, or one
    /// `FILE:LINE:COL: error: MESSAGE` line per problem; exit 1 if any file is invalid.
    Validate {
        /// CAP XML files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// HTTP listener address; port 0 picks a free port [env: NEXUS_HTTP_ADDR].
    #[arg(long, value_name = "ADDR")]
    http_addr: Option<SocketAddr>,
    /// Log filter [env: NEXUS_LOG].
    #[arg(long, value_name = "FILTER")]
    log: Option<String>,
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration as TOML, secrets redacted; exit 1 on an invalid one.
    Check,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Subject: user or participant id.
    #[arg(long)]
    sub: String,
    /// Platform role (repeatable): patient, provider, student, teacher, responder,
    /// coordinator, alert_authority, admin.
    #[arg(long = "role", value_name = "ROLE")]
    roles: Vec<Role>,
    /// SFU room name.
    #[arg(long)]
    room: Option<String>,
    /// SFU room kind: consultation or class.
    #[arg(long, value_name = "KIND", requires = "room")]
    room_kind: Option<RoomKind>,
    /// Room grants, comma-separated: publish,subscribe,admin.
    #[arg(long, value_delimiter = ',', requires = "room")]
    grants: Vec<Grant>,
    /// Gateway channels, comma-separated.
    #[arg(long, value_delimiter = ',')]
    channels: Vec<String>,
    /// Display name.
    #[arg(long)]
    name: Option<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: u64,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Create an admin user, or promote an existing user to admin.
    Create {
        /// The admin's e-mail address.
        #[arg(long)]
        email: String,
        /// Read the password from standard input (otherwise one is generated and printed).
        #[arg(long)]
        password_stdin: bool,
        /// Display name (default: the e-mail's local part).
        #[arg(long)]
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ApikeyCommand {
    /// Create an API key and print it once (it is stored hashed).
    Create {
        /// Name of the caller the key is for.
        #[arg(long)]
        name: String,
        /// gateway (publish to the realtime gateway) or admin.
        #[arg(long, default_value = "gateway", value_parser = ["gateway", "admin"])]
        scope: String,
    },
}

/// Parses arguments and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                    ExitCode::SUCCESS
                }
                _ => ExitCode::from(2),
            };
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn load_config(cli: &Cli, serve: Option<&ServeArgs>) -> Result<Config> {
    let flags = Overrides {
        http_addr: serve.and_then(|s| s.http_addr),
        data_dir: cli.data_dir.clone(),
        database_url: cli.database_url.clone(),
        log: serve.and_then(|s| s.log.clone()),
    };
    Config::load(cli.config.as_deref(), std::env::vars(), &flags)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("nexus-worker")
        .build()
        .context("cannot start the async runtime")
}

fn run(cli: Cli) -> Result<ExitCode> {
    match &cli.command {
        Command::Serve(args) => {
            let config = load_config(&cli, Some(args))?;
            crate::telemetry::init(&config);
            runtime()?.block_on(crate::serve::run(config))?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Migrate => {
            let config = load_config(&cli, None)?;
            crate::telemetry::init_cli(&config);
            runtime()?.block_on(async {
                let store = nexus_store::Store::connect(&config.database_url()).await?;
                let applied = store.migrate().await?;
                println!(
                    "applied {} migration(s){}",
                    applied.len(),
                    if applied.is_empty() {
                        "; store is up to date"
                    } else {
                        ""
                    }
                );
                store.close().await;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Config(ConfigCommand::Check) => match load_config(&cli, None) {
            Ok(config) => {
                print!("{}", config.to_redacted_toml()?);
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("error: {e:#}");
                Ok(ExitCode::from(1))
            }
        },
        Command::Token(args) => {
            let config = load_config(&cli, None)?;
            let keys = crate::serve::token_keys(&config)?;
            if args.room.is_some() && args.room_kind.is_none() {
                bail!("--room needs --room-kind consultation|class");
            }
            let mut claims = Claims::new(args.sub.clone(), args.ttl).with_roles(args.roles.clone());
            if !args.channels.is_empty() {
                claims = claims.with_channels(args.channels.clone());
            }
            if let (Some(room), Some(kind)) = (&args.room, args.room_kind) {
                claims = claims.with_room(room.clone(), kind, args.grants.clone());
            }
            claims.name.clone_from(&args.name);
            println!("{}", keys.mint(&claims)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Admin(AdminCommand::Create {
            email,
            password_stdin,
            name,
        }) => {
            let config = load_config(&cli, None)?;
            crate::telemetry::init_cli(&config);
            let password = if *password_stdin {
                let mut s = String::new();
                std::io::stdin()
                    .read_to_string(&mut s)
                    .context("cannot read the password from stdin")?;
                Some(s.trim_end_matches(['\r', '\n']).to_string())
            } else {
                None
            };
            runtime()?.block_on(create_admin(&config, email, password, name.clone()))
        }
        Command::Cap(CapCommand::Validate { files }) => Ok(cap_validate(files)),
        Command::Apikey(ApikeyCommand::Create { name, scope }) => {
            let config = load_config(&cli, None)?;
            crate::telemetry::init_cli(&config);
            runtime()?.block_on(async {
                let store = crate::serve::open_store(&config).await?;
                let created = nexus_api::users::create_key(&store, name, scope)
                    .await
                    .map_err(|p| anyhow::anyhow!("{}", p.detail.unwrap_or(p.title)))?;
                println!("{}", created.key);
                eprintln!(
                    "API key {} ({}) created; it is shown only once",
                    created.id, created.scope
                );
                store.close().await;
                Ok(ExitCode::SUCCESS)
            })
        }
    }
}

async fn create_admin(
    config: &Config,
    email: &str,
    password: Option<String>,
    name: Option<String>,
) -> Result<ExitCode> {
    let store = crate::serve::open_store(config).await?;
    if let Some(user) = store.user_by_email(email).await? {
        let mut roles = user.roles.clone();
        if !roles.iter().any(|r| r == "admin") {
            roles.push("admin".into());
            store.set_roles(&user.id, &roles, &[]).await?;
        }
        if let Some(pw) = password {
            if pw.chars().count() < 8 {
                bail!("password must be at least 8 characters");
            }
            store
                .set_password_hash(&user.id, &nexus_auth::hash_password(&pw)?)
                .await?;
        }
        eprintln!("user {} is an admin", user.id);
        store.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let (password, generated) = match password {
        Some(p) => (p, false),
        None => (nexus_auth::opaque_secret(""), true),
    };
    if password.chars().count() < 8 {
        bail!("password must be at least 8 characters");
    }
    if !email.contains('@') {
        bail!("`{email}` is not an e-mail address");
    }
    let id = uuid::Uuid::now_v7().to_string();
    let name = name.unwrap_or_else(|| email.split('@').next().unwrap_or("admin").to_string());
    let hash = nexus_auth::hash_password(&password)?;
    let mut user = nexus_store::UserRecord::new(
        &id,
        email,
        name,
        hash,
        vec!["admin".into()],
        nexus_store::now_ms(),
    );
    user.email_verified = true;
    let event = nexus_api::events::event(
        "users",
        "user.registered",
        &id,
        serde_json::json!({"id": id, "roles": ["admin"]}),
    );
    store.create_user(&user, &[event]).await?;
    if generated {
        println!("{password}");
        eprintln!("admin {id} created; the generated password above is shown only once");
    } else {
        eprintln!("admin {id} created");
    }
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

/// `nexus cap validate`: needs no configuration, store or runtime.
fn cap_validate(files: &[PathBuf]) -> ExitCode {
    let mut all_ok = true;
    for file in files {
        let name = file.display().to_string();
        let bytes = match std::fs::read(file) {
            Ok(b) => b,
            Err(e) => {
                println!("{name}: error: cannot read: {e}");
                all_ok = false;
                continue;
            }
        };
        let problems = nexus_cap::check(&bytes);
        if problems.is_empty() {
            println!("{name}: ok");
        } else {
            all_ok = false;
            for p in &problems {
                println!("{}", p.render(&name));
            }
        }
    }
    if all_ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
