//! The `ultracore` binary: `serve` (the default), `token`, `verify-audit`, `replay`.
//! Logs are JSON lines on stderr; stdout carries only what a command prints for its caller.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ultracore_server::auth::audit::{verify, AuditError};
use ultracore_server::auth::jwt::JwtKeys;
use ultracore_server::auth::{Principal, Role};
use ultracore_server::config::{Config, TOKEN_TTL_SECONDS_MAX};

/// UltraCore: an event-sourced, bitemporal core-banking ledger server.
#[derive(Debug, Parser)]
#[command(name = "ultracore", version)]
struct Cli {
    /// TOML configuration file (also `ULTRACORE_CONFIG`); `ULTRACORE_*` variables override it.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Cmd>,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the server (the default).
    Serve,
    /// Mint a short-lived JWT with the configured key and print it alone on stdout.
    Token {
        /// Subject.
        #[arg(long)]
        sub: String,
        /// admin, teller, customer, auditor or compliance_officer.
        #[arg(long)]
        role: Role,
        /// Branch claim (tellers).
        #[arg(long)]
        branch: Option<String>,
        /// Customer claim (customers).
        #[arg(long)]
        customer: Option<String>,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 900)]
        ttl: u64,
        /// Mark the token as issued after multi-factor authentication (`amr: ["mfa"]`), as
        /// the sensitive actions of `ULTRACORE_MFA_REQUIRED_FOR` need.
        #[arg(long)]
        mfa: bool,
    },
    /// Check the audit log's hash chain; names the first broken link and exits non-zero.
    VerifyAudit,
    /// Rebuild the ledger state from the store, with a progress line.
    Replay,
    /// Create the PostgreSQL schema (`ULTRACORE_POSTGRES_SCHEMA`) if needed and apply every
    /// pending migration (`ULTRACORE_POSTGRES_URL`); the server also migrates at start.
    Migrate,
}

/// The system allocator by default. With `--features mimalloc` the server runs on mimalloc, which
/// spends less CPU on the request path's many small, short-lived allocations (5-12 % less CPU
/// per transfer measured here) but held the same 10 M-event ledger in 6.5 GB instead of 4.6 GB
/// and restarted in 8-13 s instead of 6-8 s (docs/BENCHMARKS.md, "Allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let file = cli
        .config
        .clone()
        .or_else(|| std::env::var_os("ULTRACORE_CONFIG").map(PathBuf::from));
    let config = match Config::load(file.as_deref(), |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ultracore: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log_level);
    match cli.command.unwrap_or(Cmd::Serve) {
        Cmd::Serve => run_serve(config),
        Cmd::Token {
            sub,
            role,
            branch,
            customer,
            ttl,
            mfa,
        } => token(
            &config,
            Principal {
                sub,
                role,
                branch,
                customer,
                mfa,
            },
            ttl,
        ),
        Cmd::VerifyAudit => verify_audit(&config),
        Cmd::Replay => run_replay(&config),
        Cmd::Migrate => migrate(&config),
    }
}

fn migrate(config: &Config) -> ExitCode {
    let Some(url) = config.postgres_url.as_deref() else {
        eprintln!("ultracore: migrate needs a PostgreSQL URL (ULTRACORE_POSTGRES_URL)");
        return ExitCode::from(2);
    };
    let pg = match config.postgres_config(url) {
        Ok(pg) => pg,
        Err(e) => {
            eprintln!("ultracore: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime().block_on(ultracore_postgres::migrate(&pg)) {
        Ok(applied) if applied.is_empty() => {
            println!("migrate: schema {} is up to date", pg.schema);
            ExitCode::SUCCESS
        }
        Ok(applied) => {
            let list: Vec<String> = applied.iter().map(u32::to_string).collect();
            println!(
                "migrate: schema {}: applied version {}",
                pg.schema,
                list.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("ultracore: migrate: {e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: &str) {
    let level = level.parse().unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .json()
        .with_max_level(level)
        .with_current_span(false)
        .with_writer(std::io::stderr)
        .init();
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts")
}

fn run_serve(config: Config) -> ExitCode {
    match runtime().block_on(ultracore_server::serve::serve(config, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ultracore: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

fn token(config: &Config, principal: Principal, ttl: u64) -> ExitCode {
    if ttl == 0 || ttl > TOKEN_TTL_SECONDS_MAX {
        eprintln!("ultracore: --ttl must be 1 to {TOKEN_TTL_SECONDS_MAX} seconds");
        return ExitCode::from(2);
    }
    let secret = match config.jwt_secret() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("ultracore: {e}");
            return ExitCode::FAILURE;
        }
    };
    let keys = JwtKeys::hs256(&secret, config.jwt_leeway_seconds);
    println!(
        "{}",
        keys.mint(&principal, ultracore_server::util::unix_seconds(), ttl)
    );
    ExitCode::SUCCESS
}

fn verify_audit(config: &Config) -> ExitCode {
    let path = config.audit_path();
    match verify(&path) {
        Ok(end) => {
            println!(
                "audit log {}: {} records, chain intact, last hash {}{}",
                path.display(),
                end.records,
                end.last_hash,
                if end.torn_tail > 0 {
                    format!(
                        " ({} bytes of an unfinished last record, never acknowledged)",
                        end.torn_tail
                    )
                } else {
                    String::new()
                }
            );
            ExitCode::SUCCESS
        }
        Err(e @ AuditError::Broken { .. }) => {
            println!("{e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("ultracore: {e}");
            ExitCode::from(2)
        }
    }
}

fn run_replay(config: &Config) -> ExitCode {
    runtime().block_on(async {
        let stores = match ultracore_server::store::open_stores(config) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("ultracore: opening the store: {e}");
                return ExitCode::FAILURE;
            }
        };
        let start = Instant::now();
        let mut last_line = Instant::now();
        let result = ultracore_core::engine::replay(
            stores.events.as_ref(),
            ultracore_core::ledger::LedgerConfig::default(),
            |position| {
                if last_line.elapsed() >= Duration::from_secs(1) {
                    last_line = Instant::now();
                    let secs = start.elapsed().as_secs_f64();
                    eprintln!(
                        "replay: position {position} ({:.0} events/s)",
                        position as f64 / secs
                    );
                }
            },
        )
        .await;
        match result {
            Ok(ledger) => {
                println!(
                    "replay: {} events, {} accounts, {} entries in {:.2}s",
                    ledger.position(),
                    ledger.accounts().count(),
                    ledger.entry_count(),
                    start.elapsed().as_secs_f64()
                );
                if !stores.durable {
                    println!("replay: the configured store is in memory, so the log starts empty");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ultracore: replay failed: {e}");
                ExitCode::FAILURE
            }
        }
    })
}
