//! Shared bodies of the fuzz targets: each target picks a preset; this file feeds the input
//! through `tokenwatch::parse::build` the way a source does, line by line.

use std::cell::RefCell;
use std::collections::HashMap;
use tokenwatch::net::Cidr;

use tokenwatch::parse::{build, ClientIp, Parsed, Parser, ParserSpec, Preset};

/// The regex preset's pattern (the shape of tests/fixtures/regex/app.log).
const REGEX: &str = r"^(?P<ts>\S+) key=(?P<token>\S+) src=(?P<ip>\S+) result=(?P<outcome>\w+) user=(?P<user>(?-u:\S)+)(?: why=(?P<reason>\S+))?$";

/// A spec for `preset`; the first input byte varies the settings that change code paths
/// (nginx built-in format, forwarded-for resolution, a zone for zone-less formats).
pub fn spec(preset: Preset, selector: u8) -> ParserSpec {
    let mut s = ParserSpec {
        preset,
        ..ParserSpec::default()
    };
    if selector & 1 == 1 {
        s.client_ip = ClientIp::ForwardedFor;
        s.trusted_proxies = ["10.0.0.0/8", "2001:db8::/32"]
            .iter()
            .filter_map(|c| c.parse::<Cidr>().ok())
            .collect();
    }
    if selector & 2 == 2 {
        s.timezone = jiff::tz::TimeZone::get("Europe/Berlin").ok();
    }
    match preset {
        Preset::Nginx => {
            s.log_format = Some(
                ["tokenwatch", "combined", "main"][usize::from(selector >> 2) % 3].to_string(),
            );
        }
        Preset::Regex => {
            s.pattern = Some(REGEX.to_string());
            s.time_format =
                Some(["auto", "rfc3339", "epoch"][usize::from(selector >> 2) % 3].to_string());
        }
        _ => {}
    }
    s
}

/// Parses every line of `data` (after the selector byte) with one reused parser, and each
/// line twice: a parser's scratch state must never leak from one line into the next.
pub fn parse_lines(preset: Preset, data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    // Parsers live as long as a source does, so they are built once per setting and reused
    // across inputs (building a regex per input would cost more than the parsing).
    let key = (preset, selector & 3, (selector >> 2) % 3);
    PARSERS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let parser = cache
            .entry(key)
            .or_insert_with(|| build(&spec(preset, key.1 | key.2 << 2)).ok());
        // Some setting combinations are refused by design (forwarded-for needs a format
        // that logs the header): nothing to fuzz then.
        if let Some(p) = parser {
            parse_all(p.as_mut(), rest);
        }
    });
}

type Cache = HashMap<(Preset, u8, u8), Option<Box<dyn Parser>>>;

thread_local! {
    static PARSERS: RefCell<Cache> = RefCell::new(HashMap::new());
}

fn parse_all(parser: &mut dyn Parser, rest: &[u8]) {
    for line in rest.split(|&b| b == b'\n') {
        let first = parser.parse(line);
        let again = parser.parse(line);
        assert_eq!(first, again, "parsing the same line twice differed");
        if let Ok(Parsed::Event(r)) = first {
            // Display of any accepted time must not panic (it is how records print it).
            let _ = r.time.map(|t| t.to_string());
        }
    }
}

/// TOML text through the same validation `check-config` does: load, build every source's
/// parser, render the effective config.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let secrets = tokenwatch::config::MapSecrets::new();
    let Ok(cfg) = tokenwatch::config::Config::from_toml(text, "fuzz.toml", &secrets) else {
        return;
    };
    for src in &cfg.sources {
        let _ = build(&src.parser_spec());
    }
    let _ = cfg.to_effective_toml();
}
