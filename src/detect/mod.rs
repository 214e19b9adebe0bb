//! Detection: event-time windows, baselines and detectors (issue 3).
