//! "Did you mean" suggestions and friendlier wording for serde's messages.

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub(crate) fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).max(1);
    let lower = word.to_lowercase();
    // `listen_addr` for `listen`, `poll_interval` for `poll_interval_ms`: one extends the other.
    let extends = |c: &str| c.len() >= 3 && (lower.starts_with(c) || c.starts_with(&lower));
    if let Some(c) = candidates.iter().find(|c| lower.len() >= 3 && extends(c)) {
        return Some(c);
    }
    candidates
        .iter()
        .map(|c| (distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting a swap of neighbours as one edit (optimal string alignment).
fn distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.to_lowercase().chars().collect();
    let b: Vec<char> = b.to_lowercase().chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    let at = |i: usize, j: usize| i * width + j;
    for i in 0..=a.len() {
        d[at(i, 0)] = i;
    }
    for j in 0..=b.len() {
        d[at(0, j)] = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[at(i - 1, j)] + 1)
                .min(d[at(i, j - 1)] + 1)
                .min(d[at(i - 1, j - 1)] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[at(i - 2, j - 2)] + 1);
            }
            d[at(i, j)] = best;
        }
    }
    d[at(a.len(), b.len())]
}

/// `unknown <what> "x" (expected one of a, b, c); did you mean "b"?` for a value that is not
/// one of a fixed set of names.
pub(crate) fn unknown_choice(what: &str, value: &str, names: &[&str]) -> String {
    let mut msg = format!(
        "unknown {what} {value:?} (expected one of {})",
        names.join(", ")
    );
    if let Some(s) = closest(value, names) {
        msg.push_str(&format!("; did you mean {s:?}?"));
    }
    msg
}

/// Rewrites serde's messages into the config's wording; `parent` is the path of the table
/// holding the key (so `detectors` can say "unknown detector").
pub(crate) fn reword(message: &str, parent: &str) -> String {
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return unknown_key(rest, parent);
    }
    if parent.is_empty() && message.starts_with("invalid type: map, expected a sequence") {
        return "expected [[source]] tables (an array of tables), found a single table; \
                write [[source]] instead of [source]"
            .to_string();
    }
    message.to_string()
}

/// `unknown field `x`, expected one of `a`, `b`` → `unknown key "x" (did you mean "a"?)`.
fn unknown_key(rest: &str, parent: &str) -> String {
    let ticked: Vec<&str> = rest.split('`').skip(1).step_by(2).collect();
    let Some((key, expected)) = ticked.split_first() else {
        return format!("unknown key {rest}");
    };
    let what = if parent == "detectors" {
        "detector"
    } else {
        "key"
    };
    if let Some(s) = closest(key, expected) {
        return format!("unknown {what} {key:?} (did you mean {s:?}?)");
    }
    if expected.is_empty() {
        format!("unknown {what} {key:?} (this table takes no keys)")
    } else {
        format!(
            "unknown {what} {key:?} (expected one of {})",
            expected.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_close_names_only() {
        let names = [
            "nginx",
            "json",
            "vault",
            "keycloak",
            "oauth2-proxy",
            "regex",
        ];
        assert_eq!(closest("ngnix", &names), Some("nginx"));
        assert_eq!(closest("jsno", &names), Some("json"));
        assert_eq!(closest("Vault", &names), Some("vault"));
        assert_eq!(closest("syslog", &names), None);
        assert_eq!(closest("listn", &["listen", "admin_token"]), Some("listen"));
        assert_eq!(
            closest("listen_addr", &["listen", "admin_token"]),
            Some("listen")
        );
        assert_eq!(
            closest("poll_interval", &["poll_interval_ms"]),
            Some("poll_interval_ms")
        );
        assert_eq!(closest("po", &["poll_interval_ms"]), None);
    }

    #[test]
    fn rewords_unknown_fields() {
        assert_eq!(
            reword(
                "unknown field `listn`, expected `listen` or `admin_token`",
                "server"
            ),
            "unknown key \"listn\" (did you mean \"listen\"?)"
        );
        assert_eq!(
            reword(
                "unknown field `zzz`, expected `listen` or `admin_token`",
                "server"
            ),
            "unknown key \"zzz\" (expected one of listen, admin_token)"
        );
        assert_eq!(
            reword(
                "unknown field `rate_spik`, expected one of `rate_spike`",
                "detectors"
            ),
            "unknown detector \"rate_spik\" (did you mean \"rate_spike\"?)"
        );
        assert_eq!(
            reword("unknown field `x`, there are no fields", "a"),
            "unknown key \"x\" (this table takes no keys)"
        );
        assert_eq!(reword("invalid type: string", "a"), "invalid type: string");
    }
}
