//! The `signalbox` binary: see `signalbox --help`.

use std::io::{BufRead, IsTerminal};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Parser;
use signalbox_server::auth::accounts;
use signalbox_server::auth::accounts::{Accounts, NewUser, parse_claims};
use signalbox_server::auth::tokens::{TokenService, claims_from_pairs};
use signalbox_server::cli::{Cli, Command, TokenCommand, UserAdd, UserCommand};
use signalbox_server::clock::parse_duration;
use signalbox_server::config::{Config, ConfigError};
use signalbox_server::data_dir::{self, SecretSource};
use signalbox_server::db::Db;
use signalbox_server::server;
use signalbox_server::telemetry::{Telemetry, TelemetryConfig};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref(), &cli.overrides()) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    };
    // Tracing (OTLP) only for the service itself, and only with an `OTEL_EXPORTER_OTLP_*`
    // endpoint; started outside the runtime (its exporter has a blocking HTTP client).
    let telemetry = if matches!(cli.command, Command::Serve) {
        match TelemetryConfig::from_env().and_then(|c| c.as_ref().map(Telemetry::start).transpose())
        {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    signalbox_server::logging::init_with(config.log.format, telemetry.as_ref());
    signalbox_server::config::report_unknown_env();
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
    let outcome = runtime.block_on(run(cli, config));
    drop(runtime);
    if let Some(telemetry) = telemetry {
        // The last spans, after the service stopped.
        telemetry.shutdown();
    }
    match outcome {
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
            let mut config = config;
            signing_secret(&mut config)?;
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
        Command::Config(ref args) => {
            signalbox_server::config::report::run(
                args.command.as_ref(),
                cli.config.as_deref(),
                &cli.overrides(),
                &mut std::io::stdout(),
            )
            .await
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

/// Settles the signing secret (see `signalbox_server::data_dir`): the configured one, else the
/// data directory's, generated on first use.
fn signing_secret(config: &mut Config) -> anyhow::Result<SecretSource> {
    let source = data_dir::resolve_secret(config)?;
    match &source {
        SecretSource::Configured => {}
        SecretSource::Created(path) => eprintln!(
            "Generated a signing secret in {} (kept for the next starts and for `signalbox token issue`; \
             several nodes need one shared SIGNALBOX_JWT_SECRET instead)",
            path.display()
        ),
        SecretSource::Loaded(path) => {
            tracing::debug!(path = %path.display(), "signing secret read from the data directory");
        }
    }
    Ok(source)
}

async fn serve(mut config: Config) -> anyhow::Result<()> {
    signing_secret(&mut config)?;
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
    match signalbox_server::setup::first_run_link(service.state(), addr).await {
        Ok(Some(link)) => {
            print_line(&format!(
                "No administrator yet: create one with this one-time link (valid for {} minutes):\n  {link}",
                signalbox_server::setup::LINK_TTL.as_secs() / 60
            ));
            if addr.ip().is_unspecified() {
                print_line(
                    "  (from another machine, put this server's address in place of localhost)",
                );
            }
        }
        Ok(None) => {}
        Err(error) => tracing::warn!(%error, "cannot create a setup link"),
    }
    print_line(&format!("Storage: {} ({})", db.backend(), db.display_url()));
    match &service.state().backplane {
        Some(backplane) => print_line(&format!(
            "Backplane: {} node={}",
            backplane.describe(),
            service.state().config.node
        )),
        None => print_line("Backplane: in-memory"),
    }
    if let Some(azure) = &service.state().azure {
        print_line(&format!(
            "Azure SignalR: {}",
            azure.connection_string_hint(addr)
        ));
    }
    service.serve(listener, shutdown_signal()).await?;
    Ok(())
}
