//! Names users type: output formats and attack scenarios.

use std::fmt;
use std::str::FromStr;

/// An output format of `gen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GenFormat {
    /// nginx `tokenwatch` log format: combined + `"$token_id" "$auth_reason"`.
    Nginx,
    /// JSON lines with `ts, token_id, user, ip, method, path, status, reason`.
    Json,
    /// HashiCorp Vault audit device response entries.
    Vault,
}

impl GenFormat {
    /// Every format.
    pub const ALL: [GenFormat; 3] = [GenFormat::Nginx, GenFormat::Json, GenFormat::Vault];

    /// The name on the command line (the matching input preset).
    pub const fn name(self) -> &'static str {
        match self {
            GenFormat::Nginx => "nginx",
            GenFormat::Json => "json",
            GenFormat::Vault => "vault",
        }
    }
}

/// A name that is not a known format or scenario.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {name:?} (expected one of: {expected})")]
pub struct UnknownName {
    /// What was being named (`format`, `scenario`).
    pub kind: &'static str,
    /// The name given.
    pub name: String,
    /// The accepted names.
    pub expected: String,
}

impl FromStr for GenFormat {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GenFormat::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownName {
                kind: "format",
                name: s.to_string(),
                expected: "nginx, json, vault".to_string(),
            })
    }
}

impl fmt::Display for GenFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An injected attack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scenario {
    /// One IP, ≥ 60 rejections in 5 minutes.
    BruteForce,
    /// One IP, 20+ distinct never-seen tokens in 10 minutes.
    TokenSpray,
    /// 15+ IPs over 45 minutes, each trying 2–3 never-seen tokens.
    DistributedSpray,
    /// A token at 20× its baseline for 15 minutes.
    RateSpike,
    /// A token used in London, then in Sydney 20 minutes later.
    ImpossibleTravel,
    /// A leaked token used from 30 IPs in 25 /24s and several countries within 10 minutes.
    IpFanout,
    /// An office-hours token used at 03:00 on a Sunday.
    OffHours,
    /// A revoked token used 20 times in 10 minutes.
    RevokedReuse,
    /// Rejected share above 60 % for 5 minutes across many tokens and IPs.
    RejectionStorm,
}

impl Scenario {
    /// Every scenario, in schedule order of the label file.
    pub const ALL: [Scenario; 9] = [
        Scenario::BruteForce,
        Scenario::TokenSpray,
        Scenario::DistributedSpray,
        Scenario::RateSpike,
        Scenario::ImpossibleTravel,
        Scenario::IpFanout,
        Scenario::OffHours,
        Scenario::RevokedReuse,
        Scenario::RejectionStorm,
    ];

    /// The scenario's name (as in the labels file and `--scenarios`).
    pub const fn name(self) -> &'static str {
        match self {
            Scenario::BruteForce => "brute_force",
            Scenario::TokenSpray => "token_spray",
            Scenario::DistributedSpray => "distributed_spray",
            Scenario::RateSpike => "rate_spike",
            Scenario::ImpossibleTravel => "impossible_travel",
            Scenario::IpFanout => "ip_fanout",
            Scenario::OffHours => "off_hours",
            Scenario::RevokedReuse => "revoked_reuse",
            Scenario::RejectionStorm => "rejection_storm",
        }
    }

    /// The detector (DESIGN §6) that must catch it.
    pub const fn detector(self) -> &'static str {
        match self {
            Scenario::RejectionStorm => "rejection_ratio",
            other => other.name(),
        }
    }

    /// True if the detector needs learned baselines, so the attack waits for the learning period.
    pub const fn needs_baseline(self) -> bool {
        matches!(
            self,
            Scenario::RateSpike | Scenario::OffHours | Scenario::ImpossibleTravel
        )
    }

    /// Parses `all`, `none`, or a comma-separated list of names.
    pub fn parse_list(s: &str) -> Result<Vec<Scenario>, UnknownName> {
        match s.trim() {
            "all" => return Ok(Scenario::ALL.to_vec()),
            "none" | "" => return Ok(Vec::new()),
            _ => {}
        }
        let mut out: Vec<Scenario> = s.split(',').map(str::parse).collect::<Result<_, _>>()?;
        out.sort();
        out.dedup();
        Ok(out)
    }
}

impl FromStr for Scenario {
    type Err = UnknownName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        Scenario::ALL
            .into_iter()
            .find(|sc| sc.name().eq_ignore_ascii_case(s) || sc.name().replace('_', "-") == s)
            .ok_or_else(|| UnknownName {
                kind: "scenario",
                name: s.to_string(),
                expected: Scenario::ALL
                    .iter()
                    .map(|s| s.name())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
