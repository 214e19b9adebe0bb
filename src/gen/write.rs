//! Formats generated requests as log lines (nginx `tokenwatch`, JSON lines, Vault audit) into one
//! reused buffer: no allocation per line.

use std::io::Write as _;
use std::net::IpAddr;

use super::clock::{day_start, time_of_day, DAY};
use super::ev::{Ev, AGENTS, REQUESTS};
use super::rng::mix64;
use super::GenFormat;
use crate::event::{civil_from_days, Reason};

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];
const HEX: &[u8; 16] = b"0123456789abcdef";

/// Turns [`Ev`]s into lines of one format.
pub(crate) struct LineWriter {
    format: GenFormat,
    buf: Vec<u8>,
    /// The cached calendar day (ms of its midnight) and its date parts.
    day: i64,
    ymd: (i64, u32, u32),
    /// Salt for Vault request ids and ports.
    salt: u64,
    seq: u64,
}

impl LineWriter {
    /// A writer for `format`; `salt` varies Vault request ids with the seed.
    pub(crate) fn new(format: GenFormat, salt: u64) -> LineWriter {
        LineWriter {
            format,
            buf: Vec::with_capacity(1024),
            day: i64::MIN,
            ymd: (1970, 1, 1),
            salt,
            seq: 0,
        }
    }

    /// The line for `ev`, newline included.
    pub(crate) fn line(&mut self, ev: &Ev) -> &[u8] {
        self.buf.clear();
        self.seq += 1;
        let day = day_start(ev.t);
        if day != self.day {
            self.day = day;
            self.ymd = civil_from_days(day / DAY);
        }
        match self.format {
            GenFormat::Nginx => self.nginx(ev),
            GenFormat::Json => self.json(ev),
            GenFormat::Vault => self.vault(ev),
        }
        self.buf.push(b'\n');
        &self.buf
    }

    fn nginx(&mut self, ev: &Ev) {
        let r = request(ev);
        push_ip(&mut self.buf, ev.ip);
        self.buf.extend_from_slice(b" - - [");
        let (y, m, d) = self.ymd;
        push_2(&mut self.buf, i64::from(d));
        self.buf.push(b'/');
        let month = MONTHS
            .get(m.saturating_sub(1) as usize)
            .unwrap_or(&MONTHS[0]);
        self.buf.extend_from_slice(*month);
        self.buf.push(b'/');
        push_u64(&mut self.buf, y.max(0) as u64);
        self.buf.push(b':');
        push_clock(&mut self.buf, ev.t);
        self.buf.extend_from_slice(b" +0000] \"");
        self.buf.extend_from_slice(r.method.as_bytes());
        self.buf.push(b' ');
        self.buf.extend_from_slice(r.path.as_bytes());
        self.buf.extend_from_slice(b" HTTP/1.1\" ");
        push_u64(&mut self.buf, u64::from(ev.status));
        self.buf.push(b' ');
        push_u64(&mut self.buf, u64::from(ev.bytes));
        self.buf.extend_from_slice(b" \"-\" \"");
        self.buf.extend_from_slice(agent(ev).as_bytes());
        self.buf.extend_from_slice(b"\" \"");
        match ev.token {
            Some(tok) => push_token(&mut self.buf, tok),
            None => self.buf.push(b'-'),
        }
        self.buf.extend_from_slice(b"\" \"");
        self.buf
            .extend_from_slice(ev.reason.map_or("-", Reason::as_str).as_bytes());
        self.buf.push(b'"');
    }

    fn json(&mut self, ev: &Ev) {
        let r = request(ev);
        self.buf.extend_from_slice(b"{\"ts\":\"");
        self.push_rfc3339(ev.t);
        self.buf.push(b'"');
        if let Some(tok) = ev.token {
            self.buf.extend_from_slice(b",\"token_id\":\"");
            push_token(&mut self.buf, tok);
            self.buf.push(b'"');
        }
        if ev.user != 0 {
            self.buf.extend_from_slice(b",\"user\":\"");
            push_user(&mut self.buf, ev.user);
            self.buf.push(b'"');
        }
        self.buf.extend_from_slice(b",\"ip\":\"");
        push_ip(&mut self.buf, ev.ip);
        self.buf.extend_from_slice(b"\",\"method\":\"");
        self.buf.extend_from_slice(r.method.as_bytes());
        self.buf.extend_from_slice(b"\",\"path\":\"");
        self.buf.extend_from_slice(r.path.as_bytes());
        self.buf.extend_from_slice(b"\",\"status\":");
        push_u64(&mut self.buf, u64::from(ev.status));
        if let Some(reason) = ev.reason {
            self.buf.extend_from_slice(b",\"reason\":\"");
            self.buf.extend_from_slice(reason.as_str().as_bytes());
            self.buf.push(b'"');
        }
        self.buf.push(b'}');
    }

    fn vault(&mut self, ev: &Ev) {
        let r = request(ev);
        let mount = r.vault_path.split('/').next().unwrap_or("secret");
        // What Vault writes: a token it resolved (accepted, or refused by policy) comes with
        // its accessor, display name and policies; a token it could not resolve (unknown,
        // revoked, expired) leaves only the HMAC'd client token on the request.
        let resolved = !matches!(
            ev.reason,
            Some(Reason::Invalid | Reason::Revoked | Reason::Expired | Reason::Other)
        );
        self.buf.extend_from_slice(b"{\"time\":\"");
        self.push_rfc3339(ev.t);
        self.buf
            .extend_from_slice(b"\",\"type\":\"response\",\"auth\":{");
        match ev.token {
            Some(tok) if resolved => {
                self.buf.extend_from_slice(b"\"client_token\":\"");
                push_hmac(&mut self.buf, tok);
                self.buf.extend_from_slice(b"\",\"accessor\":\"");
                push_token(&mut self.buf, tok);
                self.buf.extend_from_slice(b"\",\"display_name\":\"token");
                if ev.user != 0 {
                    self.buf.push(b'-');
                    push_user(&mut self.buf, ev.user);
                }
                self.buf.extend_from_slice(
                    b"\",\"policies\":[\"default\",\"app\"],\"token_policies\":[\"default\",\"app\"],\"token_type\":\"service\"",
                );
            }
            _ => self.buf.extend_from_slice(b"\"token_type\":\"default\""),
        }
        self.buf.extend_from_slice(b"},\"request\":{\"id\":\"");
        self.push_uuid();
        self.buf.extend_from_slice(b"\",\"operation\":\"");
        self.buf.extend_from_slice(r.vault_op.as_bytes());
        self.buf.extend_from_slice(b"\",\"mount_type\":\"");
        self.buf.extend_from_slice(mount.as_bytes());
        if let Some(tok) = ev.token {
            self.buf.extend_from_slice(b"\",\"client_token\":\"");
            push_hmac(&mut self.buf, tok);
            if resolved {
                self.buf
                    .extend_from_slice(b"\",\"client_token_accessor\":\"");
                push_token(&mut self.buf, tok);
            }
        }
        self.buf
            .extend_from_slice(b"\",\"namespace\":{\"id\":\"root\"},\"path\":\"");
        self.buf.extend_from_slice(r.vault_path.as_bytes());
        self.buf.extend_from_slice(b"\",\"remote_address\":\"");
        push_ip(&mut self.buf, ev.ip);
        self.buf.extend_from_slice(b"\",\"remote_port\":");
        push_u64(&mut self.buf, 32_768 + mix64(self.salt ^ self.seq) % 28_000);
        self.buf
            .extend_from_slice(b"},\"response\":{\"mount_type\":\"");
        self.buf.extend_from_slice(mount.as_bytes());
        self.buf.extend_from_slice(b"\"}");
        if ev.reason.is_some() {
            // Vault's response entries wrap the error; request entries say just "permission denied".
            self.buf.extend_from_slice(
                b",\"error\":\"1 error occurred:\\n\\t* permission denied\\n\\n\"",
            );
        }
        self.buf.push(b'}');
    }

    /// `2026-03-02T13:55:36.120Z`.
    fn push_rfc3339(&mut self, t: i64) {
        let (y, m, d) = self.ymd;
        push_u64(&mut self.buf, y.max(0) as u64);
        self.buf.push(b'-');
        push_2(&mut self.buf, i64::from(m));
        self.buf.push(b'-');
        push_2(&mut self.buf, i64::from(d));
        self.buf.push(b'T');
        push_clock(&mut self.buf, t);
        self.buf.push(b'.');
        let ms = t.rem_euclid(1000);
        self.buf.push(b'0' + (ms / 100) as u8);
        push_2(&mut self.buf, ms % 100);
        self.buf.push(b'Z');
    }

    /// A version-4-shaped UUID, deterministic from the seed and line number.
    fn push_uuid(&mut self) {
        let a = mix64(self.salt ^ self.seq.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let b = mix64(a ^ 0x2545_F491_4F6C_DD1D);
        push_hex(&mut self.buf, a >> 32, 8);
        self.buf.push(b'-');
        push_hex(&mut self.buf, (a >> 16) & 0xffff, 4);
        self.buf.push(b'-');
        push_hex(&mut self.buf, 0x4000 | (a & 0x0fff), 4);
        self.buf.push(b'-');
        push_hex(&mut self.buf, 0x8000 | (b >> 48 & 0x3fff), 4);
        self.buf.push(b'-');
        push_hex(&mut self.buf, b & 0xffff_ffff_ffff, 12);
    }
}

fn request(ev: &Ev) -> &'static super::ev::Request {
    REQUESTS.get(usize::from(ev.req)).unwrap_or(&REQUESTS[0])
}

fn agent(ev: &Ev) -> &'static str {
    AGENTS.get(usize::from(ev.ua)).copied().unwrap_or(AGENTS[0])
}

/// `HH:MM:SS` of the UTC time of day.
fn push_clock(buf: &mut Vec<u8>, t: i64) {
    let s = time_of_day(t) / 1000;
    push_2(buf, s / 3600);
    buf.push(b':');
    push_2(buf, s / 60 % 60);
    buf.push(b':');
    push_2(buf, s % 60);
}

/// Two zero-padded digits of `n` (0..100).
fn push_2(buf: &mut Vec<u8>, n: i64) {
    let n = n.rem_euclid(100) as u8;
    buf.push(b'0' + n / 10);
    buf.push(b'0' + n % 10);
}

/// Decimal digits without allocation.
pub(crate) fn push_u64(buf: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// The low `digits` (at most 16) nibbles of `v` as lowercase hex.
fn push_hex(buf: &mut Vec<u8>, v: u64, digits: u32) {
    let mut tmp = [0u8; 16];
    let digits = digits.min(16) as usize;
    for (i, slot) in tmp[..digits].iter_mut().rev().enumerate() {
        *slot = HEX[((v >> (i * 4)) & 0xf) as usize];
    }
    buf.extend_from_slice(&tmp[..digits]);
}

/// A token id: `ak_` + 12 hex.
pub(crate) fn push_token(buf: &mut Vec<u8>, tok: u64) {
    buf.extend_from_slice(b"ak_");
    push_hex(buf, tok, 12);
}

/// The printable token id.
pub(crate) fn token_string(tok: u64) -> String {
    let mut b = Vec::with_capacity(15);
    push_token(&mut b, tok);
    String::from_utf8_lossy(&b).into_owned()
}

/// `user` + at least four digits.
fn push_user(buf: &mut Vec<u8>, user: u32) {
    buf.extend_from_slice(b"user");
    for div in [1000, 100, 10] {
        if user < div {
            buf.push(b'0');
        }
    }
    push_u64(buf, u64::from(user));
}

/// What Vault's audit device would print for the token: a stable `hmac-sha256:` + 64 hex.
fn push_hmac(buf: &mut Vec<u8>, tok: u64) {
    buf.extend_from_slice(b"hmac-sha256:");
    for salt in 1..=4u64 {
        push_hex(
            buf,
            mix64(tok ^ salt.wrapping_mul(0xA24B_AED4_963E_E407)),
            16,
        );
    }
}

/// An address in its usual text form (IPv4 by hand; IPv6 is rare, std formatting is fine).
fn push_ip(buf: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            for (i, octet) in o.iter().enumerate() {
                if i > 0 {
                    buf.push(b'.');
                }
                push_u64(buf, u64::from(*octet));
            }
        }
        IpAddr::V6(v6) => {
            let _ = write!(buf, "{v6}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn sample() -> Ev {
        let mut ev = Ev::ok(
            EventTime::from_millis(1_772_459_736_120).as_millis(),
            Some(0x3f9c_2b11_d0aa),
            "203.0.113.9".parse().expect("ip"),
            1,
            0,
            0,
        );
        ev.bytes = 512;
        ev
    }

    fn text(format: GenFormat, ev: &Ev) -> String {
        let mut w = LineWriter::new(format, 1);
        String::from_utf8(w.line(ev).to_vec()).expect("utf8")
    }

    #[test]
    fn nginx_line_matches_the_documented_example() {
        assert_eq!(
            text(GenFormat::Nginx, &sample()),
            "203.0.113.9 - - [02/Mar/2026:13:55:36 +0000] \"POST /v1/chat/completions HTTP/1.1\" 200 512 \"-\" \"python-requests/2.31.0\" \"ak_3f9c2b11d0aa\" \"-\"\n"
        );
        let mut rej = sample().rejected(Reason::Expired);
        rej.token = None;
        let line = text(GenFormat::Nginx, &rej);
        assert!(
            line.ends_with("\" 401 512 \"-\" \"python-requests/2.31.0\" \"-\" \"expired\"\n"),
            "{line}"
        );
    }

    #[test]
    fn json_line_is_json_with_the_documented_keys() {
        let line = text(GenFormat::Json, &sample().rejected(Reason::Revoked));
        let v: serde_json::Value = serde_json::from_str(&line).expect("json");
        assert_eq!(v["ts"], "2026-03-02T13:55:36.120Z");
        assert_eq!(v["token_id"], "ak_3f9c2b11d0aa");
        assert_eq!(v["user"], "user0001");
        assert_eq!(v["ip"], "203.0.113.9");
        assert_eq!(v["status"], 401);
        assert_eq!(v["reason"], "revoked");
    }

    #[test]
    fn vault_line_is_a_response_entry() {
        let ok = text(GenFormat::Vault, &sample());
        let v: serde_json::Value = serde_json::from_str(&ok).expect("json");
        assert_eq!(v["type"], "response");
        assert_eq!(v["auth"]["accessor"], "ak_3f9c2b11d0aa");
        assert_eq!(v["request"]["remote_address"], "203.0.113.9");
        assert!(v.get("error").is_none());
        let bad = text(GenFormat::Vault, &sample().rejected(Reason::Invalid));
        let v: serde_json::Value = serde_json::from_str(&bad).expect("json");
        assert!(v["error"]
            .as_str()
            .is_some_and(|e| e.contains("permission denied")));
    }

    #[test]
    fn ipv6_and_numbers_format() {
        let mut b = Vec::new();
        push_ip(&mut b, "2a00:23c4:1a00::1".parse().expect("ip"));
        push_u64(&mut b, 0);
        push_u64(&mut b, 18_446_744_073_709_551_615);
        assert_eq!(b, b"2a00:23c4:1a00::1018446744073709551615");
        let mut u = Vec::new();
        push_user(&mut u, 12_345);
        assert_eq!(u, b"user12345");
    }
}
