//! pgpilot's configuration: reads the TOML file (or the `proxy`
//! subcommand's URLs) and produces validated [`Settings`].
//!
//! Two layers, one conversion: `raw` structs mirror the file and reject
//! unknown keys; `validate` turns them into the [`Settings`] types
//! (`SocketAddr`, `Duration`, `NonZeroUsize`) and reports every bad field by
//! its path at once ([`Error::Invalid`]). The CLI
//! calls [`load`] at start-up and on SIGHUP and hands the result to the
//! listener, pools and admin API; nothing else reads the file.
//!
//! Reference for every key: `docs/configuration.md`.

mod cache;
mod duration;
mod error;
mod insight;
mod quick_start;
mod raw;
mod secret;
mod settings;
mod size;
mod url;
mod validate;

use std::path::Path;

pub use cache::{
    CacheConfig, CacheRule, WalInvalidation, DEFAULT_CACHE_MEMORY, DEFAULT_MAX_RESULT_SIZE,
};
pub use duration::{format_duration, parse_duration, MAX_DURATION};
pub use error::{Error, FieldError, Result};
pub use insight::{
    InsightConfig, DEFAULT_MAX_FINGERPRINTS, HISTOGRAM_PRECISION_RANGE, MIN_N_PLUS_ONE_REPEATS,
};
pub use quick_start::QuickStart;
pub use secret::SecretKind;
pub use settings::{
    AuthMethod, Fallback, PoolMode, PoolSettings, RoutingSettings, RywScope, ServerAddr, Settings,
    Upstream, User, DEFAULT_ADMIN_LISTEN, DEFAULT_LISTEN, DEFAULT_MAX_CLIENT_CONNECTIONS,
    DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_POOL_MAX_SIZE, DEFAULT_POSTGRES_PORT,
    DEFAULT_STARTUP_TIMEOUT, MAX_HEALTH_CHECK_TIMEOUT, MAX_MAX_MESSAGE_SIZE, MIN_LSN_POLL_INTERVAL,
    MIN_MAX_MESSAGE_SIZE,
};
pub use size::{format_size, parse_size};
pub use url::{parse_postgres_url, PgUrl};

/// Reads and validates the config file at `path`.
///
/// # Errors
/// [`Error::Io`] when the file cannot be read or is not UTF-8, otherwise as
/// [`from_toml_str`].
pub fn load(path: &Path) -> Result<Settings> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    from_toml_str(&text)
}

/// Parses and validates config text.
///
/// # Errors
/// [`Error::Parse`] for TOML syntax errors, unknown keys and values of the
/// wrong TOML type (toml's message names the key and line);
/// [`Error::Invalid`] listing every field whose value is not acceptable.
pub fn from_toml_str(text: &str) -> Result<Settings> {
    let raw: raw::RawConfig = toml::from_str(text)
        .map_err(|error| Error::Parse(error.to_string().trim_end().to_owned()))?;
    validate::settings_from_raw(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_loads() {
        let settings = from_toml_str(include_str!("../../../pgpilot.example.toml"))
            .unwrap_or_else(|e| panic!("pgpilot.example.toml is invalid:\n{e}"));
        assert!(!settings.users.is_empty());
        // The example's [routing], [insight] and [cache] tables show the
        // defaults, as its header says.
        assert_eq!(settings.routing, RoutingSettings::default());
        assert_eq!(settings.insight, InsightConfig::default());
        assert_eq!(settings.cache, CacheConfig::default());
    }

    #[test]
    fn load_reads_a_file_and_reports_missing_ones() {
        let dir = std::env::temp_dir().join(format!("pgpilot-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("pgpilot.toml");
        let text = "[upstream]\nprimary = \"db:5432\"\n[[users]]\nname = \"a\"\nauth = \"trust\"\n";
        std::fs::write(&path, text).unwrap();
        assert_eq!(load(&path).unwrap().upstream.primary.to_string(), "db:5432");
        std::fs::remove_dir_all(&dir).unwrap();
        match load(&path) {
            Err(Error::Io { path: reported, .. }) => assert_eq!(reported, path),
            other => panic!("expected Io error, got {other:?}"),
        }
    }
}
