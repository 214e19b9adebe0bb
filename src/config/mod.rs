//! Configuration: TOML loading, validation (every error at once), secrets.
