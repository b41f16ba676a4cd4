//! cleanup: drain, release and terminate what no longer serves.

use super::*;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CleanupScope {
    /// Retired instances whose bake time is over, and abandoned pre-product instances.
    Expired,
    /// The pre-product instances of a release that was canceled, superseded or stopped, or
    /// failed past its retry window.
    FailedRelease(ReleaseId),
    /// A release whose execution failed: kept for a retry of the failed action while one can
    /// still succeed (`retry::kept_until`), else as `FailedRelease`.
    FailedExecution(ReleaseId),
    /// A failed release's execution resumed (its failed action retried): its fleet is taken back.
    Resumed(ReleaseId),
}

pub struct CleanupInput<'a> {
    pub service: &'a ServiceName,
    pub scope: CleanupScope,
    pub settings: &'a ServiceSettings,
    pub alb: &'a Alb,
    pub instances: &'a [Instance],
    /// `FLEET=asg`: the service's cutover groups. An instance of a group attached to the product
    /// slot serves (or is about to: Auto Scaling registers what it launches).
    pub groups: &'a [Group],
    pub addresses: &'a [Address],
    pub dns: Option<&'a Dns>,
    /// The service's alarms: none of the retired fleet goes while one is in ALARM.
    pub alarms: &'a [Alarm],
    /// How long past its bake a retired fleet is still left alone: twice switch-listener's
    /// timeout. A rollback may start until the bake ends (or while a switch still retires the
    /// fleet, its time up to one timeout old), and its calls land within one timeout: by then it
    /// has landed, so cleanup never deregisters a fleet a rollback is moving product to.
    pub takeover_s: u64,
    /// What CodePipeline says of the pre-product fleets' executions, by release (`Expired`).
    pub executions: &'a BTreeMap<String, Execution>,
    pub progress: Option<&'a Progress>,
    pub now: u64,
}

pub fn cleanup(input: &CleanupInput) -> Planned {
    match &input.scope {
        CleanupScope::Resumed(release) => retry::take_back(input, release),
        CleanupScope::FailedExecution(release) => match retry::kept_until(input, release) {
            Some(until) => Ok(retry::keep_for_retry(input, release, until)),
            None => take_fleets(&CleanupInput {
                scope: CleanupScope::FailedRelease(release.clone()),
                ..*input
            }),
        },
        CleanupScope::Expired | CleanupScope::FailedRelease(_) => take_fleets(input),
    }
}

/// The fleets the scope names, drained then terminated, never one product forwards to.
fn take_fleets(input: &CleanupInput) -> Planned {
    let (service, alb) = (input.service, input.alb);
    let product = match alb.product_slot() {
        Ok(slot) => alb.slot(slot),
        // Both slots serve while product is split: nothing goes until one does alone, and the
        // team is not told every five minutes.
        Err(_) if RouteState::read(alb, input.instances).is_ok_and(|s| s.is_moving()) => {
            return Ok(Plan::wait(Phase::Shift).with_notes(vec![format!(
                "{service}: product is split between the slots (a gradual shift or a rollback in flight); cleanup waits"
            )]))
        }
        Err(why) => return refuse(format!("cleanup needs to know what serves product: {why}")),
    };
    let mut notes = Vec::new();
    let mut chosen: Vec<&Instance> = Vec::new();
    for instance in input.instances.iter().filter(|i| wanted(input, i)) {
        if product.has(&instance.id) {
            notes.push(format!(
                "kept {}: it is registered in the product slot {}",
                instance.id, product.slot
            ));
        } else {
            chosen.push(instance);
        }
    }
    notes.extend(baking_note(input, &chosen));
    if let Some(hold) = hold_while_alarms_fire(input, &chosen) {
        return hold.map(|plan| plan.noting(notes));
    }
    let (mut steps, releases_lock) = bookkeeping(input, product, &mut notes);
    if chosen.is_empty() {
        let done = match (releases_lock, steps.is_empty()) {
            (true, _) => "released the lock",
            (false, true) => "nothing to clean up",
            (false, false) => "nothing to clean up; tags brought up to date",
        };
        return Ok(Plan::done(format!("{service}: {done}"))
            .with_steps(steps)
            .with_notes(notes));
    }
    // Marked first, with the time, so that the sweep finishes the job even if this invocation
    // ends before it does.
    for instance in chosen.iter().filter(|i| i.stage == Some(Stage::PreProduct)) {
        steps.push(Step::TagInstances {
            instance_ids: vec![instance.id.clone()],
            tags: stage_tags(service, instance, Stage::Abandoned, Some(input.now)),
        });
    }
    let (settling, chosen): (Vec<&Instance>, Vec<&Instance>) = chosen
        .into_iter()
        .partition(|i| abandoned_too_recently(input, i));
    if let Some(from) = settling.iter().map(|i| abandoned_until(input, i)).max() {
        notes.push(format!(
            "abandoned {}: registered in a slot, they leave it from {from} (a switch that read them \
             before they were abandoned may still be landing)",
            names(&settling)
        ));
        if chosen.is_empty() {
            return Ok(Plan::done(format!(
                "{service}: abandoned {} instance(s); the sweep takes them from {from}",
                settling.len()
            ))
            .with_steps(steps)
            .with_notes(notes));
        }
    }
    let (deregistrations, still_registered) = deregistrations(alb, &chosen);
    steps.extend(deregistrations);
    if still_registered {
        // Terminate only once the targets have left their groups (the deregistration delay).
        let plan = if steps.is_empty() {
            Plan::wait(Phase::Drained)
        } else {
            Plan::again()
        };
        return Ok(plan.with_steps(steps).with_notes(notes));
    }
    Ok(terminate(input, &chosen, steps, notes))
}

/// What a cleanup writes besides taking fleets: the stages restaged to match the route, the
/// failure's time on fleets kept for a retry, and a failed release's lock; whether the lock goes.
fn bookkeeping(
    input: &CleanupInput,
    product: &TargetGroup,
    notes: &mut Vec<String>,
) -> (Vec<Step>, bool) {
    let mut steps = stage_repairs(input, product, notes);
    for release in kept_for_retry(input) {
        steps.extend(retry::mark_failed(input, release));
        notes.push(format!(
            "kept the fleet of release {release} for a retry of its failed action"
        ));
    }
    let lock = match &input.scope {
        CleanupScope::FailedRelease(release) => release_lock(&input.alb.product, release),
        _ => None,
    };
    let releases_lock = lock.is_some();
    steps.extend(lock);
    (steps, releases_lock)
}

/// A fleet being abandoned (a failed release's, or one the sweep finds) may have been read as
/// pre-product by a switch still landing its move there (a late duplicate of the release's
/// switch job): registered in a slot, it stays until no such switch can be in flight, the same
/// margin a retired fleet gets past its bake (`CleanupInput::takeover_s`).
fn abandoned_too_recently(input: &CleanupInput, instance: &Instance) -> bool {
    let registered = input.alb.blue.has(&instance.id) || input.alb.green.has(&instance.id);
    registered
        && matches!(instance.stage, Some(Stage::PreProduct | Stage::Abandoned))
        && abandoned_until(input, instance) > input.now
}

fn abandoned_until(input: &CleanupInput, instance: &Instance) -> u64 {
    let abandoned_at = match instance.stage {
        // Abandoned before its time was recorded: long ago.
        Some(Stage::Abandoned) => instance.retired_at.unwrap_or(0),
        _ => input.now,
    };
    abandoned_at.saturating_add(input.takeover_s)
}

/// The fleets' stage tags brought in line with the route where two writers' bookkeeping landed
/// out of order (a switch's retagging after a rollback that read before it): what product
/// forwards to is `product`; a `product` fleet it does not forward to is `retired` from now,
/// kept for a bake like any retired fleet. The sweep repairs; a failed release's cleanup does not.
fn stage_repairs(
    input: &CleanupInput,
    product: &TargetGroup,
    notes: &mut Vec<String>,
) -> Vec<Step> {
    if !matches!(input.scope, CleanupScope::Expired) {
        return Vec::new();
    }
    let (serving, standing): (Vec<&Instance>, Vec<&Instance>) = input
        .instances
        .iter()
        .filter(|i| !i.state.is_dead())
        .partition(|i| {
            product.has(&i.id)
                || input
                    .groups
                    .iter()
                    .any(|g| g.has(&i.id) && g.target_groups.contains(&product.arn))
        });
    let promote: Vec<&Instance> = serving
        .into_iter()
        .filter(|i| i.stage != Some(Stage::Product) || i.retired_at.is_some())
        .collect();
    let retire: Vec<&Instance> = standing
        .into_iter()
        .filter(|i| i.stage == Some(Stage::Product))
        .collect();
    let mut steps: Vec<Step> = promote
        .iter()
        .map(|i| Step::TagInstances {
            instance_ids: vec![i.id.clone()],
            tags: stage_tags(input.service, i, Stage::Product, None),
        })
        .collect();
    let untag: Vec<&Instance> = promote
        .iter()
        .copied()
        .filter(|i| i.retired_at.is_some())
        .collect();
    if !untag.is_empty() {
        steps.push(Step::UntagInstances {
            instance_ids: ids(&untag),
            keys: vec![TAG_RETIRED_AT.to_owned()],
        });
    }
    steps.extend(retire.iter().map(|i| Step::TagInstances {
        instance_ids: vec![i.id.clone()],
        tags: stage_tags(input.service, i, Stage::Retired, Some(input.now)),
    }));
    if !promote.is_empty() || !retire.is_empty() {
        notes.push(format!(
            "restaged to match the product route: {} now product, {} now retired (kept for rollback until {})",
            names(&promote),
            names(&retire),
            input.now.saturating_add(input.settings.bake_s)
        ));
    }
    steps
}

fn names(instances: &[&Instance]) -> String {
    match instances {
        [] => "none".to_owned(),
        some => some
            .iter()
            .map(|i| i.id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The retired fleet is what rollback needs: while one of the service's alarms is in ALARM it
/// stays, and the job waits (within CodePipeline's action limit, then fails, keeping it).
fn hold_while_alarms_fire(input: &CleanupInput, chosen: &[&Instance]) -> Option<Planned> {
    let firing: Vec<&str> = input
        .alarms
        .iter()
        .filter(|a| a.state == AlarmState::Alarm)
        .map(|a| a.name.as_str())
        .collect();
    let retired = chosen.iter().any(|i| i.stage == Some(Stage::Retired));
    if firing.is_empty() || !retired {
        return None;
    }
    let firing = firing.join(", ");
    let waited = Progress::waited_for(input.progress, Phase::Alarm, input.now);
    if waited > MAX_ACTION_WAIT_S {
        return Some(refuse(format!(
            "alarm {firing} has been in ALARM for {waited}s: the retired fleet of {} is kept for rollback",
            input.service
        )));
    }
    Some(Ok(Plan::wait(Phase::Alarm).with_notes(vec![format!(
        "alarm {firing} is in ALARM: the retired fleet is kept for rollback"
    )])))
}

/// Whether `instance` is one this cleanup removes (before the product-slot guard).
fn wanted(input: &CleanupInput, instance: &Instance) -> bool {
    let now = input.now;
    match &input.scope {
        CleanupScope::Expired => match instance.stage {
            Some(Stage::Retired) => instance.retired_at.is_some_and(|at| {
                at.saturating_add(input.settings.bake_s)
                    .saturating_add(input.takeover_s)
                    <= now
            }),
            Some(Stage::Abandoned) => true,
            Some(Stage::PreProduct) => {
                let release = instance.release.as_ref();
                // A fleet whose execution has ended is abandoned, whether or not its FAILED
                // event came (or a late retry of its provision launched after that event),
                // unless it is kept for a retry of the failed action.
                let ended = release
                    .and_then(|r| input.executions.get(r.as_str()))
                    .is_some_and(Execution::is_known_to_have_ended)
                    && !release.is_some_and(|r| kept_for_retry(input).any(|kept| kept == r));
                let locked =
                    release.is_some_and(|r| holds_lock(input.alb.product.lock.as_ref(), r));
                ended
                    || !locked
                        && instance
                            .launched_at
                            .is_some_and(|at| at.saturating_add(PRE_PRODUCT_MAX_AGE_S) <= now)
            }
            _ => false,
        },
        CleanupScope::FailedRelease(release) => {
            matches!(instance.stage, Some(Stage::PreProduct | Stage::Abandoned))
                && instance.release.as_ref() == Some(release)
        }
        CleanupScope::FailedExecution(_) | CleanupScope::Resumed(_) => false,
    }
}

/// The sweep's releases whose execution failed and whose fleet is kept for a retry.
fn kept_for_retry<'a>(input: &'a CleanupInput) -> impl Iterator<Item = &'a ReleaseId> {
    let failed = input
        .executions
        .iter()
        .filter(|(_, e)| matches!(e, Execution::Ended(status) if status == "Failed"))
        .map(|(release, _)| release.as_str());
    let releases: BTreeSet<&ReleaseId> = input
        .instances
        .iter()
        .filter(|i| i.stage == Some(Stage::PreProduct) && !i.state.is_dead())
        .filter_map(|i| i.release.as_ref())
        .filter(|r| failed.clone().any(|f| f == r.as_str()))
        .collect();
    releases.into_iter().filter(move |r| {
        matches!(input.scope, CleanupScope::Expired) && retry::kept_until(input, r).is_some()
    })
}

/// Retired instances kept for rollback, and until when.
fn baking_note(input: &CleanupInput, chosen: &[&Instance]) -> Option<String> {
    if !matches!(input.scope, CleanupScope::Expired) {
        return None;
    }
    let bake_s = input.settings.bake_s;
    let baking: Vec<String> = input
        .instances
        .iter()
        .filter(|i| i.stage == Some(Stage::Retired))
        .filter(|i| !chosen.iter().any(|c| c.id == i.id))
        .filter_map(|i| {
            i.retired_at
                .map(|at| format!("{} until {}", i.id, at.saturating_add(bake_s)))
        })
        .collect();
    (!baking.is_empty())
        .then(|| format!("kept for rollback (BAKE_S={bake_s}): {}", baking.join(", ")))
}

/// Deregistrations of the chosen instances still in a slot (none for those already draining),
/// and whether any still is.
fn deregistrations(alb: &Alb, chosen: &[&Instance]) -> (Vec<Step>, bool) {
    let mut steps = Vec::new();
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
    (steps, still_registered)
}

/// Drained: release their addresses and records, then terminate them.
fn terminate(
    input: &CleanupInput,
    chosen: &[&Instance],
    mut steps: Vec<Step>,
    mut notes: Vec<String>,
) -> Plan {
    for address in input.addresses {
        let (Some(instance_id), Some(association_id)) =
            (&address.instance_id, &address.association_id)
        else {
            continue;
        };
        // Only the service's own addresses: terminating the instance releases the rest.
        if chosen.iter().any(|i| &i.id == instance_id) && is_the_services(address, input.service) {
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
            input.service,
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
        instance_ids: ids(chosen),
    });
    Plan::done(format!(
        "{}: terminated {} instance(s): {}",
        input.service,
        chosen.len(),
        names.join(", ")
    ))
    .with_steps(steps)
    .with_notes(notes)
}
