//! The continuation token: where a waiting function left off. Small, versioned JSON.

use serde::{Deserialize, Serialize};

const VERSION: u32 = 1;
/// CodePipeline's limit on `continuationToken`.
pub const MAX_TOKEN_LEN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    #[serde(rename = "v")]
    pub version: u32,
    /// What the function is waiting for, e.g. `running`, `healthy`, `drained`, `shift`.
    pub phase: String,
    /// Unix seconds when the wait began; timeouts are measured from here.
    pub since: u64,
    /// Gradual shifts: how many steps are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<u32>,
    /// Gradual shifts: unix seconds when the last step was taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stepped_at: Option<u64>,
}

impl Progress {
    pub fn new(phase: &str, since: u64) -> Self {
        Progress {
            version: VERSION,
            phase: phase.to_owned(),
            since,
            step: None,
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
    pub fn waited(&self, now: u64) -> u64 {
        now.saturating_sub(self.since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_stays_small() {
        let mut progress = Progress::new("healthy", 1_700_000_000);
        progress.step = Some(3);
        progress.stepped_at = Some(1_700_000_120);
        let token = progress.encode();
        assert!(token.len() < 200, "{token}");
        assert_eq!(Progress::decode(&token).unwrap(), progress);
        assert_eq!(progress.waited(1_700_000_030), 30);
    }

    #[test]
    fn foreign_tokens_are_refused() {
        assert!(Progress::decode("abc").is_err());
        assert!(Progress::decode(r#"{"v":9,"phase":"x","since":1}"#)
            .unwrap_err()
            .contains("version"));
    }
}
