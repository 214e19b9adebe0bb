//! HTTP server: /metrics, /healthz, /readyz and the admin API.
