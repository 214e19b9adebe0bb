//! What hooks send: the JSON body (record + event) and placeholder values.

use serde::Serialize;

use crate::config::template::{self, Escape};
use crate::detect::Detection;
use crate::respond::journal::Job;

#[derive(Serialize)]
struct Body<'a> {
    event: &'static str,
    idempotency_key: String,
    #[serde(flatten)]
    detection: &'a Detection,
}

/// The JSON body: `{"event":…,"idempotency_key":…}` followed by the record's fields.
pub fn json(job: &Job) -> Vec<u8> {
    let b = Body {
        event: job.event.as_str(),
        idempotency_key: job.idempotency_key(),
        detection: &job.detection,
    };
    serde_json::to_vec(&b).unwrap_or_default()
}

/// The value of placeholder `name` for `job` (empty when absent).
pub fn value(job: &Job, name: &str) -> String {
    let d = &job.detection;
    match name {
        "token" => d.token.clone().unwrap_or_default(),
        "accessor" => d.evidence["accessor"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_default(),
        "user" => d.user.clone().unwrap_or_default(),
        "id" => d.id.clone(),
        "ip" => d.ip.map(|i| i.to_string()).unwrap_or_default(),
        "detector" => d.detector.clone(),
        "severity" => d.severity.as_str().to_string(),
        "event" => job.event.as_str().to_string(),
        "reason" => d.reason.clone().unwrap_or_default(),
        _ => String::new(),
    }
}

/// Fills `t` for `job`.
pub fn render(t: &str, esc: Escape, job: &Job) -> String {
    template::fill(t, esc, |n| value(job, n))
}
