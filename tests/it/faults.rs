//! Faults around the real `tokenwatch run` binary: a revoke webhook or SMTP relay that is down
//! for a while and comes back (every action delivered once, detection never stalls), a
//! missing or corrupt GeoIP database, and a SIGHUP with an invalid config.
//!
//! Time is scaled: the hooks use the default number of attempts with backoffs 1/100 of the
//! defaults (5 ms first, 600 ms cap), so an outage of a few seconds here is several full
//! retry rounds — what ten minutes are with the defaults.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::support::{closed_port, http, rebind, smtp_server_on, wait_for, Daemon, Receiver, Req};

const ADMIN: &str = "faults-admin-token-0123456789";
const ENV: [(&str, &str); 1] = [("TW_TEST_ADMIN", ADMIN)];
/// Revoked-token uses that make one `revoked_reuse` detection (its `min_uses`).
const USES: u32 = 5;

/// The daemon's files in one temp dir.
struct Setup {
    dir: tempfile::TempDir,
    log: PathBuf,
    cfg: PathBuf,
}

impl Setup {
    /// A config tailing one nginx log, freezing on `revoked_reuse`, with `extra` appended.
    fn new(extra: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        std::fs::write(&log, "").unwrap();
        let cfg = dir.path().join("tokenwatch.toml");
        let s = Setup { dir, log, cfg };
        s.write_config(extra);
        s
    }

    fn write_config(&self, extra: &str) {
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\nadmin_token = \"env:TW_TEST_ADMIN\"\n\n\
             [state]\ndir = \"{state}\"\ncheckpoint_interval_ms = 100\n\n\
             [[source]]\nname = \"gw\"\npath = \"{log}\"\nformat = \"nginx\"\nstart_at = \"beginning\"\n\
             poll_interval_ms = 50\n\n\
             [response]\nmode = \"enforce\"\nfreeze_detectors = [\"revoked_reuse\"]\n\
             freeze_min_severity = \"medium\"\nmax_freezes = 100\n\n{extra}\n",
            state = self.state().display(),
            log = self.log.display(),
        );
        std::fs::write(&self.cfg, text).unwrap();
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn start(&self) -> Daemon {
        let mut d = Daemon::start(&self.cfg, self.dir.path(), &ENV);
        d.wait_ready();
        d
    }

    /// Appends `USES` revoked rejections of each token, 16 s apart (a streak must last
    /// `revoked_reuse`'s `min_streak_secs`, 60 s, to fire).
    fn attack(&self, tokens: &[String], clock: &mut u32) {
        let mut text = String::new();
        for t in tokens {
            for _ in 0..USES {
                *clock += 16;
                text.push_str(&revoked_line(t, *clock));
            }
        }
        append(&self.log, &text);
    }

    /// Tokens of `revoked_reuse` records in the detections file.
    fn detected(&self) -> BTreeSet<String> {
        detected_tokens(&self.state().join("detections.jsonl"))
    }
}

fn revoked_line(token: &str, sec: u32) -> String {
    format!(
        "198.51.100.7 - - [02/Mar/2026:{:02}:{:02}:{:02} +0000] \"POST /v1/chat/completions HTTP/1.1\" \
         401 64 \"-\" \"curl/8.5\" \"{token}\" \"token_revoked\"\n",
        10 + sec / 3600,
        (sec / 60) % 60,
        sec % 60
    )
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

fn detected_tokens(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["detector"] == "revoked_reuse")
        .filter_map(|v| v["token"].as_str().map(str::to_string))
        .collect()
}

fn tokens(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("ak_{prefix}{i:03}")).collect()
}

/// The sum of every sample of `series` whose labels include all of `labels`.
fn metric(d: &Daemon, series: &str, labels: &[&str]) -> f64 {
    let Some((200, body)) = http(&d.addr, "GET", "/metrics", None, b"") else {
        return 0.0;
    };
    body.lines()
        .filter(|l| l.starts_with(series) && labels.iter().all(|x| l.contains(x)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn frozen_count(d: &Daemon) -> usize {
    http(&d.addr, "GET", "/api/v1/frozen", Some(ADMIN), b"")
        .and_then(|(_, b)| serde_json::from_str::<serde_json::Value>(&b).ok())
        .and_then(|v| v["frozen"].as_array().map(Vec::len))
        .unwrap_or(0)
}

/// Retry settings: the default attempts (8), backoffs scaled down 100×.
const SCALED_RETRY: &str =
    "max_attempts = 8\nbackoff_ms = 5\nbackoff_max_ms = 600\ntimeout_ms = 1000";

/// While the hook is down (≥ 6 s, i.e. ten minutes at the default backoffs): two waves of
/// attacks, each detected and frozen although no call succeeds, with failed calls between.
fn outage(s: &Setup, d: &mut Daemon, hook: &str, clock: &mut u32, all: &mut Vec<String>) {
    let t0 = std::time::Instant::now();
    for (wave, range) in [(0, 0..4), (1, 4..8)] {
        let batch = tokens(&format!("{hook}{wave}x"), range);
        s.attack(&batch, clock);
        all.extend(batch);
        let want = all.len();
        wait_for(
            30,
            &format!("{want} detections while {hook} is down"),
            || {
                d.assert_running();
                (s.detected().len() == want && frozen_count(d) == want).then_some(())
            },
        );
        // Stay down for two full retry rounds more before the next wave.
        let seen = metric(d, "tokenwatch_actions_total", &["result=\"retry\""]);
        wait_for(60, &format!("{hook} retries while down"), || {
            let now = metric(d, "tokenwatch_actions_total", &["result=\"retry\""]);
            (now >= seen + 16.0).then_some(())
        });
    }
    // Ten minutes at the default backoffs is 6 s at these: several parked rounds.
    wait_for(
        60,
        &format!("{hook} down for 6 s with parked rounds"),
        || {
            d.assert_running();
            let parked = metric(d, "tokenwatch_actions_total", &["result=\"parked\""]);
            (t0.elapsed() >= Duration::from_secs(6) && parked >= 2.0).then_some(())
        },
    );
    assert_eq!(
        metric(d, "tokenwatch_actions_total", &["result=\"success\""]),
        0.0,
        "nothing can have been delivered yet"
    );
    // Figures for RELIABILITY.md (shown with --nocapture).
    eprintln!(
        "{hook}: down {:.1} s, {} actions detected and frozen meanwhile, {} failed calls, {} parked rounds",
        t0.elapsed().as_secs_f64(),
        all.len(),
        metric(d, "tokenwatch_actions_total", &["result=\"retry\""]),
        metric(d, "tokenwatch_actions_total", &["result=\"parked\""]),
    );
}

#[test]
fn webhook_down_for_a_while_then_back_delivers_every_freeze_once() {
    let port = closed_port();
    let hook = format!(
        "[[hook]]\nname = \"revoke\"\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{port}/revoke\"\n\
         on = [\"freeze\"]\n{SCALED_RETRY}\n"
    );
    let s = Setup::new(&hook);
    let mut d = s.start();
    let (mut clock, mut all) = (0, Vec::new());
    outage(&s, &mut d, "wh", &mut clock, &mut all);

    // Back up on the same port.
    let rx = Receiver::start_on(rebind(port), |_, _| (200, Duration::ZERO));
    let up = std::time::Instant::now();
    // A wave after recovery goes straight through too.
    let late = tokens("whlate", 0..2);
    s.attack(&late, &mut clock);
    all.extend(late);
    wait_for(60, "every freeze delivered", || {
        d.assert_running();
        let ok = metric(&d, "tokenwatch_actions_total", &["result=\"success\""]);
        (ok as usize == all.len()).then_some(())
    });
    eprintln!(
        "wh: back up: all {} actions delivered in {:.1} s",
        all.len(),
        up.elapsed().as_secs_f64()
    );
    // Give a duplicate a chance to show: one more worker rescan.
    std::thread::sleep(Duration::from_millis(1500));
    let reqs: Vec<Req> = rx.requests();
    let mut per_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut delivered = BTreeSet::new();
    for r in &reqs {
        *per_key
            .entry(r.header("idempotency-key").to_string())
            .or_default() += 1;
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        delivered.insert(body["token"].as_str().unwrap_or("").to_string());
    }
    let want: BTreeSet<String> = all.iter().cloned().collect();
    assert_eq!(delivered, want, "every frozen token reached the endpoint");
    assert_eq!(
        reqs.len(),
        all.len(),
        "each action delivered once: {per_key:?}"
    );
    assert!(per_key.values().all(|&n| n == 1), "{per_key:?}");
    assert_eq!(s.detected(), want);
    assert_eq!(d.terminate().code(), Some(0));
}

#[test]
fn smtp_down_for_a_while_then_back_mails_every_freeze_once() {
    let port = closed_port();
    let hook = format!(
        "[[hook]]\nname = \"mail\"\ntype = \"email\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\n\
         tls = \"none\"\nfrom = \"tokenwatch <tw@example.com>\"\nto = [\"ops@example.com\"]\n\
         digest_secs = 1\non = [\"freeze\"]\n{SCALED_RETRY}\n"
    );
    let s = Setup::new(&hook);
    let mut d = s.start();
    let (mut clock, mut all) = (0, Vec::new());
    outage(&s, &mut d, "mx", &mut clock, &mut all);

    let (_, mails) = smtp_server_on(rebind(port));
    let up = std::time::Instant::now();
    let late = tokens("mxlate", 0..2);
    s.attack(&late, &mut clock);
    all.extend(late);
    let count = |mails: &[String], t: &str| {
        mails
            .iter()
            .map(|m| m.matches(&format!("Token:     {t}\r\n")).count())
            .sum::<usize>()
    };
    wait_for(60, "every freeze mailed", || {
        d.assert_running();
        let m = mails.lock().unwrap().clone();
        all.iter().all(|t| count(&m, t) >= 1).then_some(())
    });
    let delivered_in = up.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(1500));
    let m = mails.lock().unwrap().clone();
    eprintln!(
        "mx: back up: all {} actions mailed in {delivered_in:.1} s, {} mails",
        all.len(),
        m.len()
    );
    for t in &all {
        assert_eq!(count(&m, t), 1, "{t} in exactly one mail:\n{m:#?}");
    }
    assert!(
        m.len() < all.len(),
        "the backlog went out as digests, not one mail per action ({} mails)",
        m.len()
    );
    assert_eq!(d.terminate().code(), Some(0));
}

// ---------------------------------------------------------------- GeoIP

/// Everything but travel works: revoked-token reuse is still detected and frozen.
fn geo_fault(mmdb_contents: Option<&[u8]>) -> String {
    let dir = tempfile::tempdir().unwrap();
    let mmdb = dir.path().join("GeoLite2-City.mmdb");
    if let Some(bytes) = mmdb_contents {
        std::fs::write(&mmdb, bytes).unwrap();
    }
    let s = Setup::new(&format!("[geo]\nmmdb = [\"{}\"]\n", mmdb.display()));
    let mut d = s.start();
    let mut clock = 0;
    let batch = tokens("geo", 0..3);
    s.attack(&batch, &mut clock);
    wait_for(30, "detections without GeoIP", || {
        d.assert_running();
        (s.detected().len() == batch.len() && frozen_count(&d) == batch.len()).then_some(())
    });
    let log = d.log();
    assert_eq!(d.terminate().code(), Some(0));
    log
}

fn geo_warnings(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("WARN") && l.contains("GeoIP"))
        .collect()
}

#[test]
fn corrupt_geoip_database_turns_travel_off_with_one_warning() {
    let garbage: Vec<u8> = (0..4096u32).map(|i| (i * 7919 % 251) as u8).collect();
    let log = geo_fault(Some(&garbage));
    let warns = geo_warnings(&log);
    assert_eq!(warns.len(), 1, "one clear warning:\n{log}");
    assert!(warns[0].contains("impossible_travel"), "{}", warns[0]);
    assert!(warns[0].contains("GeoLite2-City.mmdb"), "{}", warns[0]);
    assert!(!log.contains("ERROR"), "{log}");
}

#[test]
fn missing_geoip_database_turns_travel_off_with_one_warning() {
    let log = geo_fault(None);
    let warns = geo_warnings(&log);
    assert_eq!(warns.len(), 1, "one clear warning:\n{log}");
    assert!(warns[0].contains("impossible_travel"), "{}", warns[0]);
    assert!(warns[0].contains("GeoLite2-City.mmdb"), "{}", warns[0]);
}

// ---------------------------------------------------------------- reload

#[test]
fn sighup_with_an_invalid_config_keeps_the_running_one() {
    let s = Setup::new("");
    let mut d = s.start();
    let mut clock = 0;
    s.attack(&tokens("hup", 0..1), &mut clock);
    wait_for(30, "first detection", || {
        (s.detected().len() == 1).then_some(())
    });

    // Broken: an unknown format and a bad key. The reload is refused and reported.
    let good = std::fs::read_to_string(&s.cfg).unwrap();
    std::fs::write(
        &s.cfg,
        good.replace("format = \"nginx\"", "format = \"nginxx\"\nbogus = 1"),
    )
    .unwrap();
    d.signal("HUP");
    wait_for(30, "the rejected reload", || {
        d.assert_running();
        let failed = metric(&d, "tokenwatch_config_reloads_total", &["failure"]);
        (failed == 1.0).then_some(())
    });
    let log = d.log();
    assert!(
        log.contains("config reload rejected, keeping the running config"),
        "{log}"
    );
    assert!(
        log.contains("nginxx"),
        "the error names the bad value:\n{log}"
    );
    // The old config still runs: ready, tailing, detecting.
    wait_for(30, "/readyz after the failed reload", || {
        http(&d.addr, "GET", "/readyz", None, b"").filter(|(c, _)| *c == 200)
    });
    s.attack(&tokens("hup", 1..2), &mut clock);
    wait_for(30, "a detection after the failed reload", || {
        (s.detected().len() == 2).then_some(())
    });

    // Fixed again: the next SIGHUP applies it.
    std::fs::write(&s.cfg, &good).unwrap();
    d.signal("HUP");
    wait_for(30, "the good reload", || {
        (metric(&d, "tokenwatch_config_reloads_total", &["success"]) == 1.0).then_some(())
    });
    assert_eq!(d.terminate().code(), Some(0));
}
