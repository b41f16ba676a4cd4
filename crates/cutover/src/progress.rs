//! The continuation token: where a waiting function left off. Small, versioned JSON.

use serde::{Deserialize, Serialize};

const VERSION: u32 = 1;
/// CodePipeline fails a Lambda invoke action 24 hours after it started, whatever its
/// continuation tokens say; cutover's own waits end an hour before that, so a wait that cannot
/// finish fails (or rolls back) while the job still belongs to us.
pub const MAX_ACTION_WAIT_S: u64 = 23 * 3_600;
/// CodePipeline's limit on `continuationToken`.
pub const MAX_TOKEN_LEN: usize = 2048;

/// What a job waits for between invocations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    /// Provision: the launched instances to be `running`.
    Running,
    /// Register-target: its claim of the release lock to be verified.
    Lock,
    /// Provision, register-target: the execution holding the service's lock to end.
    LockHolder,
    /// Register-target: the previous fleet's bake to end in the idle slot.
    Bake,
    /// Register-target: the release's targets to be healthy.
    Healthy,
    /// Cleanup: deregistered targets to drain.
    Drained,
    /// Switch-listener: a gradual shift's hold to end.
    Shift,
    /// Cleanup: the service's alarms to leave ALARM before the retired fleet goes.
    Alarm,
    /// Any function: the Lambda deadline came first; the next invocation goes on.
    Handover,
    /// Any function: more rounds were needed than one invocation makes.
    Convergence,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Running => "running",
            Phase::Lock => "lock",
            Phase::LockHolder => "lock-holder",
            Phase::Bake => "bake",
            Phase::Healthy => "healthy",
            Phase::Drained => "drained",
            Phase::Shift => "shift",
            Phase::Alarm => "alarm",
            Phase::Handover => "handover",
            Phase::Convergence => "convergence",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    #[serde(rename = "v")]
    pub version: u32,
    pub phase: Phase,
    /// Unix seconds when the wait began; timeouts are measured from here.
    pub since: u64,
    /// Gradual shifts: unix seconds when the current step's hold began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stepped_at: Option<u64>,
}

impl Progress {
    pub fn new(phase: Phase, since: u64) -> Self {
        Progress {
            version: VERSION,
            phase,
            since,
            stepped_at: None,
        }
    }

    pub fn encode(&self) -> String {
        let token = serde_json::to_string(self).expect("a Progress always serialises");
        debug_assert!(token.len() <= MAX_TOKEN_LEN);
        token
    }

    pub fn decode(token: &str) -> Result<Self, String> {
        let progress: Progress = serde_json::from_str(token)
            .map_err(|e| format!("not a cutover continuation token: {e}"))?;
        if progress.version != VERSION {
            return Err(format!(
                "token version {} is not {VERSION}",
                progress.version
            ));
        }
        Ok(progress)
    }

    /// Seconds since the wait began (0 if the clock went backwards).
    /// How long a job has waited for `phase`, when its progress says it waits for that (0 for a
    /// first invocation, or one that waited for something else before).
    pub fn waited_for(progress: Option<&Progress>, phase: Phase, now: u64) -> u64 {
        progress
            .filter(|p| p.phase == phase)
            .map_or(0, |p| p.waited(now))
    }

    pub fn waited(&self, now: u64) -> u64 {
        now.saturating_sub(self.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_stays_small() {
        let mut progress = Progress::new(Phase::Shift, 1_700_000_000);
        progress.stepped_at = Some(1_700_000_120);
        let token = progress.encode();
        assert!(token.len() < 200, "{token}");
        assert_eq!(Progress::decode(&token).unwrap(), progress);
        assert_eq!(progress.waited(1_700_000_030), 30);
    }

    #[test]
    fn foreign_tokens_are_refused() {
        assert!(Progress::decode("abc").is_err());
        assert!(Progress::decode(r#"{"v":1,"phase":"elsewhere","since":1}"#).is_err());
        assert!(Progress::decode(r#"{"v":9,"phase":"shift","since":1}"#)
            .unwrap_err()
            .contains("version"));
    }
}
