//! Integration tests: tailer.
