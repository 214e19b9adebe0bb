//! The pipeline driver: batches of lines through parse, enrich, count (and later detect).
