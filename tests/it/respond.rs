//! Response: policy, journal and hooks against real receivers — an HTTP server and an SMTP
//! listener on 127.0.0.1 (in `support`) — plus the admin API over real HTTP.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokenwatch::config::{Config, MapSecrets, Secret, SecretRef};
use tokenwatch::detect::record::stable_id;
use tokenwatch::detect::{Action, Detection, DetectionSink, Ring};
use tokenwatch::event::EventTime;
use tokenwatch::event::Severity;
use tokenwatch::metrics::Metrics;
use tokenwatch::respond::{replay_policy, ManualClock, Options, Responder, ResponderHandle};

use crate::support::{smtp_server, Receiver, Req};

const HOOK_KEY: &str = "hook-signing-key";
const T0: i64 = 1_772_459_736_000;

// ---------------------------------------------------------------- helpers

fn secrets() -> MapSecrets {
    MapSecrets::new()
        .with_env("HOOK_KEY", HOOK_KEY)
        .with_env("ADMIN", "s3cret-admin")
}

fn config(response: &str, hooks: &str) -> Config {
    let text = format!("[response]\n{response}\n{hooks}");
    match Config::from_toml(&text, "tw.toml", &secrets()) {
        Ok(c) => c,
        Err(e) => panic!("config:\n{e}"),
    }
}

fn webhook(url: &str, on: &str) -> String {
    format!(
        "[[hook]]\nname = \"revoke\"\ntype = \"webhook\"\nurl = \"{url}\"\nhmac_key = \"env:HOOK_KEY\"\n\
         on = [{on}]\nbackoff_ms = 20\nbackoff_max_ms = 100\nmax_attempts = 5\ntimeout_ms = 2000\n"
    )
}

fn det(detector: &str, token: &str, n: i64) -> Detection {
    let ts = EventTime::from_millis(T0 + n * 1000);
    Detection {
        ts,
        detector: detector.into(),
        severity: Severity::High,
        token: Some(token.into()),
        ip: Some("203.0.113.9".parse().unwrap()),
        user: Some("alice".into()),
        source: Some("gw".into()),
        action: Action::Alert,
        reason: None,
        evidence: serde_json::json!({ "n": n }),
        id: stable_id(detector, token, ts),
    }
}

fn start(
    cfg: &Config,
    dir: &Path,
    m: &Metrics,
    clock: &ManualClock,
) -> (Responder, ResponderHandle) {
    let opts = Options {
        clock: Arc::new(clock.clone()),
        tick: Duration::from_millis(20),
        extra_hooks: Vec::new(),
    };
    Responder::start_with(cfg, dir, m, tokio::runtime::Handle::current(), opts).unwrap()
}

/// Polls `f` every 20 ms until it returns `Some`; panics after `secs`.
async fn until<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn metric(m: &Metrics, series: &str) -> f64 {
    m.render()
        .lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or(0.0)
}

fn signature_ok(req: &Req) -> bool {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(HOOK_KEY.as_bytes()).unwrap();
    mac.update(&req.body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    req.header("x-tokenwatch-signature") == want
}

fn journal_pending(dir: &Path) -> usize {
    let text = std::fs::read_to_string(dir.join("response-journal.jsonl")).unwrap_or_default();
    let adds = text
        .lines()
        .filter(|l| l.contains("\"op\":\"add\""))
        .count();
    adds - text
        .lines()
        .filter(|l| l.contains("\"op\":\"done\""))
        .count()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------- webhooks

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_is_signed_retried_after_500s_with_a_stable_idempotency_key() {
    let rx = Receiver::start(|n, _| (if n < 2 { 500 } else { 204 }, Duration::ZERO));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        "mode = \"enforce\"",
        &webhook(&rx.url("/revoke"), "\"freeze\""),
    );
    let m = Metrics::new();
    let (resp, handle) = start(&cfg, dir.path(), &m, &ManualClock::new(T0));
    let mut d = det("impossible_travel", "ak_1", 0);
    resp.policy().decide(&mut d);
    assert_eq!((d.action, d.reason.as_deref()), (Action::Freeze, None));

    let reqs = until(10, "3 attempts", || {
        Some(rx.requests()).filter(|r| r.len() >= 3)
    })
    .await;
    until(5, "success metric", || {
        (metric(
            &m,
            r#"tokenwatch_actions_total{action="freeze",hook="revoke",result="success"}"#,
        ) == 1.0)
            .then_some(())
    })
    .await;
    assert_eq!(reqs.len(), 3, "no call after success");
    for r in &reqs {
        assert!(signature_ok(r), "bad signature on {r:?}");
        assert_eq!(r.header("idempotency-key"), d.id);
        assert_eq!(r.header("x-tokenwatch-event"), "freeze");
        assert_eq!(r.path, "/revoke");
    }
    let body: serde_json::Value = serde_json::from_slice(&reqs[0].body).unwrap();
    assert_eq!(body["event"], "freeze");
    assert_eq!(body["action"], "freeze");
    assert_eq!(body["token"], "ak_1");
    assert_eq!(body["detector"], "impossible_travel");
    assert_eq!(body["id"], d.id.as_str());
    assert_eq!(
        metric(
            &m,
            r#"tokenwatch_actions_total{action="freeze",hook="revoke",result="retry"}"#
        ),
        2.0
    );
    assert_eq!(metric(&m, "tokenwatch_frozen_tokens"), 1.0);
    assert_eq!(handle.control().frozen().len(), 1);
    until(5, "journal done", || {
        (journal_pending(dir.path()) == 0).then_some(())
    })
    .await;

    // Dedupe: the same token is not frozen again.
    let mut again = det("ip_fanout", "ak_1", 5);
    resp.policy().decide(&mut again);
    assert_eq!(
        (again.action, again.reason.as_deref()),
        (Action::Suppressed, Some("already_frozen"))
    );
    handle.shutdown().await;
    assert_eq!(rx.requests().len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_400_is_a_permanent_failure_and_not_retried() {
    let rx = Receiver::start(|_, _| (400, Duration::ZERO));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("mode = \"enforce\"", &webhook(&rx.url("/"), "\"freeze\""));
    let m = Metrics::new();
    let (resp, handle) = start(&cfg, dir.path(), &m, &ManualClock::new(T0));
    resp.policy()
        .decide(&mut det("impossible_travel", "ak_2", 0));
    until(10, "failure metric", || {
        (metric(
            &m,
            r#"tokenwatch_actions_total{action="freeze",hook="revoke",result="failure"}"#,
        ) == 1.0)
            .then_some(())
    })
    .await;
    // Longer than every backoff of the hook (max 100 ms): a retry would have happened.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(rx.requests().len(), 1);
    assert_eq!(
        journal_pending(dir.path()),
        0,
        "a refused action is finished, not pending"
    );
    handle.shutdown().await;
}

/// A crash between the journal append and the hook's success: the first daemon dies while
/// its call hangs; the restarted one calls again with the same key, and the receiver,
/// deduplicating by key, freezes exactly once.
#[test]
fn a_crash_before_the_hook_succeeded_is_retried_at_start_exactly_once() {
    let hang = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let h = hang.clone();
    let rx = Receiver::start(move |_, _| {
        if h.load(std::sync::atomic::Ordering::SeqCst) {
            (204, Duration::from_secs(30))
        } else {
            (204, Duration::ZERO)
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("mode = \"enforce\"", &webhook(&rx.url("/"), "\"freeze\""));
    let d_id;
    {
        let rt = runtime();
        let _g = rt.enter();
        let m = Metrics::new();
        let (resp, _handle) =
            rt.block_on(async { start(&cfg, dir.path(), &m, &ManualClock::new(T0)) });
        let mut d = det("impossible_travel", "ak_crash", 0);
        resp.policy().decide(&mut d);
        d_id = d.id.clone();
        rt.block_on(until(10, "first call", || {
            (!rx.requests().is_empty()).then_some(())
        }));
        assert_eq!(journal_pending(dir.path()), 1);
        // Crash: no shutdown, no done mark; the in-flight call is cut off.
        rt.shutdown_background();
    }
    hang.store(false, std::sync::atomic::Ordering::SeqCst);
    let rt = runtime();
    rt.block_on(async {
        let m = Metrics::new();
        let (_resp, handle) = start(&cfg, dir.path(), &m, &ManualClock::new(T0 + 1000));
        until(10, "retry after restart", || {
            (metric(
                &m,
                r#"tokenwatch_actions_total{action="freeze",hook="revoke",result="success"}"#,
            ) == 1.0)
                .then_some(())
        })
        .await;
        let frozen = handle.control().frozen();
        assert_eq!(frozen.len(), 1);
        assert_eq!(frozen[0].token, "ak_crash");
        until(5, "journal done", || {
            (journal_pending(dir.path()) == 0).then_some(())
        })
        .await;
        handle.shutdown().await;
    });
    let reqs = rx.requests();
    assert_eq!(reqs.len(), 2, "one cut-off call and one retry");
    let keys: std::collections::HashSet<_> = reqs
        .iter()
        .map(|r| r.header("idempotency-key").to_string())
        .collect();
    assert_eq!(keys.len(), 1, "the receiver sees one freeze");
    assert!(keys.contains(d_id.as_str()));
    assert!(reqs.iter().all(signature_ok));
}

// ---------------------------------------------------------------- policy

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_caps_a_storm_at_ten_freezes_and_sends_one_notice() {
    let rx = Receiver::start(|_, _| (200, Duration::ZERO));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        "mode = \"enforce\"",
        &webhook(&rx.url("/"), "\"freeze\", \"breaker\""),
    );
    let m = Metrics::new();
    let clock = ManualClock::new(T0);
    let (resp, handle) = start(&cfg, dir.path(), &m, &clock);
    let mut policy = resp.policy();
    let mut actions = Vec::new();
    for i in 0..50 {
        let mut d = det("ip_fanout", &format!("ak_storm{i}"), i);
        policy.decide(&mut d);
        actions.push((d.action, d.reason));
        clock.advance(1000); // 50 detections within one minute
    }
    let freezes = actions.iter().filter(|(a, _)| *a == Action::Freeze).count();
    let capped = actions
        .iter()
        .filter(|(a, r)| *a == Action::Suppressed && r.as_deref() == Some("rate_cap"))
        .count();
    assert_eq!((freezes, capped), (10, 40));
    assert_eq!(metric(&m, "tokenwatch_freeze_breaker_open"), 1.0);
    let reqs = until(10, "11 hook calls", || {
        Some(rx.requests()).filter(|r| r.len() >= 11)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let reqs_after = rx.requests();
    assert_eq!(reqs_after.len(), 11, "10 freezes and one breaker notice");
    let notices: Vec<_> = reqs
        .iter()
        .filter(|r| r.header("x-tokenwatch-event") == "breaker")
        .collect();
    assert_eq!(notices.len(), 1);
    let body: serde_json::Value = serde_json::from_slice(&notices[0].body).unwrap();
    assert_eq!(body["reason"], "rate_cap");
    assert_eq!(body["evidence"]["max_freezes"], 10);
    // Ten minutes later the window has room again.
    clock.advance(600_000);
    let mut d = det("ip_fanout", "ak_after", 700);
    policy.decide(&mut d);
    assert_eq!(d.action, Action::Freeze);
    assert_eq!(metric(&m, "tokenwatch_freeze_breaker_open"), 0.0);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlists_dry_run_and_off() {
    let rx = Receiver::start(|_, _| (200, Duration::ZERO));
    let dir = tempfile::tempdir().unwrap();
    let allow =
        "allow_tokens = [\"ak_vip\"]\nallow_users = [\"svc\"]\nallow_cidrs = [\"10.0.0.0/8\"]";
    let m = Metrics::new();
    let cfg = config(
        &format!("mode = \"enforce\"\n{allow}"),
        &webhook(&rx.url("/"), "\"freeze\""),
    );
    let (resp, handle) = start(&cfg, dir.path(), &m, &ManualClock::new(T0));
    let mut p = resp.policy();
    let mut by_token = det("impossible_travel", "ak_vip", 0);
    let mut by_user = det("impossible_travel", "ak_u", 1);
    by_user.user = Some("svc".into());
    let mut by_ip = det("impossible_travel", "ak_ip", 2);
    by_ip.ip = Some("10.1.2.3".parse().unwrap());
    let mut alert_only = det("brute_force", "ak_bf", 3);
    let mut low = det("impossible_travel", "ak_low", 4);
    low.severity = Severity::Medium;
    for d in [
        &mut by_token,
        &mut by_user,
        &mut by_ip,
        &mut alert_only,
        &mut low,
    ] {
        p.decide(d);
    }
    assert_eq!(
        (by_token.action, by_token.reason.as_deref()),
        (Action::Suppressed, Some("allowlist:token"))
    );
    assert_eq!(
        (by_user.action, by_user.reason.as_deref()),
        (Action::Suppressed, Some("allowlist:user"))
    );
    assert_eq!(
        (by_ip.action, by_ip.reason.as_deref()),
        (Action::Suppressed, Some("allowlist:cidr 10.0.0.0/8"))
    );
    assert_eq!(
        (alert_only.action, alert_only.reason.as_deref()),
        (Action::Alert, Some("detector_alerts_only"))
    );
    assert_eq!(
        (low.action, low.reason.as_deref()),
        (Action::Alert, Some("below_freeze_min_severity"))
    );
    handle.shutdown().await;

    // dry-run: would_freeze, the revoke hook is never called, nothing is frozen.
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        "mode = \"dry-run\"",
        &webhook(&rx.url("/"), "\"freeze\", \"unfreeze\""),
    );
    let (resp, handle) = start(&cfg, dir.path(), &m, &ManualClock::new(T0));
    let mut d = det("impossible_travel", "ak_dry", 0);
    resp.policy().decide(&mut d);
    assert_eq!(
        (d.action, d.reason.as_deref()),
        (Action::WouldFreeze, Some("dry_run"))
    );
    let mut again = det("impossible_travel", "ak_dry", 9);
    resp.policy().decide(&mut again);
    assert_eq!(
        again.reason.as_deref(),
        Some("already_frozen"),
        "dry-run dedupes like enforce"
    );
    assert!(handle.control().frozen().is_empty());
    handle.shutdown().await;
    assert!(rx.requests().is_empty(), "no hook call in dry-run");
    assert_eq!(journal_pending(dir.path()), 0);

    // off: alert only.
    let mut d = det("impossible_travel", "ak_off", 0);
    replay_policy(&config("mode = \"off\"", ""), None).decide(&mut d);
    assert_eq!(
        (d.action, d.reason.as_deref()),
        (Action::Alert, Some("mode_off"))
    );
}

#[test]
fn replay_policy_is_dry_run_on_event_time_and_deterministic() {
    let cfg = config("mode = \"enforce\"\nmax_freezes = 2\nwindow_secs = 60", "");
    let run = || {
        let mut p = replay_policy(&cfg, None);
        (0..5)
            .map(|i| {
                // Event times 20 s apart: the third is capped, the fourth fits again.
                let mut d = det("ip_fanout", &format!("ak_r{i}"), i * 20);
                p.decide(&mut d);
                d.to_json_line()
            })
            .collect::<Vec<_>>()
    };
    let a = run();
    assert_eq!(a, run());
    let actions: Vec<_> = a
        .iter()
        .map(|l| serde_json::from_str::<Detection>(l).unwrap().action)
        .collect();
    use Action::*;
    assert_eq!(
        actions,
        vec![
            WouldFreeze,
            WouldFreeze,
            Suppressed,
            WouldFreeze,
            WouldFreeze
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_unfreezes_and_calls_the_unfreeze_hook() {
    let rx = Receiver::start(|_, _| (200, Duration::ZERO));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        "mode = \"enforce\"\nfreeze_ttl_secs = 60",
        &webhook(&rx.url("/"), "\"freeze\", \"unfreeze\""),
    );
    let m = Metrics::new();
    let clock = ManualClock::new(T0);
    let (resp, handle) = start(&cfg, dir.path(), &m, &clock);
    let mut d = det("impossible_travel", "ak_ttl", 0);
    resp.policy().decide(&mut d);
    until(10, "freeze call", || {
        (rx.requests().len() == 1).then_some(())
    })
    .await;
    assert_eq!(handle.control().frozen()[0].until_ms, Some(T0 + 60_000));
    clock.advance(59_000);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(handle.control().frozen().len(), 1, "not before the TTL");
    clock.advance(1_000);
    let reqs = until(10, "unfreeze call", || {
        Some(rx.requests()).filter(|r| r.len() == 2)
    })
    .await;
    assert_eq!(reqs[1].header("x-tokenwatch-event"), "unfreeze");
    assert_eq!(
        reqs[1].header("idempotency-key"),
        format!("{}:unfreeze", d.id)
    );
    assert!(signature_ok(&reqs[1]));
    assert!(handle.control().frozen().is_empty());
    assert_eq!(metric(&m, "tokenwatch_frozen_tokens"), 0.0);
    handle.shutdown().await;
    // The frozen set on disk agrees after a restart.
    let (_r, h2) = start(&cfg, dir.path(), &Metrics::new(), &clock);
    assert!(h2.control().frozen().is_empty());
    h2.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_set_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("mode = \"enforce\"", "");
    let clock = ManualClock::new(T0);
    let (resp, handle) = start(&cfg, dir.path(), &Metrics::new(), &clock);
    resp.policy()
        .decide(&mut det("impossible_travel", "ak_keep", 0));
    handle.shutdown().await;
    let m = Metrics::new();
    let (resp, handle) = start(&cfg, dir.path(), &m, &clock);
    assert_eq!(handle.control().frozen()[0].token, "ak_keep");
    assert_eq!(metric(&m, "tokenwatch_frozen_tokens"), 1.0);
    let mut d = det("ip_fanout", "ak_keep", 3);
    resp.policy().decide(&mut d);
    assert_eq!(d.reason.as_deref(), Some("already_frozen"));
    handle.shutdown().await;
}

/// The freeze cap counts the freezes still in the window across a restart (or a standby
/// responder taking over the same state directory): no fresh allowance per process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_freeze_cap_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config("mode = \"enforce\"\nmax_freezes = 2\nwindow_secs = 60", "");
    let clock = ManualClock::new(T0);
    let (resp, handle) = start(&cfg, dir.path(), &Metrics::new(), &clock);
    for (n, token) in ["ak_1", "ak_2"].iter().enumerate() {
        let mut d = det("impossible_travel", token, n as i64);
        resp.policy().decide(&mut d);
        assert_eq!(d.action, Action::Freeze);
    }
    handle.shutdown().await;
    let (resp, handle) = start(&cfg, dir.path(), &Metrics::new(), &clock);
    let mut d = det("impossible_travel", "ak_3", 5);
    resp.policy().decide(&mut d);
    assert_eq!(d.reason.as_deref(), Some("rate_cap"));
    handle.shutdown().await;
    // Once the window has passed, freezes resume after a restart too.
    clock.advance(61_000);
    let (resp, handle) = start(&cfg, dir.path(), &Metrics::new(), &clock);
    let mut d = det("impossible_travel", "ak_4", 70);
    resp.policy().decide(&mut d);
    assert_eq!(d.action, Action::Freeze);
    handle.shutdown().await;
}

// ---------------------------------------------------------------- exec and e-mail

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_hook_gets_the_record_on_stdin_and_placeholders_as_args() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let hooks = format!(
        "[[hook]]\nname = \"script\"\ntype = \"exec\"\nprogram = \"/bin/sh\"\n\
         args = [\"-c\", \"cat > {}.$1\", \"sh\", \"{{{{token}}}}\"]\n",
        out.display()
    );
    let cfg = config("mode = \"enforce\"", &hooks);
    let m = Metrics::new();
    let (resp, handle) = start(&cfg, dir.path(), &m, &ManualClock::new(T0));
    resp.policy()
        .decide(&mut det("impossible_travel", "ak_exec", 0));
    let path = dir.path().join("out.ak_exec");
    until(10, "exec success", || {
        (metric(
            &m,
            r#"tokenwatch_actions_total{action="freeze",hook="script",result="success"}"#,
        ) == 1.0)
            .then_some(())
    })
    .await;
    let body: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    assert_eq!(body["token"], "ak_exec");
    assert_eq!(body["event"], "freeze");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_storm_is_one_digest_over_real_smtp() {
    let (port, mails) = smtp_server();
    let dir = tempfile::tempdir().unwrap();
    let hooks = format!(
        "[[hook]]\nname = \"mail\"\ntype = \"email\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\n\
         tls = \"none\"\nfrom = \"tokenwatch <tw@example.com>\"\nto = [\"ops@example.com\"]\ndigest_secs = 1\n"
    );
    let cfg = config("mode = \"enforce\"", &hooks);
    let m = Metrics::new();
    let (resp, handle) = start(&cfg, dir.path(), &m, &ManualClock::new(T0));
    let mut p = resp.policy();
    for i in 0..3 {
        p.decide(&mut det("impossible_travel", &format!("ak_mail{i}"), i));
    }
    let got = until(15, "one mail", || {
        Some(mails.lock().unwrap().clone()).filter(|m| !m.is_empty())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        mails.lock().unwrap().len(),
        1,
        "one digest, not one mail per action"
    );
    let mail = got[0].replace("\r\n ", " ");
    assert!(
        mail.contains("Subject: [tokenwatch] digest: 3 actions (3 freeze)"),
        "{mail}"
    );
    assert!(mail.contains("To: ops@example.com"), "{mail}");
    for i in 0..3 {
        assert!(mail.contains(&format!("Token:     ak_mail{i}")), "{mail}");
    }
    assert!(mail.contains("impossible_travel (severity high)"), "{mail}");
    assert!(mail.contains("To unfreeze:"), "{mail}");
    assert!(mail.contains("/api/v1/frozen/ak_mail0"), "{mail}");

    // A single action gets a readable subject of its own.
    p.decide(&mut det("ip_fanout", "ak_single", 9));
    let got = until(15, "second mail", || {
        Some(mails.lock().unwrap().clone()).filter(|m| m.len() == 2)
    })
    .await;
    let mail = got[1].replace("\r\n ", " ");
    assert!(
        mail.contains("Subject: [tokenwatch] froze token ak_single (ip_fanout, high)"),
        "{mail}"
    );
    handle.shutdown().await;
}

// ---------------------------------------------------------------- admin API

async fn serve_admin(handle: &ResponderHandle, ring: Ring) -> String {
    let mut token = Secret::new(SecretRef::Env("ADMIN".into()));
    token.resolve(&secrets()).unwrap();
    let app = tokenwatch::server::admin::routes(
        handle.control(),
        ring,
        Some(token),
        test_fingerprinter(),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    format!("http://{addr}")
}

const AM_EXAMPLE: &str = r#"{
  "version": "4",
  "groupKey": "{}:{alertname=\"TokenAbuse\"}",
  "truncatedAlerts": 0,
  "status": "firing",
  "receiver": "tokenwatch",
  "groupLabels": {"alertname": "TokenAbuse"},
  "commonLabels": {"alertname": "TokenAbuse"},
  "commonAnnotations": {},
  "externalURL": "http://alertmanager:9093",
  "alerts": [
    {"status": "firing", "labels": {"alertname": "TokenAbuse", "token": "ak_am1", "user": "bob", "severity": "critical"},
     "annotations": {"summary": "token used from 40 IPs"}, "startsAt": "2026-03-02T13:55:36.120Z",
     "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prometheus:9090/graph", "fingerprint": "c8c8d1a5f1e2b3a4"},
    {"status": "resolved", "labels": {"alertname": "TokenAbuse", "token": "ak_am2"}, "annotations": {},
     "startsAt": "2026-03-02T12:00:00Z", "endsAt": "2026-03-02T12:30:00Z", "generatorURL": "", "fingerprint": "d4"},
    {"status": "firing", "labels": {"alertname": "HighTokenFailureRate"}, "annotations": {},
     "startsAt": "2026-03-02T13:00:00Z", "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "", "fingerprint": "e5"}
  ]
}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_auth_freeze_unfreeze_detections_and_alertmanager() {
    let rx = Receiver::start(|_, _| (200, Duration::ZERO));
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(
        "mode = \"enforce\"",
        &webhook(&rx.url("/"), "\"freeze\", \"unfreeze\""),
    );
    let (_resp, handle) = start(&cfg, dir.path(), &Metrics::new(), &ManualClock::new(T0));
    let mut ring = Ring::new(100);
    ring.emit(&det("brute_force", "ak_old", 0)).unwrap();
    ring.emit(&det("ip_fanout", "ak_new", 3600)).unwrap();
    let base = serve_admin(&handle, ring).await;
    let c = reqwest::Client::new();
    let auth = "Bearer s3cret-admin";

    // 401 without a token and with a wrong one.
    let r = c.get(format!("{base}/api/v1/frozen")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(format!("{base}/api/v1/frozen"))
        .header("authorization", "Bearer nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!("{base}/api/v1/alertmanager"))
        .body(AM_EXAMPLE)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Detections, filtered.
    let get = |path: String| {
        let c = c.clone();
        async move {
            let r = c
                .get(path)
                .header("authorization", auth)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (s, v) = get(format!("{base}/api/v1/detections")).await;
    assert_eq!((s, v["detections"].as_array().unwrap().len()), (200, 2));
    let (_, v) = get(format!(
        "{base}/api/v1/detections?since=2026-03-02T14:00:00Z"
    ))
    .await;
    assert_eq!(v["detections"][0]["token"], "ak_new");
    assert_eq!(v["detections"].as_array().unwrap().len(), 1);
    let (_, v) = get(format!("{base}/api/v1/detections?detector=brute_force")).await;
    assert_eq!(v["detections"][0]["token"], "ak_old");
    let (s, _) = get(format!("{base}/api/v1/detections?since=yesterday")).await;
    assert_eq!(s, 400);

    // Manual freeze through the policy and hooks; then unfreeze.
    let r = c
        .post(format!("{base}/api/v1/frozen/ak_manual"))
        .header("authorization", auth)
        .body(r#"{"reason":"customer reported a leak"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: Detection = r.json().await.unwrap();
    assert_eq!((d.action, d.detector.as_str()), (Action::Freeze, "manual"));
    let (_, v) = get(format!("{base}/api/v1/frozen")).await;
    assert_eq!(v["frozen"][0]["token"], "ak_manual");
    let (_, v) = get(format!("{base}/api/v1/detections?detector=manual")).await;
    assert_eq!(
        v["detections"].as_array().unwrap().len(),
        1,
        "manual records are listed too"
    );
    let r = c
        .post(format!("{base}/api/v1/frozen/ak_bad"))
        .header("authorization", auth)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("bad JSON"));
    let r = c
        .delete(format!("{base}/api/v1/frozen/ak_manual"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .delete(format!("{base}/api/v1/frozen/ak_manual"))
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let reqs = until(10, "freeze + unfreeze calls", || {
        Some(rx.requests()).filter(|r| r.len() >= 2)
    })
    .await;
    let events: Vec<_> = reqs
        .iter()
        .map(|r| r.header("x-tokenwatch-event").to_string())
        .collect();
    assert_eq!(events, ["freeze", "unfreeze"]);

    // Alertmanager v4: the firing alert with a token freezes; resolved and token-less are ignored.
    let am = |body: String| {
        let c = c.clone();
        let url = format!("{base}/api/v1/alertmanager");
        async move {
            let r = c
                .post(url)
                .header("authorization", auth)
                .body(body)
                .send()
                .await
                .unwrap();
            (
                r.status().as_u16(),
                r.json::<serde_json::Value>().await.unwrap(),
            )
        }
    };
    let (s, v) = am(AM_EXAMPLE.to_string()).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 1, "{v}");
    assert_eq!(v["results"][0]["token"], "ak_am1");
    assert_eq!(v["results"][0]["action"], "freeze");
    assert_eq!(v["ignored"], 2);
    let (_, v) = am(AM_EXAMPLE.to_string()).await;
    assert_eq!(
        (
            v["results"].as_array().unwrap().len(),
            v["ignored"].as_u64()
        ),
        (0, Some(3)),
        "deduped by fingerprint"
    );
    let (s, v) = am(AM_EXAMPLE.replace("\"version\": \"4\"", "\"version\": \"3\"")).await;
    assert_eq!(s, 400);
    assert!(v["error"].as_str().unwrap().contains("version"));
    let (s, _) = am("[1,2".to_string()).await;
    assert_eq!(s, 400);
    let (_, v) = get(format!("{base}/api/v1/frozen")).await;
    assert_eq!(v["frozen"][0]["token"], "ak_am1");
    assert_eq!(v["frozen"][0]["user"], "bob");
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_api_is_off_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let (_resp, handle) = start(
        &config("", ""),
        dir.path(),
        &Metrics::new(),
        &ManualClock::new(T0),
    );
    let app = tokenwatch::server::admin::routes(
        handle.control(),
        Ring::new(1),
        None,
        test_fingerprinter(),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(l, app).await });
    let r = reqwest::get(format!("http://{addr}/api/v1/frozen"))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    handle.shutdown().await;
}

// ---------------------------------------------------------------- config

#[test]
fn hook_config_errors_are_all_reported_with_lines() {
    let text = "[response]\nfreeze_detectors = [\"ip_fanot\"]\nmax_freezes = 0\n\n\
                [[hook]]\ntype = \"webhook\"\nbody = \"{{tokn}}\"\n\n\
                [[hook]]\ntype = \"email\"\nto = [\"not an address\"]\npassword = \"env:NOPE\"\n\n\
                [[hook]]\ntype = \"exec\"\nurl = \"http://x\"\n";
    let errs = Config::from_toml(text, "tw.toml", &secrets()).unwrap_err();
    let all = errs.to_string();
    for want in [
        "tw.toml:2:",
        "unknown detector \"ip_fanot\" (did you mean \"ip_fanout\"?)",
        "tw.toml:3:15: response.max_freezes: must be at least 1",
        "hook[0].url: webhook needs url",
        "hook[0].body: unknown placeholder {{tokn}}",
        "hook[1].smtp_host: email needs smtp_host",
        "hook[1].to: invalid address",
        "hook[1].password: environment variable NOPE is not set",
        "hook[2].program: exec needs program",
        "warning: tw.toml:16:7: hook[2].url: url is only used with type = \"webhook\"",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
}

#[test]
fn hook_secrets_resolve_and_never_print() {
    let cfg = config(
        "",
        "[[hook]]\ntype = \"webhook\"\nurl = \"https://x.example/{{token}}\"\nhmac_key = \"env:HOOK_KEY\"\n\
         headers = { \"X-Api-Key\" = \"env:HOOK_KEY\", \"X-Plain\" = \"v\" }\n",
    );
    assert_eq!(cfg.hooks[0].name, "hook0");
    assert_eq!(
        cfg.hooks[0].hmac_key.as_ref().and_then(|s| s.expose()),
        Some(HOOK_KEY)
    );
    let eff = cfg.to_effective_toml();
    assert!(!eff.contains(HOOK_KEY), "{eff}");
    assert!(eff.contains("env:HOOK_KEY"), "{eff}");
    let back = Config::from_toml(&eff, "eff", &secrets()).unwrap();
    assert_eq!(back, cfg);
}

#[test]
fn shipped_hook_examples_load() {
    let secrets = [
        "TOKENWATCH_HOOK_KEY",
        "AUTH_ADMIN_TOKEN",
        "AUTH_CLIENT_BASIC",
        "VAULT_REVOKER_TOKEN",
        "TOKENWATCH_FINGERPRINT_KEY",
        "SMTP_PASSWORD",
    ]
    .iter()
    .fold(MapSecrets::new(), |s, n| s.with_env(n, &"x".repeat(32)));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hooks");
    let mut n = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "toml") {
            let cfg = Config::load(&path, &secrets)
                .unwrap_or_else(|e| panic!("{}:\n{e}", path.display()));
            assert!(!cfg.hooks.is_empty(), "{}", path.display());
            n += 1;
        }
    }
    assert_eq!(n, 5);
}

/// A fingerprinter with a fixed test key (the admin API fingerprints secret-shaped tokens).
fn test_fingerprinter() -> tokenwatch::enrich::Fingerprinter {
    tokenwatch::enrich::Fingerprinter::new(&[7u8; 32])
}
