//! The `signalbox` binary: see `signalbox --help`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Parser;
use signalbox_server::accounts::{Accounts, NewUser, parse_claims};
use signalbox_server::cli::{Cli, Command, ConfigCommand, TokenCommand, UserAdd, UserCommand};
use signalbox_server::clock::parse_duration;
use signalbox_server::config::{Config, ConfigError};
use signalbox_server::db::Db;
use signalbox_server::tokens::{TokenService, claims_from_pairs};
use signalbox_server::{accounts, server};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), &cli.overrides()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    signalbox_server::logging::init(config.log.format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn set_disabled(config: &Config, name: &str, disabled: bool) -> anyhow::Result<()> {
    let db = Db::open(&config.database).await?;
    let found = db
        .set_user_disabled(name, disabled, signalbox_server::clock::now_ms())
        .await;
    db.close().await;
    if !found? {
        bail!("no user named {name:?}");
    }
    eprintln!(
        "{} user {name}",
        if disabled { "disabled" } else { "enabled" }
    );
    Ok(())
}

async fn run(cli: Cli, config: Config) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve => serve(config).await,
        Command::User(UserCommand::Add(args)) => user_add(&config, args).await,
        Command::User(UserCommand::Delete { name }) => {
            let db = Db::open(&config.database).await?;
            let deleted = db.delete_user(&name).await?;
            db.close().await;
            if !deleted {
                bail!("no user named {name:?}");
            }
            eprintln!("deleted user {name}");
            Ok(())
        }
        Command::User(UserCommand::Disable { name }) => set_disabled(&config, &name, true).await,
        Command::User(UserCommand::Enable { name }) => set_disabled(&config, &name, false).await,
        Command::Token(TokenCommand::Issue(args)) => {
            let tokens = TokenService::new(&config.auth)?;
            let ttl = match &args.ttl {
                Some(text) => Some(
                    parse_duration(text)
                        .filter(|d| !d.is_zero())
                        .with_context(|| format!("--ttl {text:?} is not a duration such as 10m"))?,
                ),
                None => None,
            };
            let mut pairs: Vec<(&str, &str)> = Vec::new();
            for claim in &args.claims {
                let (k, v) = claim
                    .split_once('=')
                    .with_context(|| format!("--claim {claim:?}: use TYPE=VALUE"))?;
                pairs.push((k, v));
            }
            pairs.extend(args.roles.iter().map(|r| ("role", r.as_str())));
            let token = tokens.issue(&args.sub, &claims_from_pairs(pairs), ttl)?;
            print_line(&token.token);
            Ok(())
        }
        Command::Config(ConfigCommand::Check) => {
            let db = Db::open(&config.database).await?;
            print_line(&config.summary());
            print_line(&format!(
                "Storage: {} ({}) reachable",
                db.backend(),
                db.display_url()
            ));
            db.close().await;
            if config.auth.jwt_secret.is_none() && config.auth.jwt_private_key.is_none() {
                eprintln!(
                    "warning: no JWT secret configured; `serve` would generate a development secret"
                );
            }
            Ok(())
        }
    }
}

#[allow(clippy::print_stdout)]
fn print_line(text: &str) {
    println!("{text}");
}

fn read_password(name: &str) -> anyhow::Result<String> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let first = rpassword::prompt_password(format!("Password for {name}: "))?;
        let second = rpassword::prompt_password("Repeat the password: ")?;
        if first != second {
            bail!("the passwords differ");
        }
        return Ok(first);
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        bail!("no password on standard input");
    }
    Ok(password)
}

async fn user_add(config: &Config, args: UserAdd) -> anyhow::Result<()> {
    accounts::validate_name(&args.name)?;
    let claims = parse_claims(&args.claims)?;
    let password = read_password(&args.name)?;
    let db = Db::open(&config.database).await?;
    let accounts = Accounts::new(db.clone());
    let user = NewUser {
        name: args.name.clone(),
        password: Some(password),
        roles: args.roles,
        claims,
    };
    let result = if args.update {
        accounts.upsert(user).await.map(|(_, created)| created)
    } else {
        accounts.create(user).await.map(|_| true)
    };
    db.close().await;
    let created = result?;
    eprintln!(
        "{} user {}",
        if created { "created" } else { "updated" },
        args.name
    );
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::warn!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    if config.ensure_secret() {
        eprintln!(
            "\n**********************************************************************\n\
             WARNING: no JWT secret configured (SIGNALBOX_JWT_SECRET).\n\
             A random development secret was generated: tokens stop working when\n\
             the process restarts, and `signalbox token issue` cannot sign for it.\n\
             Do not run like this in production.\n\
             **********************************************************************\n"
        );
    }
    if config.auth.jwt_secret.is_none() && config.auth.jwt_private_key.is_none() {
        return Err(ConfigError::MissingSecret.into());
    }
    tracing::info!(settings = %config.summary(), "starting");
    let listen = config.listen;
    let service = server::build(config).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let addr = listener.local_addr()?;
    let db = &service.state().db;
    print_line(&format!("Now listening on: http://{addr}"));
    print_line(&format!("Storage: {} ({})", db.backend(), db.display_url()));
    match &service.state().backplane {
        Some(backplane) => print_line(&format!(
            "Backplane: {} node={}",
            backplane.describe(),
            service.state().config.node
        )),
        None => print_line("Backplane: in-memory"),
    }
    service.serve(listener, shutdown_signal()).await?;
    Ok(())
}
