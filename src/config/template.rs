//! `{{name}}` placeholder substitution for hook bodies, URLs and arguments: checked when the
//! config loads (unknown names are errors), filled by `respond`'s hooks.
//!
//! Deliberately tiny: a placeholder is `{{` + a name of `[a-z_]` + `}}`; anything else is
//! copied as it is. Values are escaped by the caller's [`Escape`], so a user name with a
//! quote cannot break a JSON body or a URL.

/// How substituted values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// As they are (exec arguments: no shell is involved).
    Raw,
    /// Inside a JSON string (the template supplies the quotes).
    Json,
    /// Percent-encoded (URLs and `application/x-www-form-urlencoded` bodies).
    Percent,
}

/// The placeholder names used in `template`, in order (duplicates kept).
pub fn names(template: &str) -> Vec<&str> {
    let mut out = Vec::new();
    scan(template, |piece| {
        if let Piece::Name(n) = piece {
            out.push(n);
        }
    });
    out
}

/// Replaces each placeholder with `value(name)`, unescaped.
pub fn fill_with<'v>(template: &str, mut value: impl FnMut(&str) -> &'v str) -> String {
    let mut out = String::with_capacity(template.len());
    scan(template, |piece| match piece {
        Piece::Text(t) => out.push_str(t),
        Piece::Name(n) => out.push_str(value(n)),
    });
    out
}

/// Replaces each placeholder with `value(name)` escaped by `esc`.
pub fn fill(template: &str, esc: Escape, mut value: impl FnMut(&str) -> String) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    scan(template, |piece| match piece {
        Piece::Text(t) => out.push_str(t),
        Piece::Name(n) => escape_into(&value(n), esc, &mut out),
    });
    out
}

enum Piece<'a> {
    Text(&'a str),
    Name(&'a str),
}

fn scan<'a>(mut rest: &'a str, mut f: impl FnMut(Piece<'a>)) {
    while let Some(start) = rest.find("{{") {
        let after = rest.get(start + 2..).unwrap_or("");
        let name_len = after
            .find(|c: char| !(c.is_ascii_lowercase() || c == '_'))
            .unwrap_or(after.len());
        let (name, tail) = after.split_at(name_len);
        if name.is_empty() || !tail.starts_with("}}") {
            // Not a placeholder: copy the braces and go on after them.
            f(Piece::Text(rest.get(..start + 2).unwrap_or("")));
            rest = after;
            continue;
        }
        f(Piece::Text(rest.get(..start).unwrap_or("")));
        f(Piece::Name(name));
        rest = tail.get(2..).unwrap_or("");
    }
    f(Piece::Text(rest));
}

fn escape_into(v: &str, esc: Escape, out: &mut String) {
    match esc {
        Escape::Raw => out.push_str(v),
        Escape::Json => {
            let quoted = serde_json::to_string(v).unwrap_or_default();
            out.push_str(quoted.get(1..quoted.len().saturating_sub(1)).unwrap_or(""));
        }
        Escape::Percent => {
            for b in v.bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutes_and_escapes() {
        let v = |n: &str| match n {
            "token" => "ak_1".to_string(),
            "user" => "a\"b c".to_string(),
            _ => String::new(),
        };
        assert_eq!(
            fill(r#"{"t":"{{token}}","u":"{{user}}"}"#, Escape::Json, v),
            r#"{"t":"ak_1","u":"a\"b c"}"#
        );
        assert_eq!(
            fill("token={{token}}&u={{user}}", Escape::Percent, v),
            "token=ak_1&u=a%22b%20c"
        );
        assert_eq!(
            fill("{{ x }} {{}} {{token}", Escape::Raw, v),
            "{{ x }} {{}} {{token}"
        );
        assert_eq!(names("{{id}}/{{token}}{{bad-name}}"), vec!["id", "token"]);
    }
}
