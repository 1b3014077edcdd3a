//! Restart policies (`--restart no|on-failure[:N]|always|unless-stopped`) with docker's
//! backoff: the delay before a restart starts at 100 ms and doubles after each restart, capped
//! at one minute, and goes back to 100 ms when the container had stayed up for 10 s.
//!
//! The decision ([`RestartPolicy::should_restart`], [`next_delay`]) is pure; the scheduling
//! ([`Manager::after_exit`], [`Manager::restart_on_boot`]) keeps its state in the container's
//! record (`restarting`, `restart_count`, `restart_delay_ms`, `manually_stopped`), so it
//! survives runtime-svc restarts.

use crate::container::{Record, Status};
use crate::manager::Manager;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// First delay before a restart.
pub const INITIAL_DELAY: Duration = Duration::from_millis(100);
/// Longest delay between restarts.
pub const MAX_DELAY: Duration = Duration::from_secs(60);
/// A run at least this long resets the delay.
pub const RESET_AFTER: Duration = Duration::from_secs(10);

/// Which policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PolicyName {
    /// Never restart.
    #[default]
    No,
    /// Restart after a non-zero exit, up to `max_retries` times (0 = no limit).
    OnFailure,
    /// Always restart (also when runtime-svc starts, even after a user stop).
    Always,
    /// As always, except after the user stopped it.
    UnlessStopped,
}

/// A container's restart policy.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    /// The policy.
    pub name: PolicyName,
    /// on-failure: maximum restarts (0 = unlimited).
    pub max_retries: i32,
}

impl RestartPolicy {
    /// From docker's API form: name "no"/""/"always"/"unless-stopped"/"on-failure" and a count.
    pub fn parse(name: &str, max: i32) -> Result<Self, String> {
        let name = match name {
            "" | "no" => PolicyName::No,
            "always" => PolicyName::Always,
            "unless-stopped" => PolicyName::UnlessStopped,
            "on-failure" => PolicyName::OnFailure,
            other => {
                return Err(format!(
                    "invalid restart policy: unknown policy {other:?}; use no, always, unless-stopped or on-failure"
                ))
            }
        };
        if max < 0 {
            return Err("invalid restart policy: maximum retry count cannot be negative".into());
        }
        if max > 0 && name != PolicyName::OnFailure {
            return Err(format!(
                "invalid restart policy: maximum retry count can only be used with 'on-failure', not {:?}",
                name.as_str()
            ));
        }
        Ok(RestartPolicy { name, max_retries: max })
    }

    /// docker's name.
    pub fn name_str(&self) -> &'static str {
        self.name.as_str()
    }

    /// Whether an exit with `code` leads to a restart, `count` restarts having been made.
    pub fn should_restart(&self, code: i32, count: i32, manually_stopped: bool) -> bool {
        if manually_stopped {
            return false;
        }
        match self.name {
            PolicyName::No => false,
            PolicyName::Always | PolicyName::UnlessStopped => true,
            PolicyName::OnFailure => code != 0 && (self.max_retries == 0 || count < self.max_retries),
        }
    }

    /// Whether runtime-svc starts a stopped container of this policy when it starts itself.
    pub fn start_on_boot(&self, manually_stopped: bool) -> bool {
        match self.name {
            PolicyName::Always => true,
            PolicyName::UnlessStopped => !manually_stopped,
            _ => false,
        }
    }
}

impl PolicyName {
    /// docker's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyName::No => "no",
            PolicyName::OnFailure => "on-failure",
            PolicyName::Always => "always",
            PolicyName::UnlessStopped => "unless-stopped",
        }
    }
}

/// The delay before the next restart, given the previous one (0 = none yet) and how long the
/// container ran: docker's restart manager.
pub fn next_delay(prev: Duration, ran_for: Duration) -> Duration {
    let prev = if ran_for >= RESET_AFTER { Duration::ZERO } else { prev };
    let d = if prev.is_zero() { INITIAL_DELAY } else { prev * 2 };
    d.min(MAX_DELAY)
}

impl Manager {
    /// Called after every recorded exit: schedules a restart when the policy asks for one.
    pub(crate) fn after_exit(self: &Arc<Self>, rec: &Record) {
        if rec.host.auto_remove || rec.status != Status::Exited {
            return;
        }
        if !rec.host.restart.should_restart(rec.exit_code, rec.restart_count, rec.manually_stopped) {
            if rec.restarting {
                let _ = self.update_record(&rec.id, |r| r.restarting = false);
            }
            return;
        }
        let ran = Duration::from_nanos(rec.finished_at.saturating_sub(rec.started_at).max(0) as u64);
        let delay = next_delay(Duration::from_millis(rec.restart_delay_ms), ran);
        let Ok(rec) = self.update_record(&rec.id, |r| {
            r.restarting = true;
            r.restart_count += 1;
            r.restart_delay_ms = delay.as_millis() as u64;
        }) else {
            return;
        };
        self.schedule_restart(rec.id, delay);
    }

    fn schedule_restart(self: &Arc<Self>, id: String, delay: Duration) {
        tracing::info!(id = %id, delay_ms = delay.as_millis() as u64, "restart policy: restarting");
        let m = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Ok(rec) = m.inspect(&id) else { return };
            if !rec.restarting || rec.manually_stopped || rec.status != Status::Exited {
                return;
            }
            // A successful start clears `restarting`; a failed one is recorded as an exit, which
            // schedules the next try.
            if let Err(e) = m.start(&id).await {
                tracing::info!(id = %id, error = %e, "restart policy: start failed");
            }
        });
    }

    /// Start asked by the user (`start`, `restart`): clears a previous user stop and the
    /// backoff, as docker resets its restart manager.
    pub async fn start_by_user(self: &Arc<Self>, what: &str) -> Result<Record, crate::error::RuntimeError> {
        let rec = self.inspect(what)?;
        if rec.status.can_start() {
            self.update_record(&rec.id, |r| {
                r.manually_stopped = false;
                r.restarting = false;
                r.restart_delay_ms = 0;
            })?;
        }
        self.start(&rec.id).await
    }

    /// At runtime-svc start: restarts what the policies ask for (`always`, `unless-stopped`
    /// not stopped by the user, and restarts that were pending when runtime-svc stopped).
    pub(crate) fn restart_on_boot(self: &Arc<Self>) {
        for rec in self.list(true) {
            if rec.status != Status::Exited || rec.host.auto_remove {
                continue;
            }
            if rec.restarting {
                self.schedule_restart(rec.id.clone(), INITIAL_DELAY);
            } else if rec.host.restart.start_on_boot(rec.manually_stopped) {
                // As docker's daemon start: the container starts again and its user stop is
                // forgotten.
                let marked = self.update_record(&rec.id, |r| {
                    r.restarting = true;
                    r.manually_stopped = false;
                });
                if marked.is_ok() {
                    self.schedule_restart(rec.id.clone(), Duration::ZERO);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_resets() {
        let short = Duration::from_secs(1);
        let mut d = Duration::ZERO;
        let mut seen = vec![];
        for _ in 0..12 {
            d = next_delay(d, short);
            seen.push(d.as_millis());
        }
        assert_eq!(&seen[..4], &[100, 200, 400, 800]);
        assert_eq!(*seen.last().unwrap(), 60_000);
        assert_eq!(next_delay(Duration::from_secs(30), Duration::from_secs(10)), INITIAL_DELAY);
    }

    #[test]
    fn policies_decide_like_docker() {
        let on2 = RestartPolicy::parse("on-failure", 2).unwrap();
        assert!(on2.should_restart(1, 0, false) && on2.should_restart(1, 1, false));
        assert!(!on2.should_restart(1, 2, false) && !on2.should_restart(0, 0, false));
        let always = RestartPolicy::parse("always", 0).unwrap();
        assert!(always.should_restart(0, 100, false) && !always.should_restart(0, 0, true));
        assert!(always.start_on_boot(true));
        let us = RestartPolicy::parse("unless-stopped", 0).unwrap();
        assert!(us.start_on_boot(false) && !us.start_on_boot(true));
        assert!(!RestartPolicy::parse("no", 0).unwrap().should_restart(1, 0, false));
        assert!(RestartPolicy::parse("always", 3).is_err());
        assert!(RestartPolicy::parse("sometimes", 0).is_err());
    }
}
