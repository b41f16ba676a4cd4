//! The planner: from what a function sees to what it must do. No IO, no clock: `now` is passed in.
//!
//! Every planner is written as "desired state minus observed state", so running it again after
//! its steps were carried out yields no steps: that is what makes replays and retries safe.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::event::{Action, Strategy};
use crate::names::{ReleaseId, ServiceName};
use crate::progress::{Phase, Progress};
use crate::settings::ServiceSettings;
use crate::world::*;

/// How long provision waits for instances to reach `running`.
pub const RUNNING_TIMEOUT_S: u64 = 900;
/// CodePipeline fails a Lambda invoke action 24 hours after it started, whatever its
/// continuation tokens say; cutover's own waits end an hour before that, so a wait that cannot
/// finish fails (or rolls back) while the job still belongs to us.
pub const MAX_ACTION_WAIT_S: u64 = 23 * 3_600;
pub const RECORD_TTL_S: i64 = 60;
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
        .filter(|i| i.release.as_deref() == Some(release.as_str()))
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

// ---------------------------------------------------------------- provision

pub struct ProvisionInput<'a> {
    pub service: &'a ServiceName,
    pub release: &'a ReleaseId,
    pub settings: &'a ServiceSettings,
    /// Every live instance of the service (any release).
    pub instances: &'a [Instance],
    pub addresses: &'a [Address],
    pub dns: Option<&'a Dns>,
    /// The service's release lock (from its product route).
    pub lock: Option<&'a Lock>,
    pub progress: Option<&'a Progress>,
    pub now: u64,
}

pub fn provision(input: &ProvisionInput) -> Planned {
    if let Some(conflict) = lock_conflict(input.lock, input.release, input.service, input.now) {
        return refuse(conflict);
    }
    let ProvisionInput {
        service,
        release,
        settings,
        instances,
        ..
    } = *input;
    // Dead instances are read too: one that died while this job waited for it must fail the job.
    let (dead, mine): (Vec<&Instance>, Vec<&Instance>) = of_release(instances, release)
        .into_iter()
        .partition(|i| i.state.is_dead());

    if let Some(serving) = mine.iter().find(|i| i.stage != Some(Stage::PreProduct)) {
        // A late duplicate of a finished job: nothing to do, and nothing to undo.
        return Ok(Plan::done(format!(
            "release {release} of {service} is already past provisioning ({} is {}); nothing to do",
            serving.id,
            serving.stage.map(Stage::as_str).unwrap_or("untagged")
        )));
    }
    if let Some(broken) = mine
        .iter()
        .find(|i| matches!(i.state, InstanceState::Stopping | InstanceState::Stopped))
    {
        return refuse(format!(
            "instance {} of release {release} is {}; terminate it and retry the stage",
            broken.id,
            broken.state.as_str()
        ));
    }

    let mut steps = Vec::new();
    let mut by_index: BTreeMap<u32, Vec<&Instance>> = BTreeMap::new();
    for instance in &mine {
        if let Some(index) = instance.index {
            by_index.entry(index).or_default().push(instance);
        }
    }
    // Two concurrent first invocations can both launch (where RunInstances ignores ClientToken):
    // keep the oldest of each index and terminate the rest.
    let duplicates: Vec<String> = by_index
        .values()
        .flat_map(|same| {
            let mut same = same.clone();
            same.sort_by(|a, b| (a.launched_at, &a.id).cmp(&(b.launched_at, &b.id)));
            same.into_iter().skip(1).map(|i| i.id.clone())
        })
        .chain(
            mine.iter()
                .filter(|i| i.index.is_none_or(|n| n > settings.count))
                .map(|i| i.id.clone()),
        )
        .collect();
    if !duplicates.is_empty() {
        steps.push(Step::Terminate {
            instance_ids: duplicates,
        });
    }

    let missing: Vec<u32> = (1..=settings.count)
        .filter(|n| !by_index.contains_key(n))
        .collect();
    // Waiting for `running` means every index was launched by this job: a missing one died.
    if input.progress.is_some_and(|p| p.phase == Phase::Running) {
        let died: Vec<String> = missing
            .iter()
            .filter_map(|n| {
                dead.iter()
                    .filter(|d| d.index == Some(*n))
                    .max_by_key(|d| d.launched_at)
            })
            .map(|d| {
                format!(
                    "{} (index {}) is {}{}",
                    d.id,
                    d.index.unwrap_or_default(),
                    d.state.as_str(),
                    d.state_reason
                        .as_deref()
                        .map(|r| format!(": {r}"))
                        .unwrap_or_default()
                )
            })
            .collect();
        if !died.is_empty() {
            return refuse(format!(
                "release {release} of {service}: instances died before they were running: {}; \
                 retry the stage to launch replacements",
                died.join("; ")
            ));
        }
    }
    for &index in &missing {
        let subnet = &settings.subnets[(index as usize - 1) % settings.subnets.len()];
        steps.push(Step::Launch {
            spec: LaunchSpec {
                ami: settings.ami.clone(),
                instance_type: settings.instance_type.clone(),
                subnet: subnet.clone(),
                security_groups: settings.security_groups.clone(),
                instance_profile: settings.instance_profile.clone(),
                key_name: settings.key_name.clone(),
                user_data: settings.user_data.clone(),
            },
            client_token: client_token(service, release, index),
            tags: launch_tags(service, release, settings, index),
        });
    }
    if !missing.is_empty() {
        return Ok(Plan::wait(Phase::Running).with_steps(steps));
    }

    let pending: Vec<&str> = mine
        .iter()
        .filter(|i| i.state == InstanceState::Pending)
        .map(|i| i.id.as_str())
        .collect();
    if !pending.is_empty() {
        let waited = input.progress.map(|p| p.waited(input.now)).unwrap_or(0);
        if waited > RUNNING_TIMEOUT_S {
            return refuse(format!(
                "instances {} of release {release} were not running after {waited}s",
                pending.join(", ")
            ));
        }
        return Ok(Plan::wait(Phase::Running).with_steps(steps));
    }

    let fleet: Vec<&Instance> = by_index.values().map(|same| same[0]).collect();
    let mut notes = Vec::new();
    steps.extend(address_steps(
        &settings.elastic_ips,
        input.addresses,
        &fleet,
        false,
        &mut notes,
    ));
    if let Some(dns) = input.dns {
        steps.extend(record_steps(
            dns,
            service,
            instances,
            &BTreeMap::new(),
            &BTreeSet::new(),
            &mut notes,
        ));
    }
    let names: Vec<String> = fleet
        .iter()
        .map(|i| instance_label(i, input.dns, service))
        .collect();
    let mut outputs = BTreeMap::from([
        (
            "instance_ids".to_owned(),
            fleet
                .iter()
                .map(|i| i.id.as_str())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (
            "names".to_owned(),
            fleet
                .iter()
                .filter_map(|i| i.name.as_deref())
                .collect::<Vec<_>>()
                .join(","),
        ),
    ]);
    if let Some(dns) = input.dns {
        let records: Vec<String> = fleet
            .iter()
            .filter_map(|i| instance_record_name(i, Some(dns), service))
            .map(|r| r.trim_end_matches('.').to_owned())
            .collect();
        outputs.insert("dns_names".to_owned(), records.join(","));
        outputs.insert(
            "qa_dns_name".to_owned(),
            format!(
                "pre-product.{}",
                service_suffix(dns, service).trim_end_matches('.')
            ),
        );
    }
    Ok(Plan::done(format!(
        "release {release} of {service}: {} pre-product instance(s) running: {}",
        fleet.len(),
        names.join(", ")
    ))
    .with_steps(steps)
    .with_notes(notes)
    .with_outputs(outputs))
}

fn launch_tags(
    service: &ServiceName,
    release: &ReleaseId,
    settings: &ServiceSettings,
    index: u32,
) -> BTreeMap<String, String> {
    let mut tags = settings.tags.clone();
    tags.insert(TAG_SERVICE.into(), service.to_string());
    tags.insert(TAG_STAGE.into(), Stage::PreProduct.as_str().into());
    tags.insert(TAG_RELEASE.into(), release.to_string());
    tags.insert(TAG_INDEX.into(), index.to_string());
    tags.insert(
        TAG_NAME.into(),
        instance_name(service, Stage::PreProduct, release, index),
    );
    tags
}

/// `i-0abc (1.a1b2c3d4.mobile-zum-api.internal.example)` or just the Name tag.
fn instance_label(instance: &Instance, dns: Option<&Dns>, service: &ServiceName) -> String {
    let name = instance.name.clone().unwrap_or_else(|| instance.id.clone());
    match (dns, instance_record_name(instance, dns, service)) {
        (Some(_), Some(record)) => {
            format!("{name} ({} {})", instance.id, record.trim_end_matches('.'))
        }
        _ => format!("{name} ({})", instance.id),
    }
}

// ---------------------------------------------------------------- addresses

/// Associates `allocation_ids[n-1]` with the fleet's instance of index n. With `take_over`, an
/// address held by another instance is moved (at switch time, from the retiring fleet); without,
/// it is left where it is and noted.
fn address_steps(
    allocation_ids: &[String],
    addresses: &[Address],
    fleet: &[&Instance],
    take_over: bool,
    notes: &mut Vec<String>,
) -> Vec<Step> {
    let mut steps = Vec::new();
    for (position, allocation_id) in allocation_ids.iter().enumerate() {
        let index = position as u32 + 1;
        let Some(instance) = fleet.iter().find(|i| i.index == Some(index)) else {
            continue;
        };
        let Some(address) = addresses.iter().find(|a| &a.allocation_id == allocation_id) else {
            notes.push(format!(
                "address {allocation_id} was not found; not associated"
            ));
            continue;
        };
        match address.instance_id.as_deref() {
            Some(holder) if holder == instance.id => {}
            Some(holder) if !take_over => {
                notes.push(format!(
                    "address {allocation_id} stays on {holder} until the switch"
                ));
            }
            _ => steps.push(Step::AssociateAddress {
                allocation_id: allocation_id.clone(),
                instance_id: instance.id.clone(),
            }),
        }
    }
    steps
}

// ---------------------------------------------------------------- DNS

fn service_suffix(dns: &Dns, service: &ServiceName) -> String {
    format!("{service}.{}", dns.zone_name)
}

fn instance_record_name(
    instance: &Instance,
    dns: Option<&Dns>,
    service: &ServiceName,
) -> Option<String> {
    let dns = dns?;
    let release = ReleaseId::parse(instance.release.as_deref()?).ok()?;
    Some(format!(
        "{}.{}.{}",
        instance.index?,
        release.short(),
        service_suffix(dns, service)
    ))
}

/// The A-records a service should have, given its instances (with `stage_changes` applied and
/// `leaving` left out).
pub fn desired_records(
    dns: &Dns,
    service: &ServiceName,
    instances: &[Instance],
    stage_changes: &BTreeMap<String, Stage>,
    leaving: &BTreeSet<String>,
) -> BTreeMap<String, Vec<String>> {
    let mut records: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for instance in instances {
        if leaving.contains(&instance.id) || instance.state != InstanceState::Running {
            continue;
        }
        let Some(ip) = instance.private_ip.clone() else {
            continue;
        };
        if let Some(name) = instance_record_name(instance, Some(dns), service) {
            records.entry(name).or_default().push(ip.clone());
        }
        let stage = stage_changes.get(&instance.id).copied().or(instance.stage);
        if let Some(stage @ (Stage::Product | Stage::PreProduct)) = stage {
            records
                .entry(format!("{stage}.{}", service_suffix(dns, service)))
                .or_default()
                .push(ip);
        }
    }
    for values in records.values_mut() {
        values.sort();
        values.dedup();
    }
    records
}

/// The record changes that take the service's owned records to the desired ones. A desired name
/// held by a record cutover did not write is left alone and noted.
fn record_steps(
    dns: &Dns,
    service: &ServiceName,
    instances: &[Instance],
    stage_changes: &BTreeMap<String, Stage>,
    leaving: &BTreeSet<String>,
    notes: &mut Vec<String>,
) -> Vec<Step> {
    let desired = desired_records(dns, service, instances, stage_changes, leaving);
    let mut changes = Vec::new();
    for (name, values) in &desired {
        if dns.foreign.contains(name) {
            notes.push(format!(
                "DNS record {name} was not written by cutover (no ownership record); left as it is"
            ));
            continue;
        }
        let current = dns.records.get(name);
        if current.map(|r| (&r.values, r.ttl)) != Some((values, RECORD_TTL_S)) {
            changes.push(RecordChange {
                action: RecordAction::Upsert,
                name: name.clone(),
                ttl: RECORD_TTL_S,
                values: values.clone(),
                marker_ttl: current.map_or(RECORD_TTL_S, |r| r.marker_ttl),
            });
        }
    }
    for (name, record) in &dns.records {
        if !desired.contains_key(name) {
            // Exactly what was read: Route53 rejects a DELETE whose TTL or values differ.
            changes.push(RecordChange {
                action: RecordAction::Delete,
                name: name.clone(),
                ttl: record.ttl,
                values: record.values.clone(),
                marker_ttl: record.marker_ttl,
            });
        }
    }
    if changes.is_empty() {
        Vec::new()
    } else {
        vec![Step::ChangeRecords {
            zone_id: dns.zone_id.clone(),
            service: service.to_string(),
            changes,
        }]
    }
}

// ---------------------------------------------------------------- register-target

pub struct RegisterInput<'a> {
    pub service: &'a ServiceName,
    pub release: &'a ReleaseId,
    pub settings: &'a ServiceSettings,
    pub alb: &'a Alb,
    pub instances: &'a [Instance],
    pub progress: Option<&'a Progress>,
    pub now: u64,
}

pub fn register(input: &RegisterInput) -> Planned {
    let RegisterInput {
        service,
        release,
        alb,
        ..
    } = *input;
    let mine: Vec<&Instance> = of_release(input.instances, release)
        .into_iter()
        .filter(|i| i.state == InstanceState::Running)
        .collect();
    if mine.is_empty() {
        return refuse(format!(
            "no running instances of release {release} for service {service}: run provision first"
        ));
    }
    let product = match alb.product_slot() {
        Ok(slot) => slot,
        Err(why) => return refuse(format!("cannot pick the idle slot: {why}")),
    };
    let idle = alb.slot(product.other());
    let serving: Vec<&str> = mine
        .iter()
        .filter(|i| alb.slot(product).has(&i.id))
        .map(|i| i.id.as_str())
        .collect();
    if !serving.is_empty() {
        if serving.len() == mine.len() {
            // A late duplicate after the switch: the release already serves product.
            return Ok(Plan::done(format!(
                    "release {release} of {service} already serves product from the {product} slot; nothing to do"
                )));
        }
        return refuse(format!(
            "instances {} of release {release} are registered in the product slot {product}, others are not; fix the registrations by hand",
            serving.join(", ")
        ));
    }
    let lock = alb.product.lock.as_ref();
    if let Some(conflict) = lock_conflict(lock, release, service, input.now) {
        return refuse(conflict);
    }
    if !holds_lock(lock, release) {
        // Claim, then verify on the next invocation: a racing claim that landed in between
        // overwrites ours, and exactly one of the two sees its own name there.
        let claim = Lock {
            release: release.to_string(),
            since: input.now,
        };
        return Ok(Plan::wait(Phase::Lock).with_steps(vec![Step::TagRoute {
            route: alb.product.arn.clone(),
            tags: BTreeMap::from([(TAG_LOCK.to_owned(), claim.tag_value())]),
        }]));
    }
    if let Some(wait) = wait_for_bake(input, idle) {
        return wait;
    }
    let wanted: BTreeSet<&str> = mine.iter().map(|i| i.id.as_str()).collect();
    let stale: Vec<String> = idle
        .targets
        .iter()
        .filter(|t| !wanted.contains(t.id.as_str()))
        .map(|t| t.id.clone())
        .collect();
    let missing: Vec<String> = mine
        .iter()
        .filter(|i| !idle.has(&i.id))
        .map(|i| i.id.clone())
        .collect();

    let mut steps = Vec::new();
    if !stale.is_empty() {
        steps.push(Step::DeregisterTargets {
            target_group: idle.arn.clone(),
            instance_ids: stale,
        });
    }
    if !missing.is_empty() {
        steps.push(Step::RegisterTargets {
            target_group: idle.arn.clone(),
            instance_ids: missing,
        });
    }
    if !steps.is_empty() {
        return Ok(Plan::wait(Phase::Healthy).with_steps(steps));
    }

    let unhealthy = idle.unhealthy();
    if !unhealthy.is_empty() {
        let waited = input.progress.map(|p| p.waited(input.now)).unwrap_or(0);
        if waited >= input.settings.health_timeout_s {
            return refuse(format!(
                "targets of release {release} in the {} slot were not healthy after {waited}s ({}); product was not touched",
                idle.slot,
                describe_targets(&unhealthy)
            ));
        }
        return Ok(Plan::wait(Phase::Healthy).with_steps(steps));
    }

    let to = Forward::to(&idle.arn);
    if alb.pre_product.forward != to {
        steps.push(alb.pre_product.repoint(to));
    }
    let qa = if alb.pre_product.conditions.is_empty() {
        String::new()
    } else {
        format!("; QA at {}", alb.pre_product.conditions.join(" "))
    };
    Ok(Plan::done(format!(
            "release {release} of {service}: {} healthy target(s) in the {} slot, pre-product route points there{qa}",
            mine.len(),
            idle.slot
        )).with_steps(steps).with_outputs(BTreeMap::from([("slot".to_owned(), idle.slot.as_str().to_owned())]))
)
}

/// The idle slot may still hold the previous fleet, kept for rollback until its bake ends: the
/// release waits for that (a continuation) rather than take the slot, or fails at once, naming
/// the bake's end, when that is further away than this action may wait.
fn wait_for_bake(input: &RegisterInput, idle: &TargetGroup) -> Option<Planned> {
    let bake_ends = input
        .instances
        .iter()
        .filter(|i| idle.has(&i.id) && i.stage == Some(Stage::Retired))
        .filter_map(|i| {
            i.retired_at
                .map(|at| at.saturating_add(input.settings.bake_s))
        })
        .filter(|end| *end > input.now)
        .max()?;
    let started = input
        .progress
        .filter(|p| p.phase == Phase::Bake)
        .map_or(input.now, |p| p.since);
    let message = format!(
        "the idle {} slot ({}) still holds the previous fleet, kept for rollback until {bake_ends} \
         (unix time, BAKE_S={})",
        idle.slot, idle.name, input.settings.bake_s
    );
    if bake_ends > started.saturating_add(MAX_ACTION_WAIT_S) {
        return Some(refuse(format!(
            "{message}, later than this action may wait; retry the stage after it"
        )));
    }
    Some(Ok(
        Plan::wait(Phase::Bake).with_notes(vec![format!("waiting: {message}")])
    ))
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

// ---------------------------------------------------------------- switch-listener

pub struct SwitchInput<'a> {
    pub service: &'a ServiceName,
    pub release: &'a ReleaseId,
    pub action: Action,
    pub settings: &'a ServiceSettings,
    pub alb: &'a Alb,
    pub instances: &'a [Instance],
    pub addresses: &'a [Address],
    pub dns: Option<&'a Dns>,
    pub strategy: Strategy,
    pub progress: Option<&'a Progress>,
    pub now: u64,
}

pub fn switch(input: &SwitchInput) -> Planned {
    let SwitchInput {
        service,
        release,
        alb,
        ..
    } = *input;
    let mine = of_release(input.instances, release);
    let mine_ids: Vec<&str> = mine.iter().map(|i| i.id.as_str()).collect();
    let Some(release_slot) = alb.slot_holding(&mine_ids) else {
        return refuse(format!(
            "release {release} of {service} is not registered in the blue or green slot: run register-target first"
        ));
    };
    let Some(share) = share_of(&alb.product.forward, alb, release_slot) else {
        return refuse(format!(
            "cannot switch: the product route {} forwards to {}, not only to the blue and green slots",
            alb.product.arn,
            describe_forward(&alb.product.forward)
        ));
    };
    let (to, verb) = match input.action {
        Action::Release => (release_slot, "released"),
        Action::Rollback => (release_slot.other(), "rolled back"),
    };
    let product_at_to = if to == release_slot {
        share == 100
    } else {
        share == 0
    };
    let lock = alb.product.lock.as_ref();
    if let Some(conflict) = lock_conflict(lock, release, service, input.now) {
        if input.action == Action::Release {
            return refuse(conflict);
        }
    }
    if input.action == Action::Rollback && !product_at_to {
        let in_qa: Vec<&str> = input
            .instances
            .iter()
            .filter(|i| alb.slot(to).has(&i.id) && i.stage == Some(Stage::PreProduct))
            .map(|i| i.id.as_str())
            .collect();
        if !in_qa.is_empty() {
            return refuse(format!(
                "refusing to roll back to the {to} slot: it now holds pre-product instances in QA ({}), not the previous fleet",
                in_qa.join(", ")
            ));
        }
    }
    if input.action == Action::Release && input.strategy.is_gradual() && !product_at_to {
        if let Some(step) = gradual_step(input, release_slot, share) {
            return step;
        }
    }
    let current = if product_at_to { to } else { to.other() };
    let mut cutover = cutover_steps(input, current, to)?;
    if holds_lock(lock, release) {
        cutover.steps.push(Step::UntagRoute {
            route: alb.product.arn.clone(),
            keys: vec![TAG_LOCK.to_owned()],
        });
    }
    let what = if product_at_to { "already" } else { "now" };
    Ok(Plan::done(format!(
        "release {release} of {service} {verb}: product {what} on the {to} slot ({}), pre-product on {}",
        describe_forward(&Forward::to(&alb.slot(to).arn)),
        to.other()
    ))
    .with_steps(cutover.steps)
    .with_notes(cutover.notes))
}

/// The new slot's percentage of product traffic, if product forwards only to the two slots.
fn share_of(forward: &Forward, alb: &Alb, new: Slot) -> Option<i32> {
    let new_arn = alb.slot(new).arn.as_str();
    let old_arn = alb.slot(new.other()).arn.as_str();
    if forward
        .targets
        .iter()
        .any(|t| t.arn != new_arn && t.arn != old_arn)
    {
        return None;
    }
    match forward.sole_target() {
        Some(arn) if arn == new_arn => return Some(100),
        Some(_) => return Some(0),
        None => {}
    }
    let weight = |t: &WeightedTarget| t.weight.unwrap_or(1).max(0);
    let total: i32 = forward.targets.iter().map(weight).sum();
    let to_new: i32 = forward
        .targets
        .iter()
        .filter(|t| t.arn == new_arn)
        .map(weight)
        .sum();
    (total > 0).then(|| to_new * 100 / total)
}

fn weighted(alb: &Alb, new: Slot, share: i32, sticky_s: Option<u32>) -> Forward {
    Forward {
        targets: vec![
            WeightedTarget {
                arn: alb.slot(new.other()).arn.clone(),
                weight: Some(100 - share),
            },
            WeightedTarget {
                arn: alb.slot(new).arn.clone(),
                weight: Some(share),
            },
        ],
        sticky_s,
    }
}

/// One step of a canary or linear shift, or `None` when the next step is the last (all of
/// product to `new`), which the ordinary cutover carries out. Before every step the new slot
/// must be non-empty and healthy; otherwise product goes back to the old slot in one call.
fn gradual_step(input: &SwitchInput, new: Slot, share: i32) -> Option<Planned> {
    let alb = input.alb;
    let target = alb.slot(new);
    let unhealthy = target.unhealthy();
    if target.targets.is_empty() || !unhealthy.is_empty() {
        let why = if target.targets.is_empty() {
            "it has no registered targets".to_owned()
        } else {
            format!(
                "not every target is healthy: {}",
                describe_targets(&unhealthy)
            )
        };
        if share == 0 {
            return Some(refuse(format!(
                "refusing to shift product to the {new} slot ({}): {why}",
                target.name
            )));
        }
        return Some(Ok(abort_shift(input, new, share, &why)));
    }
    if share > 0 {
        let shift = input.progress.filter(|p| p.phase == Phase::Shift);
        let stepped_at = shift.and_then(|p| p.stepped_at);
        let started = shift.map_or(input.now, |p| p.since);
        let interval = input.strategy.interval_s();
        let due = stepped_at.is_some_and(|at| at.saturating_add(interval) <= input.now);
        let hold_left = match stepped_at {
            Some(at) => at.saturating_add(interval).saturating_sub(input.now),
            None => interval,
        };
        let holds_after = input
            .strategy
            .weights()
            .iter()
            .filter(|w| **w > share && **w < 100)
            .count() as u64
            * interval;
        if input.now + hold_left + holds_after > started.saturating_add(MAX_ACTION_WAIT_S) {
            return Some(Ok(abort_shift(
                input,
                new,
                share,
                &format!(
                    "the shift would outlive CodePipeline's 24-hour action limit (started at {started})"
                ),
            )));
        }
        if !due {
            // A shift found without its hold's start (a retried stage) holds from now.
            return Some(Ok(Plan::wait(Phase::Shift)
                .holding_from(stepped_at.is_none().then_some(input.now))
                .with_notes(vec![format!("holding {share}% on the {new} slot")])));
        }
    }
    let next = input
        .strategy
        .weights()
        .into_iter()
        .find(|w| *w > share)
        .unwrap_or(100);
    if next >= 100 {
        return None;
    }
    Some(Ok(Plan::wait(Phase::Shift)
        .holding_from(Some(input.now))
        .with_steps(vec![alb.product.repoint(weighted(
            alb,
            new,
            next,
            input.settings.sticky_s,
        ))])
        .with_notes(vec![format!(
            "{next}% of product on the {new} slot"
        )])))
}

/// Product back to 100% of the old slot in one call, and the job fails with `why`.
fn abort_shift(input: &SwitchInput, new: Slot, share: i32, why: &str) -> Plan {
    let old = input.alb.slot(new.other());
    Plan::abort(format!(
            "{} shift of release {} aborted at {share}% on the {new} slot: {why}; product returned to 100% {} ({}) in one call",
            input.strategy,
            input.release,
            old.slot,
            old.name
        )).with_steps(vec![input.alb.product.repoint(Forward::to(&old.arn))])
}

/// The steps of a cutover, and what is worth telling about it.
struct Cutover {
    steps: Vec<Step>,
    notes: Vec<String>,
}

/// Moves product to `to` (if it is not there) and converges everything that follows from it:
/// pre-product on the other slot, the `cutover:previous` tag, instance stages, addresses, DNS.
fn cutover_steps(input: &SwitchInput, current: Slot, to: Slot) -> Result<Cutover, Refusal> {
    let alb = input.alb;
    let target = alb.slot(to);
    let from = alb.slot(to.other());
    let mut steps = Vec::new();

    if current != to {
        if target.targets.is_empty() {
            return refuse(format!(
                "refusing to point product at the {to} slot ({}): it has no registered targets{}",
                target.name,
                if input.action == Action::Rollback {
                    " (was the old fleet cleaned up?)"
                } else {
                    ""
                }
            ));
        }
        let unhealthy = target.unhealthy();
        if !unhealthy.is_empty() {
            return refuse(format!(
                "refusing to point product at the {to} slot ({}): not every target is healthy: {}",
                target.name,
                describe_targets(&unhealthy)
            ));
        }
        steps.push(alb.product.repoint(Forward::to(&target.arn)));
    }
    let pre_product = Forward::to(&from.arn);
    if alb.pre_product.forward != pre_product {
        steps.push(alb.pre_product.repoint(pre_product));
    }
    if alb.product.previous.as_deref() != Some(from.arn.as_str()) {
        steps.push(Step::TagRoute {
            route: alb.product.arn.clone(),
            tags: BTreeMap::from([(TAG_PREVIOUS.to_owned(), from.arn.clone())]),
        });
    }

    let promoted: Vec<&Instance> = input
        .instances
        .iter()
        .filter(|i| target.has(&i.id))
        .collect();
    let retiring: Vec<&Instance> = input
        .instances
        .iter()
        .filter(|i| from.has(&i.id) && i.stage == Some(Stage::Product))
        .collect();
    let mut stage_changes = BTreeMap::new();
    let to_promote: Vec<&Instance> = promoted
        .iter()
        .copied()
        .filter(|i| i.stage != Some(Stage::Product) || i.retired_at.is_some())
        .collect();
    // One call per instance: each gets its own Name.
    for instance in &to_promote {
        steps.push(Step::TagInstances {
            instance_ids: vec![instance.id.clone()],
            tags: stage_tags(input.service, instance, Stage::Product, None),
        });
    }
    if to_promote.iter().any(|i| i.retired_at.is_some()) {
        steps.push(Step::UntagInstances {
            instance_ids: ids(&to_promote),
            keys: vec![TAG_RETIRED_AT.to_owned()],
        });
    }
    for instance in &retiring {
        steps.push(Step::TagInstances {
            instance_ids: vec![instance.id.clone()],
            tags: stage_tags(input.service, instance, Stage::Retired, Some(input.now)),
        });
    }
    for i in &promoted {
        stage_changes.insert(i.id.clone(), Stage::Product);
    }
    for i in &retiring {
        stage_changes.insert(i.id.clone(), Stage::Retired);
    }

    let mut notes = Vec::new();
    steps.extend(address_steps(
        &input.settings.elastic_ips,
        input.addresses,
        &promoted,
        true,
        &mut notes,
    ));
    if let Some(dns) = input.dns {
        steps.extend(record_steps(
            dns,
            input.service,
            input.instances,
            &stage_changes,
            &BTreeSet::new(),
            &mut notes,
        ));
    }
    Ok(Cutover { steps, notes })
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
    let release = instance
        .release
        .as_deref()
        .and_then(|r| ReleaseId::parse(r).ok());
    if let (Some(release), Some(index)) = (release, instance.index) {
        tags.insert(
            TAG_NAME.to_owned(),
            instance_name(service, stage, &release, index),
        );
    }
    tags
}

// ---------------------------------------------------------------- cleanup

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupScope {
    /// Retired instances whose bake time is over, and abandoned pre-product instances.
    Expired,
    /// The pre-product instances of a release that failed, was canceled or superseded.
    FailedRelease(ReleaseId),
}

pub struct CleanupInput<'a> {
    pub service: &'a ServiceName,
    pub scope: CleanupScope,
    pub settings: &'a ServiceSettings,
    pub alb: &'a Alb,
    pub instances: &'a [Instance],
    pub addresses: &'a [Address],
    pub dns: Option<&'a Dns>,
    pub now: u64,
}

pub fn cleanup(input: &CleanupInput) -> Planned {
    let CleanupInput {
        service,
        alb,
        settings,
        now,
        ..
    } = *input;
    let product = match alb.product_slot() {
        Ok(slot) => alb.slot(slot),
        Err(why) => return refuse(format!("cleanup needs to know what serves product: {why}")),
    };
    let mut notes = Vec::new();
    let mut chosen: Vec<&Instance> = Vec::new();
    for instance in input.instances {
        let wanted = match &input.scope {
            CleanupScope::Expired => match instance.stage {
                Some(Stage::Retired) => instance
                    .retired_at
                    .is_some_and(|at| at.saturating_add(settings.bake_s) <= now),
                Some(Stage::Abandoned) => true,
                Some(Stage::PreProduct) => {
                    let locked = instance
                        .release
                        .as_deref()
                        .and_then(|r| ReleaseId::parse(r).ok())
                        .is_some_and(|r| holds_lock(alb.product.lock.as_ref(), &r));
                    !locked
                        && instance
                            .launched_at
                            .is_some_and(|at| at.saturating_add(PRE_PRODUCT_MAX_AGE_S) <= now)
                }
                _ => false,
            },
            CleanupScope::FailedRelease(release) => {
                matches!(instance.stage, Some(Stage::PreProduct | Stage::Abandoned))
                    && instance.release.as_deref() == Some(release.as_str())
            }
        };
        if !wanted {
            continue;
        }
        if product.has(&instance.id) {
            notes.push(format!(
                "kept {}: it is registered in the product slot {}",
                instance.id, product.slot
            ));
            continue;
        }
        chosen.push(instance);
    }
    let baking: Vec<String> = input
        .instances
        .iter()
        .filter(|i| matches!(input.scope, CleanupScope::Expired) && i.stage == Some(Stage::Retired))
        .filter(|i| !chosen.iter().any(|c| c.id == i.id))
        .filter_map(|i| {
            i.retired_at
                .map(|at| format!("{} until {}", i.id, at.saturating_add(settings.bake_s)))
        })
        .collect();
    if !baking.is_empty() {
        notes.push(format!(
            "kept for rollback (BAKE_S={}): {}",
            settings.bake_s,
            baking.join(", ")
        ));
    }
    let mut steps = Vec::new();
    if let CleanupScope::FailedRelease(release) = &input.scope {
        if holds_lock(alb.product.lock.as_ref(), release) {
            steps.push(Step::UntagRoute {
                route: alb.product.arn.clone(),
                keys: vec![TAG_LOCK.to_owned()],
            });
        }
    }
    if chosen.is_empty() {
        let done = if steps.is_empty() {
            "nothing to clean up"
        } else {
            "released the lock"
        };
        return Ok(Plan::done(format!("{service}: {done}"))
            .with_steps(steps)
            .with_notes(notes));
    }
    // Marked first, so that the sweep finishes the job as soon as the targets have drained,
    // even if this invocation ends while they drain.
    for instance in chosen.iter().filter(|i| i.stage == Some(Stage::PreProduct)) {
        steps.push(Step::TagInstances {
            instance_ids: vec![instance.id.clone()],
            tags: stage_tags(service, instance, Stage::Abandoned, None),
        });
    }
    let mut still_registered = false;
    for slot in [&alb.blue, &alb.green] {
        let registered: Vec<String> = chosen
            .iter()
            .filter(|i| slot.has(&i.id))
            .map(|i| i.id.clone())
            .collect();
        if registered.is_empty() {
            continue;
        }
        still_registered = true;
        let draining = registered.iter().all(|id| {
            slot.targets
                .iter()
                .any(|t| &t.id == id && t.health == Health::Draining)
        });
        if !draining {
            steps.push(Step::DeregisterTargets {
                target_group: slot.arn.clone(),
                instance_ids: registered,
            });
        }
    }
    if still_registered {
        // Terminate only once the targets have left their groups (the deregistration delay).
        let next = if steps.is_empty() {
            Next::wait(Phase::Drained)
        } else {
            Next::Again
        };
        return Ok(Plan::then(next).with_steps(steps).with_notes(notes));
    }

    for address in input.addresses {
        let (Some(instance_id), Some(association_id)) =
            (&address.instance_id, &address.association_id)
        else {
            continue;
        };
        if chosen.iter().any(|i| &i.id == instance_id) {
            steps.push(Step::DisassociateAddress {
                allocation_id: address.allocation_id.clone(),
                association_id: association_id.clone(),
                instance_id: instance_id.clone(),
            });
        }
    }
    if let Some(dns) = input.dns {
        let leaving = chosen.iter().map(|i| i.id.clone()).collect();
        steps.extend(record_steps(
            dns,
            service,
            input.instances,
            &BTreeMap::new(),
            &leaving,
            &mut notes,
        ));
    }
    let names: Vec<String> = chosen
        .iter()
        .map(|i| i.name.clone().unwrap_or_else(|| i.id.clone()))
        .collect();
    steps.push(Step::Terminate {
        instance_ids: ids(&chosen),
    });
    Ok(Plan::done(format!(
        "{service}: terminated {} instance(s): {}",
        chosen.len(),
        names.join(", ")
    ))
    .with_steps(steps)
    .with_notes(notes))
}

#[cfg(test)]
mod tests;
