//! The daemon's network and journal sources (`kind = "syslog"` / `"journald"`), started
//! beside the file tailer and feeding the same pipeline channel.

use std::sync::mpsc::SyncSender;

use anyhow::Context;

use crate::config::Config;
use crate::config::{SourceConfig, SourceKind};
use crate::metrics::{DropReason, Metrics};
use crate::parse::time::Zone;
use crate::source::journald::{self, Journald, JournaldConfig, JournaldHandle};
use crate::source::syslog::{self, Listen, Syslog, SyslogConfig, SyslogHandle};
use crate::source::LineBatch;

/// The running syslog and journald sources of one config.
#[derive(Default)]
pub struct Listeners {
    syslog: Vec<SyslogHandle>,
    journald: Vec<JournaldHandle>,
}

impl Listeners {
    /// Binds every syslog socket and starts every journald follower (on the current
    /// runtime). A bind error fails the start: nothing would arrive.
    pub fn start(
        cfg: &Config,
        metrics: &Metrics,
        out: &SyncSender<LineBatch>,
    ) -> anyhow::Result<Listeners> {
        let mut l = Listeners::default();
        for (i, s) in cfg.sources.iter().enumerate() {
            let idx = i as u16;
            match s.kind {
                SourceKind::File => {}
                SourceKind::Syslog => {
                    let c = syslog_config(s, idx)?;
                    let addr = c.listen;
                    let counters = syslog::Counters::new(metrics, &s.name);
                    let h = Syslog::start(c, out.clone(), counters)
                        .with_context(|| format!("source {:?}: listening on {addr:?}", s.name))?;
                    l.syslog.push(h);
                }
                SourceKind::Journald => {
                    let c = journald_config(s, idx, cfg);
                    let d = |r| metrics.source_dropped(&s.name, r);
                    let counters = journald::Counters {
                        malformed: d(DropReason::Malformed),
                        too_long: d(DropReason::TooLong),
                        skipped: metrics.source(&s.name).skipped,
                    };
                    let h = Journald::start(c, out.clone(), counters)
                        .with_context(|| format!("source {:?}: starting journald", s.name))?;
                    l.journald.push(h);
                }
            }
        }
        Ok(l)
    }

    /// True when every journald follower has started journalctl (sockets are bound at
    /// start already).
    pub fn is_ready(&self) -> bool {
        self.journald.iter().all(JournaldHandle::is_ready)
    }

    /// Stops receiving and drops every sender into the pipeline; returns what must be
    /// finished after the pipeline drained.
    pub async fn stop_reading(self) -> Vec<JournaldHandle> {
        for s in self.syslog {
            s.stop().await;
        }
        let mut j = self.journald;
        for h in &mut j {
            h.stop_reading().await;
        }
        j
    }
}

/// Writes each journald source's acked cursor.
pub fn finish(journald: Vec<JournaldHandle>) -> anyhow::Result<()> {
    for h in journald {
        h.finish().context("writing the journald cursor")?;
    }
    Ok(())
}

fn syslog_config(s: &SourceConfig, idx: u16) -> anyhow::Result<SyslogConfig> {
    let listen = s
        .listen
        .as_deref()
        .context("syslog source without listen")?;
    Ok(SyslogConfig {
        source: idx,
        name: s.name.clone(),
        listen: Listen::parse(listen).map_err(anyhow::Error::msg)?,
        program: s.program.clone(),
        max_message_bytes: s.max_line_bytes,
        queue_messages: s.queue_messages.unwrap_or(syslog::DEFAULT_QUEUE_MESSAGES),
        max_connections: s.max_connections.unwrap_or(syslog::DEFAULT_MAX_CONNECTIONS),
        recv_buffer_bytes: s.recv_buffer_bytes.unwrap_or(syslog::DEFAULT_RECV_BUFFER),
        zone: Zone::new(Some(s.timezone.time_zone())),
    })
}

fn journald_config(s: &SourceConfig, idx: u16, cfg: &Config) -> JournaldConfig {
    JournaldConfig {
        source: idx,
        name: s.name.clone(),
        units: s.units.clone(),
        identifiers: s.identifiers.clone(),
        directory: s.journal_dir.clone(),
        file: s.journal_file.clone(),
        start_at: s.start_at,
        max_message_bytes: s.max_line_bytes,
        state_dir: cfg.state.dir.clone(),
        journalctl: "journalctl".into(),
    }
}
