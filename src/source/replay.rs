//! Replay: read whole files (or stdin) start to end as fast as possible.
