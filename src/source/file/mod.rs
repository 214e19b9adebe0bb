//! File tailer: follows files through rotation, truncation and restarts.
