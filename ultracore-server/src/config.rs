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
    /// Required `iss` of JWKS-verified tokens.
    pub jwt_issuer: Option<String>,
    /// Required `aud` of JWKS-verified tokens.
    pub jwt_audience: Option<String>,
    /// Event store.
    pub store: StoreKind,
    /// PostgreSQL URL, for `store = "postgres"`.
    pub postgres_url: Option<String>,
    /// PostgreSQL schema holding UltraCore's tables.
    pub postgres_schema: String,
    /// Where balance, statement and restatement are answered.
    pub read_model: ReadModelKind,
    /// Requests per second allowed per principal (0 disables the limit).
    pub rate_limit_per_second: u32,
    /// Burst size of the per-principal limit.
    pub rate_limit_burst: u32,
    /// Log level: error, warn, info, debug, trace.
    pub log_level: String,
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
            jwt_issuer: None,
            jwt_audience: None,
            store: StoreKind::Journal,
            postgres_url: None,
            postgres_schema: "ultracore".to_string(),
            read_model: ReadModelKind::Memory,
            rate_limit_per_second: 10_000,
            rate_limit_burst: 20_000,
            log_level: "info".to_string(),
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

    /// The verification (and HS256 signing) keys: the HS256 secret, plus the JWKS if configured.
    pub fn jwt_keys(&self) -> Result<crate::auth::jwt::JwtKeys, ConfigError> {
        let keys = crate::auth::jwt::JwtKeys::hs256(&self.jwt_secret()?, self.jwt_leeway_seconds);
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
