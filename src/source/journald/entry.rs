//! One line of `journalctl --output=json`: the cursor, the message and its time.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::Value;

use crate::event::EventTime;

/// What tokenwatch reads from a journal entry.
#[derive(Debug, PartialEq, Eq)]
pub struct Entry<'a> {
    /// Where the entry is (for `--after-cursor`).
    pub cursor: String,
    /// `MESSAGE` as bytes (`None`: the entry has none).
    pub message: Option<Cow<'a, [u8]>>,
    /// `__REALTIME_TIMESTAMP` (microseconds since the epoch), when present and sane.
    pub time: Option<EventTime>,
}

/// Why a line is not a usable entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EntryError {
    /// Not a JSON object with a `__CURSOR` string.
    #[error("not a journal JSON entry")]
    Json,
    /// `MESSAGE` of an unexpected shape (e.g. bytes out of 0..=255).
    #[error("MESSAGE is neither a string nor bytes")]
    Message,
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(rename = "__CURSOR")]
    cursor: String,
    #[serde(rename = "__REALTIME_TIMESTAMP", borrow, default)]
    realtime: Option<Cow<'a, str>>,
    #[serde(rename = "MESSAGE", default)]
    message: Option<Value>,
}

/// Parses one output line.
pub fn parse(line: &[u8]) -> Result<Entry<'static>, EntryError> {
    let raw: Raw<'_> = serde_json::from_slice(line).map_err(|_| EntryError::Json)?;
    let time = raw
        .realtime
        .as_deref()
        .and_then(|t| t.parse::<u64>().ok())
        .and_then(|us| i64::try_from(us / 1000).ok())
        .and_then(crate::parse::time::epoch_in_range);
    let message = match raw.message {
        None | Some(Value::Null) => None,
        Some(v) => Some(Cow::Owned(message_bytes(v)?)),
    };
    Ok(Entry {
        cursor: raw.cursor,
        message,
        time,
    })
}

/// `MESSAGE` is a string, or an array of byte values when it is not valid UTF-8 (or holds
/// control characters); a field written twice is an array of those: the first is taken.
fn message_bytes(v: Value) -> Result<Vec<u8>, EntryError> {
    match v {
        Value::String(s) => Ok(s.into_bytes()),
        Value::Array(items) if items.iter().all(Value::is_number) => items
            .iter()
            .map(|n| {
                n.as_u64()
                    .and_then(|b| u8::try_from(b).ok())
                    .ok_or(EntryError::Message)
            })
            .collect(),
        Value::Array(items) => match items.into_iter().next() {
            Some(first @ (Value::String(_) | Value::Array(_))) => message_bytes(first),
            _ => Err(EntryError::Message),
        },
        _ => Err(EntryError::Message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_binary_and_repeated_messages() {
        let e = parse(br#"{"__CURSOR":"s=1;i=2","__REALTIME_TIMESTAMP":"1772459736120000","MESSAGE":"hello"}"#).unwrap();
        assert_eq!(e.cursor, "s=1;i=2");
        assert_eq!(e.message.as_deref(), Some(&b"hello"[..]));
        assert_eq!(e.time, Some(EventTime::from_millis(1_772_459_736_120)));
        let e = parse(br#"{"__CURSOR":"c","MESSAGE":[104,105,255,10]}"#).unwrap();
        assert_eq!(e.message.as_deref(), Some(&b"hi\xff\n"[..]));
        assert_eq!(e.time, None);
        let e = parse(br#"{"__CURSOR":"c","MESSAGE":["one","two"]}"#).unwrap();
        assert_eq!(e.message.as_deref(), Some(&b"one"[..]));
        let e = parse(br#"{"__CURSOR":"c","MESSAGE":null}"#).unwrap();
        assert_eq!(e.message, None);
    }

    #[test]
    fn refuses_junk() {
        assert_eq!(parse(b"not json"), Err(EntryError::Json));
        assert_eq!(parse(br#"{"MESSAGE":"no cursor"}"#), Err(EntryError::Json));
        assert_eq!(
            parse(br#"{"__CURSOR":"c","MESSAGE":[1,300]}"#),
            Err(EntryError::Message)
        );
        assert_eq!(
            parse(br#"{"__CURSOR":"c","MESSAGE":{"a":1}}"#),
            Err(EntryError::Message)
        );
        assert_eq!(
            parse(br#"{"__CURSOR":"c","__REALTIME_TIMESTAMP":"-5","MESSAGE":"x"}"#)
                .unwrap()
                .time,
            None
        );
    }
}
