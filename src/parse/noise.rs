//! Lines that are recognisably not access-log lines: error logs and server messages that
//! share a file or a container stream with the access log (Docker's nginx writes both to the
//! same json-file log). They are counted as skipped with a bounded reason, not as malformed,
//! so `TokenwatchParseErrors` stays quiet on ordinary logs.
//!
//! Only lines a preset has already refused are classified, so the hot path never pays.

/// Reason label: an nginx or Apache error-log line.
pub const ERROR_LOG: &str = "error_log";
/// Reason label: a server's own message (start-up, Go/logfmt/zerolog lines, entrypoint
/// scripts).
pub const SERVER_LOG: &str = "server_log";

/// The reason a refused line is not an access line, or `None` if it may be a broken one.
pub fn classify(line: &[u8]) -> Option<&'static str> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if nginx_error(line) || apache_error(line) {
        Some(ERROR_LOG)
    } else if server_line(line) {
        Some(SERVER_LOG)
    } else {
        None
    }
}

/// `2026/03/02 13:55:36 [error] 1234#0: *5 open() ...` (nginx's error_log).
fn nginx_error(line: &[u8]) -> bool {
    const LEVELS: [&[u8]; 8] = [
        b"[debug] ",
        b"[info] ",
        b"[notice] ",
        b"[warn] ",
        b"[error] ",
        b"[crit] ",
        b"[alert] ",
        b"[emerg] ",
    ];
    slashed_stamp(line)
        && line
            .get(20..)
            .is_some_and(|rest| LEVELS.iter().any(|l| rest.starts_with(l)))
}

/// `[Mon Mar 02 13:55:36.123456 2026] [core:error] [pid 1234] ...` (Apache 2.4) and
/// `[Mon Mar 02 13:55:36 2026] [error] [client 1.2.3.4] ...` (Apache 2.2).
fn apache_error(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"[") else {
        return false;
    };
    let word = |b: &[u8]| {
        b.len() == 3 && b[0].is_ascii_uppercase() && b[1..].iter().all(u8::is_ascii_lowercase)
    };
    let day_month = rest.len() > 8
        && word(&rest[0..3])
        && rest[3] == b' '
        && word(&rest[4..7])
        && rest[7] == b' ';
    day_month && memchr::memmem::find(rest, b"] [").is_some_and(|i| i < 40)
}

/// Start-up and operational messages of the servers tokenwatch reads.
fn server_line(line: &[u8]) -> bool {
    const PREFIXES: [&[u8]; 5] = [
        b"/docker-entrypoint", // nginx image start-up
        b"nginx: [",           // nginx -t / start-up to stderr
        b"time=\"",            // logfmt (Traefik v2 text log, Go services)
        b"{\"level\":",        // JSON server log (Caddy, Traefik) in a text preset
        b"AH0",                // Apache `AH00558: ...` start-up messages
    ];
    PREFIXES.iter().any(|p| line.starts_with(p))
        || entrypoint_script(line)
        // oauth2-proxy's standard log: `[2026/03/02 13:55:36] [oauthproxy.go:1] ...`
        || line.strip_prefix(b"[").is_some_and(|r| slashed_stamp(r) && r.get(19..22) == Some(b"] ["))
        || zerolog(line)
}

/// `10-listen-on-ipv6-by-default.sh: info: ...` (scripts of the nginx image's entrypoint).
fn entrypoint_script(line: &[u8]) -> bool {
    let word = line.split(|&b| b == b' ').next().unwrap_or_default();
    word.len() > 4
        && word[0].is_ascii_digit()
        && word[1].is_ascii_digit()
        && word[2] == b'-'
        && (word.ends_with(b".sh:") || word.ends_with(b".envsh:"))
}

/// `2026-03-02T13:55:36Z INF Starting provider` (Traefik v3's console log, zerolog).
fn zerolog(line: &[u8]) -> bool {
    const LEVELS: [&[u8]; 7] = [b"TRC", b"DBG", b"INF", b"WRN", b"ERR", b"FTL", b"PNC"];
    let mut words = line.splitn(3, |&b| b == b' ');
    let (Some(stamp), Some(level)) = (words.next(), words.next()) else {
        return false;
    };
    stamp.len() >= 20
        && stamp.get(4) == Some(&b'-')
        && stamp.get(10) == Some(&b'T')
        && stamp[..4].iter().all(u8::is_ascii_digit)
        && LEVELS.contains(&level)
}

/// `2026/03/02 13:55:36` at the start of the line.
fn slashed_stamp(line: &[u8]) -> bool {
    let Some(s) = line.get(..19) else {
        return false;
    };
    s.iter().enumerate().all(|(i, &c)| match i {
        4 | 7 => c == b'/',
        10 => c == b' ',
        13 | 16 => c == b':',
        _ => c.is_ascii_digit(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_and_server_lines_are_recognised() {
        for (line, why) in [
            (&b"2026/03/02 13:55:36 [error] 1234#0: *5 open() \"/x\" failed (2: No such file or directory)"[..], ERROR_LOG),
            (b"2026/03/02 13:55:36 [notice] 1#1: start worker processes", ERROR_LOG),
            (b"[Mon Mar 02 13:55:36.123456 2026] [core:error] [pid 1234] [client 203.0.113.9:5000] AH00037: Symbolic link not allowed", ERROR_LOG),
            (b"[Mon Mar 02 13:55:36 2026] [error] [client 203.0.113.9] File does not exist: /var/www/favicon.ico", ERROR_LOG),
            (b"/docker-entrypoint.sh: Configuration complete; ready for start up", SERVER_LOG),
            (b"10-listen-on-ipv6-by-default.sh: info: Getting the checksum of /etc/nginx/conf.d/default.conf", SERVER_LOG),
            (b"time=\"2026-03-02T13:55:36Z\" level=info msg=\"Configuration loaded from flags.\"", SERVER_LOG),
            (b"2026-03-02T13:55:36Z INF Traefik version 3.0.0 built on 2024-04-29T14:25:59Z version=3.0.0", SERVER_LOG),
            (b"AH00558: apache2: Could not reliably determine the server's fully qualified domain name", SERVER_LOG),
            (b"[2026/03/02 13:55:36] [proxy.go:89] mapping path \"/\" => upstream", SERVER_LOG),
        ] {
            assert_eq!(classify(line), Some(why), "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn broken_access_lines_stay_malformed() {
        for line in [
            &b"203.0.113.9 - - [02/Mar/2026:13:55:36 +0000] \"GET / HTTP/1.1\" 4x1"[..],
            b"garbage that is not a log line",
            b"[2001:db8::1]:443 - - broken",
            b"{\"ts\":1}",
            // A user's own format may start like Go's log: not ours to call noise.
            b"2026/03/02 13:55:36 key=ak_1 src=203.0.113.9 result=ok",
        ] {
            assert_eq!(classify(line), None, "{}", String::from_utf8_lossy(line));
        }
    }
}
