//! Atomic durable writes for every state file: tmp + fsync + rename + directory fsync.
