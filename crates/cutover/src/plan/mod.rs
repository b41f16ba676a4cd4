//! The planner: from what a function sees to what it must do. No IO, no clock: `now` is passed in.
//!
//! Every planner is written as "desired state minus observed state", so running it again after
//! its steps were carried out yields no steps: that is what makes replays and retries safe.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::event::{Action, Strategy};
use crate::names::{ReleaseId, ServiceName};
use crate::progress::{Phase, Progress};
use crate::settings::{Fleet, InstanceSpec, ServiceSettings};
use crate::world::*;

mod addresses;
mod cleanup;
mod groups;
mod provision;
mod records;
mod register;
mod retry;
mod rollback;
mod route;
mod switch;

use self::addresses::*;
pub use self::cleanup::*;
use self::groups::provision_group;
pub use self::groups::{leftovers, through_groups};
pub use self::provision::*;
pub use self::records::*;
pub use self::register::*;
pub use self::retry::fleet_taken;
pub use self::rollback::*;
pub use self::route::*;
pub use self::switch::*;

/// How long provision waits for instances to reach `running`.
pub const RUNNING_TIMEOUT_S: u64 = 900;
pub use crate::progress::MAX_ACTION_WAIT_S;
pub const RECORD_TTL_S: i64 = 60;
/// switch-listener's Lambda timeout as `infra/template.yaml` sets it (and passes it in
/// `CUTOVER_SWITCH_LISTENER_TIMEOUT_S`): every call of a rollback lands within this of its reads.
pub const SWITCH_LISTENER_TIMEOUT_S: u64 = 120;
/// A lock older than this is taken over: CodePipeline's manual approval times out after 7 days,
/// so no live execution holds a lock this long.
pub const LOCK_STALE_S: u64 = 7 * 86_400 + 3_600;
/// Pre-product instances older than this, whose release does not hold the lock, are abandoned
/// (their execution ended without a cleanup event reaching us) and swept.
pub const PRE_PRODUCT_MAX_AGE_S: u64 = LOCK_STALE_S;

/// Why `release` may not go on, given the service's lock.
fn lock_conflict(
    lock: Option<&Lock>,
    release: &ReleaseId,
    service: &ServiceName,
    now: u64,
) -> Option<String> {
    let lock = lock?;
    let held_for = now.saturating_sub(lock.since);
    (lock.release != release.as_str() && held_for < LOCK_STALE_S).then(|| {
        format!(
            "service {service} is locked by release {} (held for {held_for}s, since {}); wait for it to finish, \
             or stop that pipeline execution; a lock older than {LOCK_STALE_S}s is taken over",
            lock.release, lock.since
        )
    })
}

/// Whether `release` may take the service, given its lock and what CodePipeline says of the
/// execution holding it: an ended execution's lock is free at once (in QUEUED mode a newer
/// execution is in the stage, so the holder can no longer be retried); a running one is waited
/// for; without an answer, only a stale lock is taken over.
fn lock_verdict(
    lock: Option<&Lock>,
    holder: Option<&Execution>,
    release: &ReleaseId,
    service: &ServiceName,
    now: u64,
    progress: Option<&Progress>,
) -> Result<Option<Plan>, Refusal> {
    let Some(conflict) = lock_conflict(lock, release, service, now) else {
        return Ok(None);
    };
    match holder {
        Some(Execution::Ended(_)) => Ok(None),
        Some(Execution::Running(status)) => {
            let waited = Progress::waited_for(progress, Phase::LockHolder, now);
            if waited >= MAX_ACTION_WAIT_S {
                return refuse(format!("{conflict}; its execution is still {status}"));
            }
            Ok(Some(Plan::wait(Phase::LockHolder).with_notes(vec![
                format!("{conflict}; its execution is {status}: waiting for it to end"),
            ])))
        }
        None => refuse(conflict),
    }
}

fn holds_lock(lock: Option<&Lock>, release: &ReleaseId) -> bool {
    lock.is_some_and(|l| l.release == release.as_str())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "next", content = "detail", rename_all = "kebab-case")]
pub enum Next {
    /// The job is done; the text says what happened.
    Done(String),
    /// Carry out the steps, then look again at once (e.g. a deregistration that may have drained).
    Again,
    /// Carry out the steps, then wait for `phase` through a continuation token. `hold_from`
    /// (gradual shifts) is when the current step's hold began, when that changes.
    Wait {
        phase: Phase,
        #[serde(skip_serializing_if = "Option::is_none")]
        hold_from: Option<u64>,
    },
    /// Carry out the steps (an automatic rollback), then fail the job with this message.
    Abort(String),
}

impl Next {
    pub fn wait(phase: Phase) -> Self {
        Next::Wait {
            phase,
            hold_from: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub steps: Vec<Step>,
    pub next: Next,
    /// Things worth telling a person that are not steps (e.g. an EIP kept on a serving instance).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// CodePipeline output variables of a finished job.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub outputs: BTreeMap<String, String>,
}

impl Plan {
    fn then(next: Next) -> Self {
        Plan {
            steps: Vec::new(),
            next,
            notes: Vec::new(),
            outputs: BTreeMap::new(),
        }
    }

    pub fn done(summary: impl Into<String>) -> Self {
        Plan::then(Next::Done(summary.into()))
    }

    pub fn wait(phase: Phase) -> Self {
        Plan::then(Next::wait(phase))
    }

    pub fn again() -> Self {
        Plan::then(Next::Again)
    }

    pub fn abort(message: impl Into<String>) -> Self {
        Plan::then(Next::Abort(message.into()))
    }

    /// A gradual shift's hold restarts (or starts) at this time.
    fn holding_from(mut self, at: Option<u64>) -> Self {
        if let Next::Wait { hold_from, .. } = &mut self.next {
            *hold_from = at;
        }
        self
    }

    pub fn with_steps(mut self, steps: Vec<Step>) -> Self {
        self.steps = steps;
        self
    }

    pub fn with_notes(mut self, notes: Vec<String>) -> Self {
        self.notes = notes;
        self
    }

    /// More notes, after those it has.
    pub fn noting(mut self, notes: Vec<String>) -> Self {
        self.notes.extend(notes);
        self
    }

    pub fn with_outputs(mut self, outputs: BTreeMap<String, String>) -> Self {
        self.outputs = outputs;
        self
    }
}

/// Why a function will not go on. A refusal carries no steps, so it changes nothing; the job
/// fails with its message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Refusal(pub String);

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a planner decides: steps and what comes next, or a refusal.
pub type Planned = Result<Plan, Refusal>;

fn refuse<T>(message: impl Into<String>) -> Result<T, Refusal> {
    Err(Refusal(message.into()))
}

fn of_release<'a>(instances: &'a [Instance], release: &ReleaseId) -> Vec<&'a Instance> {
    instances
        .iter()
        .filter(|i| i.release.as_ref() == Some(release))
        .collect()
}

fn ids(instances: &[&Instance]) -> Vec<String> {
    instances.iter().map(|i| i.id.clone()).collect()
}

pub fn instance_name(
    service: &ServiceName,
    stage: Stage,
    release: &ReleaseId,
    index: u32,
) -> String {
    format!("{service}-{stage}-{}-{index}", release.short())
}

/// Deterministic per (service, release, index), so a retried RunInstances is deduplicated by EC2.
pub fn client_token(service: &ServiceName, release: &ReleaseId, index: u32) -> String {
    // ClientToken allows 64 ASCII characters; a long release id is folded with FNV-1a.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in format!("{service}/{release}/{index}").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("cutover-{}-{index}-{hash:016x}", release.short())
}

/// Why a target group that already takes part of product may not take all of it: it has no
/// healthy target, or one that is failing. A target still in its initial registration is an
/// instance its group launched as it scaled out (the load balancer sends it nothing until it
/// passes its checks), not a reason to refuse a rollback to 100 % of the old slot.
fn not_ready_to_keep_serving(group: &TargetGroup) -> Option<String> {
    let failing: Vec<&Target> = group
        .targets
        .iter()
        .filter(|t| !matches!(t.health, Health::Healthy | Health::Initial))
        .collect();
    if !group.targets.iter().any(|t| t.health == Health::Healthy) {
        Some("it has no healthy target".to_owned())
    } else if !failing.is_empty() {
        Some(format!(
            "targets are failing: {}",
            describe_targets(&failing)
        ))
    } else {
        None
    }
}

/// Why product may not go to this target group: it has no targets, or not every one is healthy.
fn not_ready(group: &TargetGroup) -> Option<String> {
    let unhealthy = group.unhealthy();
    if group.targets.is_empty() {
        Some("it has no registered targets".to_owned())
    } else if !unhealthy.is_empty() {
        Some(format!(
            "not every target is healthy: {}",
            describe_targets(&unhealthy)
        ))
    } else {
        None
    }
}

fn describe_targets(targets: &[&Target]) -> String {
    targets
        .iter()
        .map(|t| match &t.reason {
            Some(reason) => format!("{} {}: {reason}", t.id, t.health.as_str()),
            None => format!("{} {}", t.id, t.health.as_str()),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `cutover:stage` (and `cutover:retired-at`) plus the Name that goes with the new stage.
fn stage_tags(
    service: &ServiceName,
    instance: &Instance,
    stage: Stage,
    retired_at: Option<u64>,
) -> BTreeMap<String, String> {
    let mut tags = BTreeMap::from([(TAG_STAGE.to_owned(), stage.as_str().to_owned())]);
    if let Some(at) = retired_at {
        tags.insert(TAG_RETIRED_AT.to_owned(), at.to_string());
    }
    if let (Some(release), Some(index)) = (&instance.release, instance.index) {
        tags.insert(
            TAG_NAME.to_owned(),
            instance_name(service, stage, release, index),
        );
    }
    tags
}

/// A small world in memory, for the planners' tests and the job loop's.
#[cfg(test)]
pub(crate) mod tests;
