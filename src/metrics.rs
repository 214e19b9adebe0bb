//! The Prometheus registry and typed metric handles.
