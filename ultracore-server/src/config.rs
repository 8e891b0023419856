//! Configuration: defaults, then an optional TOML file, then `ULTRACORE_*` environment
//! variables (the last one wins). Also the JWT secret: configured, or generated once with the
//! OS CSPRNG and kept in the data dir, readable by the owner only.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Largest body of an ordinary request (bytes).
pub const BODY_BYTES_MAX: usize = 64 * 1024;
/// Largest body of `POST /v1/transfers/batch` (bytes): room for a full batch of transfers.
pub const BATCH_BODY_BYTES_MAX: usize = 8 * 1024 * 1024;
/// Most transfers in one `POST /v1/transfers/batch` (the engine's batch limit).
pub const TRANSFERS_PER_BATCH_MAX: usize = ultracore_core::limits::COMMANDS_PER_BATCH_MAX;
/// Most events in one `GET /v1/events` page.
pub const EVENTS_PER_PAGE_MAX: usize = 1_000;
/// Most audit records in one `GET /v1/audit` page.
pub const AUDIT_RECORDS_PER_PAGE_MAX: usize = 1_000;
/// Longest lifetime of a token minted by `ultracore token` (seconds).
pub const TOKEN_TTL_SECONDS_MAX: u64 = 24 * 3600;
/// Bytes of a generated JWT secret.
pub const JWT_SECRET_BYTES: usize = 32;
/// Shortest configured JWT secret (bytes): HS256 keys shorter than the hash are weak.
pub const JWT_SECRET_BYTES_MIN: usize = 32;

const _: () = assert!(BATCH_BODY_BYTES_MAX >= TRANSFERS_PER_BATCH_MAX * 256);
const _: () = assert!(EVENTS_PER_PAGE_MAX <= ultracore_core::limits::EVENTS_PER_READ_MAX);

/// Which event store the server runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    /// The embedded durable journal in `<data_dir>/journal` (snapshots in
    /// `<data_dir>/snapshots`): the default.
    Journal,
    /// PostgreSQL at `postgres_url`, schema `postgres_schema` (snapshots in the same schema).
    Postgres,
    /// In memory: nothing survives the process (tests, demos).
    Memory,
}

/// Where the read endpoints (balance, statement, restatement) are answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReadModelKind {
    /// The engine's in-memory ledger: the default.
    Memory,
    /// The SQL read model of `ultracore-postgres`, projected in the background from the
    /// PostgreSQL log (needs `store = "postgres"`; see `read_model.rs`).
    Postgres,
}

/// Everything the server reads from its environment.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the JWT secret, the audit log and (later) the journal live.
    pub data_dir: PathBuf,
    /// Ledger API listener.
    pub ledger_addr: SocketAddr,
    /// Compliance API listener (health only for now).
    pub compliance_addr: SocketAddr,
    /// Document API listener (health only for now).
    pub document_addr: SocketAddr,
    /// Notification API listener (health only for now).
    pub notification_addr: SocketAddr,
    /// HS256 secret; if unset, one is generated and kept in `<data_dir>/jwt_secret`.
    pub jwt_secret: Option<String>,
    /// Allowed clock skew when checking `exp` / `nbf` (seconds).
    pub jwt_leeway_seconds: u64,
    /// JWKS file of an OIDC provider: RS256 / ES256 tokens signed by its keys are accepted too.
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL of an OIDC provider (`https://` or `http://`): fetched at start and again when a token names
    /// an unknown `kid`, at most once per `jwks_refresh_min_seconds`.
    pub jwks_url: Option<String>,
    /// PEM certificates that an `https://` `jwks_url` must chain to, instead of Mozilla's roots.
    pub jwks_ca_file: Option<PathBuf>,
    /// Shortest time between two fetches of `jwks_url` (seconds).
    pub jwks_refresh_min_seconds: u64,
    /// Required `iss` of JWKS-verified tokens.
    pub jwt_issuer: Option<String>,
    /// Required `aud` of JWKS-verified tokens.
    pub jwt_audience: Option<String>,
    /// PEM certificate chain: with `tls_key`, every listener serves HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Event store.
    pub store: StoreKind,
    /// PostgreSQL URL, for `store = "postgres"`.
    pub postgres_url: Option<String>,
    /// PostgreSQL schema holding UltraCore's tables.
    pub postgres_schema: String,
    /// Connect to PostgreSQL over TLS only, verifying its certificate and host name.
    pub postgres_tls: bool,
    /// PEM CA certificates that sign PostgreSQL's certificate (with `postgres_tls`; without
    /// it, Mozilla's roots).
    pub postgres_ca_file: Option<PathBuf>,
    /// Where balance, statement and restatement are answered.
    pub read_model: ReadModelKind,
    /// Requests per second allowed per principal (0 disables the limit).
    pub rate_limit_per_second: u32,
    /// Burst size of the per-principal limit.
    pub rate_limit_burst: u32,
    /// Log level: error, warn, info, debug, trace.
    pub log_level: String,
    /// Take a snapshot (and the journal's index checkpoint) while serving once this many events
    /// were appended since the last one (0: never by count).
    pub snapshot_every_events: u64,
    /// Also take one when this many seconds passed since the last one and the log grew
    /// (0: never by time).
    pub snapshot_interval_seconds: u64,
    /// Sensitive actions that need a token with `amr` containing `"mfa"`: any of
    /// `account_close`, `correction`, `reversal`, `transfer` (empty: none).
    pub mfa_required_for: Vec<String>,
    /// With `transfer` in `mfa_required_for`: money moves of more than this amount (a decimal,
    /// in the units of the transfer's own currency) need MFA.
    pub mfa_transfer_threshold: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            ledger_addr: ([127, 0, 0, 1], 8000).into(),
            compliance_addr: ([127, 0, 0, 1], 8001).into(),
            document_addr: ([127, 0, 0, 1], 8002).into(),
            notification_addr: ([127, 0, 0, 1], 8003).into(),
            jwt_secret: None,
            jwt_leeway_seconds: 5,
            jwks_file: None,
            jwks_url: None,
            jwks_ca_file: None,
            jwks_refresh_min_seconds: 30,
            jwt_issuer: None,
            jwt_audience: None,
            tls_cert: None,
            tls_key: None,
            store: StoreKind::Journal,
            postgres_url: None,
            postgres_schema: "ultracore".to_string(),
            postgres_tls: false,
            postgres_ca_file: None,
            read_model: ReadModelKind::Memory,
            rate_limit_per_second: 10_000,
            rate_limit_burst: 20_000,
            log_level: "info".to_string(),
            snapshot_every_events: 1_000_000,
            snapshot_interval_seconds: 3_600,
            mfa_required_for: Vec::new(),
            mfa_transfer_threshold: "10000".to_string(),
        }
    }
}

/// Why the configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// An environment variable has an invalid value.
    #[error("invalid value for {var}: {message}")]
    Env {
        /// The variable.
        var: &'static str,
        /// Why.
        message: String,
    },
    /// The JWT secret could not be read, created or accepted.
    #[error("JWT secret: {0}")]
    Secret(String),
}

impl Config {
    /// The PostgreSQL settings of `url`: schema, and TLS as configured.
    pub fn postgres_config(
        &self,
        url: &str,
    ) -> Result<ultracore_postgres::PgConfig, ultracore_postgres::PgError> {
        let mut pg = ultracore_postgres::PgConfig::new(url, &self.postgres_schema)?;
        if self.postgres_tls {
            pg.connector = ultracore_postgres::Connector::tls(self.postgres_ca_file.as_deref())?;
        }
        Ok(pg)
    }

    /// Defaults, then `file` (if any), then the `ULTRACORE_*` variables from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut config = match file {
            None => Config::default(),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })?;
                toml::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })?
            }
        };
        config.apply_env(env)?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        fn parse<T: std::str::FromStr>(var: &'static str, v: &str) -> Result<T, ConfigError>
        where
            T::Err: std::fmt::Display,
        {
            v.trim().parse().map_err(|e: T::Err| ConfigError::Env {
                var,
                message: e.to_string(),
            })
        }
        if let Some(v) = env("ULTRACORE_DATA_DIR") {
            self.data_dir = PathBuf::from(v);
        }
        for (var, slot) in [
            ("ULTRACORE_LEDGER_ADDR", &mut self.ledger_addr),
            ("ULTRACORE_COMPLIANCE_ADDR", &mut self.compliance_addr),
            ("ULTRACORE_DOCUMENT_ADDR", &mut self.document_addr),
            ("ULTRACORE_NOTIFICATION_ADDR", &mut self.notification_addr),
        ] {
            if let Some(v) = env(var) {
                *slot = parse(var, &v)?;
            }
        }
        if let Some(v) = env("ULTRACORE_JWT_SECRET") {
            self.jwt_secret = Some(v);
        }
        if let Some(v) = env("ULTRACORE_JWKS_FILE") {
            self.jwks_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("ULTRACORE_TLS_CERT") {
            self.tls_cert = Some(PathBuf::from(v));
        }
        if let Some(v) = env("ULTRACORE_TLS_KEY") {
            self.tls_key = Some(PathBuf::from(v));
        }
        if let Some(v) = env("ULTRACORE_JWKS_URL") {
            self.jwks_url = Some(v);
        }
        if let Some(v) = env("ULTRACORE_JWKS_CA_FILE") {
            self.jwks_ca_file = Some(PathBuf::from(v));
        }
        if let Some(v) = env("ULTRACORE_JWKS_REFRESH_MIN_SECONDS") {
            self.jwks_refresh_min_seconds = parse("ULTRACORE_JWKS_REFRESH_MIN_SECONDS", &v)?;
        }
        if let Some(v) = env("ULTRACORE_JWT_ISSUER") {
            self.jwt_issuer = Some(v);
        }
        if let Some(v) = env("ULTRACORE_JWT_AUDIENCE") {
            self.jwt_audience = Some(v);
        }
        if let Some(v) = env("ULTRACORE_JWT_LEEWAY_SECONDS") {
            self.jwt_leeway_seconds = parse("ULTRACORE_JWT_LEEWAY_SECONDS", &v)?;
        }
        if let Some(v) = env("ULTRACORE_RATE_LIMIT_PER_SECOND") {
            self.rate_limit_per_second = parse("ULTRACORE_RATE_LIMIT_PER_SECOND", &v)?;
        }
        if let Some(v) = env("ULTRACORE_RATE_LIMIT_BURST") {
            self.rate_limit_burst = parse("ULTRACORE_RATE_LIMIT_BURST", &v)?;
        }
        if let Some(v) = env("ULTRACORE_SNAPSHOT_EVERY_EVENTS") {
            self.snapshot_every_events = parse("ULTRACORE_SNAPSHOT_EVERY_EVENTS", &v)?;
        }
        if let Some(v) = env("ULTRACORE_SNAPSHOT_INTERVAL_SECONDS") {
            self.snapshot_interval_seconds = parse("ULTRACORE_SNAPSHOT_INTERVAL_SECONDS", &v)?;
        }
        if let Some(v) = env("ULTRACORE_MFA_REQUIRED_FOR") {
            self.mfa_required_for = v.split(',').map(|s| s.trim().to_string()).collect();
        }
        if let Some(v) = env("ULTRACORE_MFA_TRANSFER_THRESHOLD") {
            self.mfa_transfer_threshold = v;
        }
        if let Some(v) = env("ULTRACORE_LOG") {
            self.log_level = v;
        }
        if let Some(v) = env("ULTRACORE_STORE") {
            self.store = match v.as_str() {
                "journal" => StoreKind::Journal,
                "postgres" => StoreKind::Postgres,
                "memory" => StoreKind::Memory,
                other => {
                    return Err(ConfigError::Env {
                        var: "ULTRACORE_STORE",
                        message: format!(
                            "unknown store {other:?} (known: journal, postgres, memory)"
                        ),
                    })
                }
            };
        }
        if let Some(v) = env("ULTRACORE_POSTGRES_URL") {
            self.postgres_url = Some(v);
            // Naming a database means using it, unless the store was chosen explicitly.
            if env("ULTRACORE_STORE").is_none() {
                self.store = StoreKind::Postgres;
            }
        }
        if let Some(v) = env("ULTRACORE_POSTGRES_SCHEMA") {
            self.postgres_schema = v;
        }
        if let Some(v) = env("ULTRACORE_POSTGRES_TLS") {
            self.postgres_tls = parse("ULTRACORE_POSTGRES_TLS", &v)?;
        }
        if let Some(v) = env("ULTRACORE_POSTGRES_CA_FILE") {
            self.postgres_ca_file = Some(PathBuf::from(v));
            // A CA file only makes sense over TLS.
            if env("ULTRACORE_POSTGRES_TLS").is_none() {
                self.postgres_tls = true;
            }
        }
        if let Some(v) = env("ULTRACORE_READ_MODEL") {
            self.read_model = match v.as_str() {
                "memory" => ReadModelKind::Memory,
                "postgres" => ReadModelKind::Postgres,
                other => {
                    return Err(ConfigError::Env {
                        var: "ULTRACORE_READ_MODEL",
                        message: format!("unknown read model {other:?} (known: memory, postgres)"),
                    })
                }
            };
        }
        if self.read_model == ReadModelKind::Postgres && self.store != StoreKind::Postgres {
            return Err(ConfigError::Env {
                var: "ULTRACORE_READ_MODEL",
                message: "the postgres read model projects the PostgreSQL log: it needs \
                          ULTRACORE_STORE=postgres"
                    .into(),
            });
        }
        Ok(())
    }

    /// The verification (and HS256 signing) keys: the HS256 secret, plus the JWKS file and the
    /// JWKS URL if configured (the URL is not fetched here: see `JwtKeys::refresh`).
    pub fn jwt_keys(&self) -> Result<crate::auth::jwt::JwtKeys, ConfigError> {
        let mut keys =
            crate::auth::jwt::JwtKeys::hs256(&self.jwt_secret()?, self.jwt_leeway_seconds);
        if let Some(url) = &self.jwks_url {
            let client = url
                .parse()
                .and_then(|url| {
                    crate::auth::jwks::JwksClient::new(url, self.jwks_ca_file.as_deref())
                })
                .map_err(|message| ConfigError::Env {
                    var: "ULTRACORE_JWKS_URL",
                    message,
                })?;
            keys = keys.with_jwks_url(
                client,
                self.jwt_issuer.as_deref(),
                self.jwt_audience.as_deref(),
                std::time::Duration::from_secs(self.jwks_refresh_min_seconds),
            );
        }
        match &self.jwks_file {
            None => Ok(keys),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                keys.with_jwks(
                    &text,
                    self.jwt_issuer.as_deref(),
                    self.jwt_audience.as_deref(),
                )
                .map_err(|message| ConfigError::Parse {
                    path: path.clone(),
                    message,
                })
            }
        }
    }

    /// The step-up (MFA) policy for sensitive actions.
    pub fn mfa_policy(&self) -> Result<crate::auth::mfa::MfaPolicy, ConfigError> {
        crate::auth::mfa::MfaPolicy::parse(&self.mfa_required_for, &self.mfa_transfer_threshold)
            .map_err(|message| ConfigError::Env {
                var: "ULTRACORE_MFA_REQUIRED_FOR",
                message,
            })
    }

    /// The TLS acceptor when a certificate and key are configured (both or neither).
    pub fn tls(&self) -> Result<Option<tokio_rustls::TlsAcceptor>, ConfigError> {
        let invalid = |message: String| ConfigError::Env {
            var: "ULTRACORE_TLS_CERT",
            message,
        };
        match (&self.tls_cert, &self.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => crate::tls::acceptor(cert, key).map(Some).map_err(invalid),
            _ => Err(invalid(
                "set both ULTRACORE_TLS_CERT and ULTRACORE_TLS_KEY, or neither".into(),
            )),
        }
    }

    /// Path of the audit log.
    pub fn audit_path(&self) -> PathBuf {
        self.data_dir.join("audit.log")
    }

    /// Path of the generated JWT secret.
    pub fn secret_path(&self) -> PathBuf {
        self.data_dir.join("jwt_secret")
    }

    /// The HS256 secret: the configured one, or the one kept in the data dir (created with the
    /// OS CSPRNG and mode 0600 on first use).
    pub fn jwt_secret(&self) -> Result<Vec<u8>, ConfigError> {
        if let Some(s) = &self.jwt_secret {
            if s.len() < JWT_SECRET_BYTES_MIN {
                return Err(ConfigError::Secret(format!(
                    "ULTRACORE_JWT_SECRET must be at least {JWT_SECRET_BYTES_MIN} bytes"
                )));
            }
            return Ok(s.as_bytes().to_vec());
        }
        load_or_create_secret(&self.data_dir, &self.secret_path())
    }
}

fn load_or_create_secret(dir: &Path, path: &Path) -> Result<Vec<u8>, ConfigError> {
    let err = |what: &str, e: std::io::Error| {
        ConfigError::Secret(format!("{what} {}: {e}", path.display()))
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let bytes = crate::util::hex_decode(text.trim())
                .ok_or_else(|| ConfigError::Secret(format!("{} is not hex", path.display())))?;
            if bytes.len() < JWT_SECRET_BYTES_MIN {
                return Err(ConfigError::Secret(format!(
                    "{} holds fewer than {JWT_SECRET_BYTES_MIN} bytes",
                    path.display()
                )));
            }
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(|e| err("cannot create the directory of", e))?;
            let mut secret = vec![0u8; JWT_SECRET_BYTES];
            getrandom::fill(&mut secret)
                .map_err(|e| ConfigError::Secret(format!("OS random source failed: {e}")))?;
            write_private(path, crate::util::hex(&secret).as_bytes())
                .map_err(|e| err("cannot create", e))?;
            Ok(secret)
        }
        Err(e) => Err(err("cannot read", e)),
    }
}

/// Creates `path` (which must not exist) readable and writable by the owner only, writes and
/// syncs it. `create_new` means two processes racing to create it cannot both win.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(bytes)?;
    f.write_all(b"\n")?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_then_file_then_env() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(c.ledger_addr.to_string(), "127.0.0.1:8000");
        assert_eq!(c.notification_addr.port(), 8003);
        assert_eq!(c.data_dir, PathBuf::from("./data"));

        let dir = crate::util::temp_dir("config");
        let file = dir.join("ultracore.toml");
        std::fs::write(
            &file,
            "ledger_addr = \"127.0.0.1:9000\"\ndata_dir = \"/tmp/x\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), env(&[("ULTRACORE_DATA_DIR", "/tmp/y")])).unwrap();
        assert_eq!(c.ledger_addr.port(), 9000, "file overrides the default");
        assert_eq!(
            c.data_dir,
            PathBuf::from("/tmp/y"),
            "env overrides the file"
        );
    }

    #[test]
    fn bad_values_are_named() {
        let e = Config::load(None, env(&[("ULTRACORE_LEDGER_ADDR", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("ULTRACORE_LEDGER_ADDR"), "{e}");
        let dir = crate::util::temp_dir("config-bad");
        let file = dir.join("c.toml");
        std::fs::write(&file, "ledger_adr = \"127.0.0.1:9000\"\n").unwrap();
        assert!(matches!(
            Config::load(Some(&file), env(&[])),
            Err(ConfigError::Parse { .. })
        ));
    }

    #[test]
    fn mfa_policy_from_env_and_bad_names_are_refused() {
        let c = Config::load(None, env(&[])).unwrap();
        assert_eq!(
            c.mfa_policy().unwrap(),
            crate::auth::mfa::MfaPolicy::default(),
            "off by default"
        );
        let c = Config::load(
            None,
            env(&[
                ("ULTRACORE_MFA_REQUIRED_FOR", "account_close, transfer"),
                ("ULTRACORE_MFA_TRANSFER_THRESHOLD", "2500.50"),
            ]),
        )
        .unwrap();
        let p = c.mfa_policy().unwrap();
        assert!(p.account_close && !p.correction && !p.reversal);
        assert_eq!(p.transfer_above, Some("2500.50".parse().unwrap()));
        let c = Config::load(None, env(&[("ULTRACORE_MFA_REQUIRED_FOR", "everything")])).unwrap();
        let e = c.mfa_policy().unwrap_err().to_string();
        assert!(
            e.contains("ULTRACORE_MFA_REQUIRED_FOR") && e.contains("everything"),
            "{e}"
        );
    }

    #[test]
    fn generated_secret_is_kept_private_and_reused() {
        let dir = crate::util::temp_dir("secret");
        let c = Config {
            data_dir: dir.join("data"),
            ..Config::default()
        };
        let first = c.jwt_secret().unwrap();
        assert_eq!(first.len(), JWT_SECRET_BYTES);
        assert_eq!(
            c.jwt_secret().unwrap(),
            first,
            "generated once, then reused"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(c.secret_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let short = Config {
            jwt_secret: Some("short".into()),
            ..Config::default()
        };
        assert!(short.jwt_secret().is_err());
    }
}
