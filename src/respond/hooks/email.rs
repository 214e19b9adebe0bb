//! `email`: an SMTP relay (STARTTLS, implicit TLS, or plain for local relays). The
//! dispatcher batches each hook's jobs over `digest_secs`, so a storm yields one digest.

use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{CallFuture, CallResult, Hook};
use crate::config::{HookConfig, HookEvent, SmtpTls};
use crate::respond::journal::Job;
use crate::respond::RespondError;

/// A configured relay and its recipients.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    admin_url: String,
}

impl Email {
    /// Builds the transport; `admin_url` (e.g. `http://127.0.0.1:9847`) goes into the
    /// "how to unfreeze" line.
    pub fn new(cfg: &HookConfig, admin_url: &str) -> Result<Email, RespondError> {
        super::install_crypto_provider();
        let bad = |reason: String| RespondError::Hook {
            hook: cfg.name.clone(),
            reason,
        };
        let host = cfg
            .smtp_host
            .clone()
            .ok_or_else(|| bad("no smtp_host".into()))?;
        let mut b = match cfg.tls {
            SmtpTls::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
                .map_err(|e| bad(e.to_string()))?
                .port(cfg.smtp_port.unwrap_or(587)),
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&host)
                .map_err(|e| bad(e.to_string()))?
                .port(cfg.smtp_port.unwrap_or(465)),
            SmtpTls::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                .port(cfg.smtp_port.unwrap_or(25)),
        };
        if let (Some(user), Some(pass)) = (
            &cfg.username,
            cfg.password.as_ref().and_then(|p| p.expose()),
        ) {
            b = b.credentials(Credentials::new(user.clone(), pass.to_string()));
        }
        let b = b.timeout(Some(cfg.timeout()));
        let from = cfg
            .from
            .as_deref()
            .unwrap_or("")
            .parse()
            .map_err(|e| bad(format!("from: {e}")))?;
        let to = cfg
            .to
            .iter()
            .map(|t| t.parse().map_err(|e| bad(format!("to {t:?}: {e}"))))
            .collect::<Result<_, _>>()?;
        Ok(Email {
            transport: b.build(),
            from,
            to,
            admin_url: admin_url.trim_end_matches('/').to_string(),
        })
    }

    fn message(&self, jobs: &[Job]) -> Result<Message, String> {
        let mut m = Message::builder()
            .from(self.from.clone())
            .subject(subject(jobs))
            .header(ContentType::TEXT_PLAIN);
        for t in &self.to {
            m = m.to(t.clone());
        }
        m.body(body(jobs, &self.admin_url))
            .map_err(|e| e.to_string())
    }
}

impl Hook for Email {
    fn call<'a>(&'a self, jobs: &'a [Job]) -> CallFuture<'a> {
        Box::pin(async move {
            let msg = match self.message(jobs) {
                Ok(m) => m,
                Err(e) => return CallResult::Permanent(e),
            };
            match self.transport.send(msg).await {
                Ok(_) => CallResult::Ok,
                Err(e) if e.is_permanent() => CallResult::Permanent(e.to_string()),
                Err(e) => CallResult::Retry(e.to_string(), None),
            }
        })
    }
}

fn what(job: &Job) -> &'static str {
    match job.event {
        HookEvent::Freeze => "froze token",
        HookEvent::Unfreeze => "unfroze token",
        HookEvent::WouldFreeze => "would freeze token (dry-run)",
        HookEvent::Alert => "alert for",
        HookEvent::Breaker => "freeze circuit breaker OPEN",
    }
}

/// One action: `[tokenwatch] froze token ak_1 (impossible_travel, high)`; several: a count
/// by event.
pub fn subject(jobs: &[Job]) -> String {
    if let [job] = jobs {
        let d = &job.detection;
        if job.event == HookEvent::Breaker {
            return "[tokenwatch] freeze circuit breaker OPEN: further freezes suppressed".into();
        }
        let token = d.token.as_deref().unwrap_or("(no token)");
        return format!(
            "[tokenwatch] {} {token} ({}, {})",
            what(job),
            d.detector,
            d.severity.as_str()
        );
    }
    let mut counts: std::collections::BTreeMap<&str, usize> = Default::default();
    for j in jobs {
        *counts.entry(j.event.as_str()).or_default() += 1;
    }
    let parts: Vec<String> = counts.iter().map(|(e, n)| format!("{n} {e}")).collect();
    format!(
        "[tokenwatch] digest: {} actions ({})",
        jobs.len(),
        parts.join(", ")
    )
}

/// The plain-text body: per action what, which token, why, evidence, how to unfreeze.
pub fn body(jobs: &[Job], admin_url: &str) -> String {
    let mut out = String::new();
    if jobs.len() > 1 {
        out.push_str(&format!("tokenwatch took {} actions:\n\n", jobs.len()));
    }
    for (i, job) in jobs.iter().enumerate() {
        if jobs.len() > 1 {
            out.push_str(&format!("--- {} of {} ---\n", i + 1, jobs.len()));
        }
        section(&mut out, job, admin_url);
        out.push('\n');
    }
    out
}

fn section(out: &mut String, job: &Job, admin_url: &str) {
    let d = &job.detection;
    let line = |out: &mut String, k: &str, v: &str| out.push_str(&format!("{k:<10} {v}\n"));
    line(out, "What:", what(job));
    if let Some(t) = &d.token {
        line(out, "Token:", t);
    }
    if let Some(u) = &d.user {
        line(out, "User:", u);
    }
    if let Some(ip) = d.ip {
        line(out, "IP:", &ip.to_string());
    }
    line(
        out,
        "Detector:",
        &format!("{} (severity {})", d.detector, d.severity.as_str()),
    );
    line(out, "When:", &d.ts.to_string());
    if let Some(r) = &d.reason {
        line(out, "Why:", r);
    }
    line(out, "Record id:", &d.id);
    let evidence = serde_json::to_string_pretty(&d.evidence).unwrap_or_default();
    out.push_str(&format!("Evidence:\n{evidence}\n"));
    match (job.event, &d.token) {
        (HookEvent::Freeze, Some(t)) => out.push_str(&format!(
            "To unfreeze:\n  curl -X DELETE -H \"Authorization: Bearer $TOKENWATCH_ADMIN_TOKEN\" {admin_url}/api/v1/frozen/{t}\n"
        )),
        (HookEvent::Breaker, _) => out.push_str(
            "More freezes than response.max_freezes within response.window_secs were asked for:\n\
             this looks like a mass false positive, so further freezes are suppressed (reason rate_cap)\n\
             until the window has room again. Check the detections before raising the cap.\n",
        ),
        _ => {}
    }
}
