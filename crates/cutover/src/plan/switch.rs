//! switch-listener: product to the release's slot (or back) in one call, all at once or in
//! weighted steps, and everything that follows from it.

use super::*;

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
    /// The service's `ALARMS` that exist, with their states.
    pub alarms: &'a [Alarm],
    /// Switch even while an alarm is in ALARM (shipping a fix during an incident).
    pub ignore_alarms: bool,
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
            "release {release} of {service} is not registered in the blue or green slot: run register-target first \
             (a retry after cleanup took a failed release's fleet: retry the whole Release stage, \
             or upload the build again for a new release)"
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
    if input.action == Action::Release {
        if let Some(stop) = release_may_not_go_on(input, &mine, release_slot, share) {
            return stop;
        }
    }
    let lock = alb.product.lock.as_ref();
    if let Some(conflict) = lock_conflict(lock, release, service, input.now) {
        if input.action == Action::Release {
            return refuse(conflict);
        }
    }
    if input.action == Action::Rollback && !product_at_to {
        refuse_a_rollback_onto_qa(input, to)?;
    }
    let mut alarm_notes = Vec::new();
    if input.action == Action::Release && !product_at_to {
        // Before every step of a release, and before the last: the alarms must be quiet.
        match alarm_gate(input, release_slot, share)? {
            AlarmGate::Quiet(notes) => alarm_notes = notes,
            AlarmGate::RolledBack(plan) => return Ok(plan),
        }
    }
    if input.action == Action::Release && input.strategy.is_gradual() && !product_at_to {
        if let Some(step) = gradual_step(input, release_slot, share) {
            return step.map(|plan| {
                let steps = clear_a_rollback_first(alb, plan.steps);
                Plan { steps, ..plan }.noting(alarm_notes)
            });
        }
    }
    let current = if product_at_to { to } else { to.other() };
    let mut cutover = cutover_steps(input, current, to)?;
    cutover.steps.extend(release_lock(&alb.product, release));
    let what = if product_at_to { "already" } else { "now" };
    if input.action == Action::Release {
        cutover = Cutover {
            steps: clear_a_rollback_first(alb, cutover.steps),
            ..cutover
        };
    }
    Ok(Plan::done(format!(
        "release {release} of {service} {verb}: product {what} on the {to} slot ({}), pre-product on {}",
        describe_forward(&Forward::to(&alb.slot(to).arn)),
        to.other()
    ))
    .with_steps(cutover.steps)
    .with_notes(cutover.notes)
    .noting(alarm_notes))
}

/// Why a release's switch must stop before it moves anything: it was rolled back while it ran,
/// its fleet (rolled back earlier) is past its bake and cleanup's, or it is older than the release
/// serving (a release never moves product back).
fn release_may_not_go_on(
    input: &SwitchInput,
    mine: &[&Instance],
    release_slot: Slot,
    share: i32,
) -> Option<Planned> {
    let (alb, release, service) = (input.alb, input.release, input.service);
    if let Some(stop) = stopped_by_a_rollback(input, release_slot) {
        return Some(stop);
    }
    let abandoned = mine.iter().any(|i| i.stage == Some(Stage::Abandoned));
    if abandoned && share < 100 {
        return Some(refuse(fleet_taken(
            release,
            service,
            input.settings.retry_window_s,
        )));
    }
    if let Some(ended) = bake_over(input, mine).filter(|_| share < 100) {
        return Some(refuse(format!(
            "release {release} of {service} was rolled back and its fleet kept until {ended} \
             (BAKE_S={}); it is cleanup's now: run the pipeline again for a new release",
            input.settings.bake_s
        )));
    }
    if share < 100 && is_newer(alb, input.instances, release_slot.other()) {
        return Some(refuse(format!(
            "release {release} of {service} was launched before the release serving product \
             ({}): a release never moves product back; roll back instead",
            release_in(alb, input.instances, release_slot.other())
                .map(|r| r.to_string())
                .unwrap_or_default()
        )));
    }
    None
}

/// When the bake of a retired fleet (a rolled-back release) ended, if it has: from then on the
/// fleet is cleanup's, and moving product onto it would race cleanup's deregistration.
fn bake_over(input: &SwitchInput, fleet: &[&Instance]) -> Option<u64> {
    fleet
        .iter()
        .filter(|i| i.stage == Some(Stage::Retired))
        .filter_map(|i| i.retired_at)
        .map(|at| at.saturating_add(input.settings.bake_s))
        .min()
        .filter(|ends| *ends <= input.now)
}

/// A release moving product clears a rollback mark first (`plan::route`): once it moves, an alarm
/// must be able to roll it back. Steps that do not move product (a replay) leave the mark.
fn clear_a_rollback_first(alb: &Alb, steps: Vec<Step>) -> Vec<Step> {
    let moves_product = steps
        .iter()
        .any(|s| matches!(s, Step::SetForward { route, .. } if *route == alb.product.arn));
    match clear_rollback(&alb.product).filter(|_| moves_product) {
        Some(clear) => std::iter::once(clear).chain(steps).collect(),
        None => steps,
    }
}

/// A release's job that was rolled back while it ran (a shift's continuation, a handed-over
/// invocation) stops: never resumes the shift. Product still partly on the release (a step that
/// landed after the rollback's move) goes back to the old slot in the same call a rollback makes.
fn stopped_by_a_rollback(input: &SwitchInput, release_slot: Slot) -> Option<Planned> {
    let alb = input.alb;
    let mark = alb
        .product
        .rolled_back
        .as_ref()
        .filter(|m| m.release == input.release.as_str())?;
    let rolling_back = matches!(
        RouteState::read(alb, input.instances),
        Ok(RouteState::RollingBack { .. })
    );
    let started = input.progress.map(|p| p.since);
    if !rolling_back && started.is_none_or(|since| mark.at < since) {
        // A new run of the stage after the rollback: going forward again is a release.
        return None;
    }
    let old = alb.slot(release_slot.other());
    let message = format!(
        "release {} of {} was rolled back by {} at {}: the switch stops and never resumes; product stays on the {} slot ({}); run this stage again to go forward",
        input.release, input.service, mark.by, mark.at, old.slot, old.name
    );
    if rolling_back {
        return Some(Ok(
            Plan::abort(message).with_steps(vec![alb.product.repoint(Forward::to(&old.arn))])
        ));
    }
    Some(refuse(message))
}

/// A rollback goes to the previous fleet, never to a release that is in QA in that slot now.
fn refuse_a_rollback_onto_qa(input: &SwitchInput, to: Slot) -> Result<(), Refusal> {
    let in_qa: Vec<&str> = input
        .instances
        .iter()
        .filter(|i| input.alb.slot(to).has(&i.id) && i.stage == Some(Stage::PreProduct))
        .map(|i| i.id.as_str())
        .collect();
    if in_qa.is_empty() {
        return Ok(());
    }
    refuse(format!(
        "refusing to roll back to the {to} slot: it now holds pre-product instances in QA ({}), not the previous fleet",
        in_qa.join(", ")
    ))
}

enum AlarmGate {
    /// Nothing fires (or the release ignores alarms); notes for alarms without data.
    Quiet(Vec<String>),
    /// An alarm fired mid-shift: product back to 100% of the old slot.
    RolledBack(Plan),
}

/// A release moves product only while the service's alarms are quiet. One that does not exist
/// refuses the switch, naming it; one in ALARM refuses it before anything moved, or mid-shift
/// rolls product back in one call; `INSUFFICIENT_DATA` is only noted.
fn alarm_gate(input: &SwitchInput, new: Slot, share: i32) -> Result<AlarmGate, Refusal> {
    let named = |state: AlarmState| -> Vec<&str> {
        input
            .alarms
            .iter()
            .filter(|a| a.state == state)
            .map(|a| a.name.as_str())
            .collect()
    };
    if let Some(missing) = input
        .settings
        .alarms
        .iter()
        .find(|name| !input.alarms.iter().any(|a| &a.name == *name))
    {
        return refuse(format!(
            "alarm `{missing}` (ALARMS of {}) does not exist in CloudWatch",
            input.service
        ));
    }
    let firing = named(AlarmState::Alarm);
    let notes = named(AlarmState::InsufficientData)
        .iter()
        .map(|name| format!("alarm `{name}` has insufficient data; not gating"))
        .collect();
    if firing.is_empty() || input.ignore_alarms {
        return Ok(AlarmGate::Quiet(notes));
    }
    let why = format!("alarm {} is in ALARM", firing.join(", "));
    if share > 0 {
        return Ok(AlarmGate::RolledBack(abort_shift(input, new, share, &why)));
    }
    refuse(format!(
        "{why}: the switch of release {} did not move product (set \"ignore_alarms\": true to ship a fix during an incident)",
        input.release
    ))
}

/// The new slot's percentage of product traffic, if product forwards only to the two slots.
pub(super) fn share_of(forward: &Forward, alb: &Alb, new: Slot) -> Option<i32> {
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

pub(super) fn weighted(alb: &Alb, new: Slot, share: i32, sticky_s: Option<u32>) -> Forward {
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
pub(super) fn gradual_step(input: &SwitchInput, new: Slot, share: i32) -> Option<Planned> {
    let alb = input.alb;
    let target = alb.slot(new);
    if let Some(why) = not_ready(target) {
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
pub(super) fn abort_shift(input: &SwitchInput, new: Slot, share: i32, why: &str) -> Plan {
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
        refuse_an_unready_slot(input, to)?;
        steps.push(alb.product.repoint(Forward::to(&target.arn)));
    }
    let pre_product = Forward::to(&from.arn);
    if alb.pre_product.forward != pre_product {
        steps.push(alb.pre_product.repoint(pre_product));
    }
    steps.extend(record_previous(&alb.product, from));
    let promoted: Vec<&Instance> = input
        .instances
        .iter()
        .filter(|i| target.has(&i.id))
        .collect();
    let retiring: Vec<&Instance> = input
        .instances
        .iter()
        // Not yet `product` when a rollback reads between a release's move and its retagging.
        .filter(|i| from.has(&i.id) && !i.state.is_dead() && i.stage != Some(Stage::Retired))
        .collect();
    steps.extend(restage(input, &promoted, &retiring));
    let stage_changes: BTreeMap<String, Stage> = promoted
        .iter()
        .map(|i| (i.id.clone(), Stage::Product))
        .chain(retiring.iter().map(|i| (i.id.clone(), Stage::Retired)))
        .collect();
    let mut notes = Vec::new();
    steps.extend(address_steps(
        input.service,
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

/// Product only moves to a slot with targets, every one of them healthy.
fn refuse_an_unready_slot(input: &SwitchInput, to: Slot) -> Result<(), Refusal> {
    let target = input.alb.slot(to);
    let Some(why) = not_ready(target) else {
        return Ok(());
    };
    let hint = if input.action == Action::Rollback && target.targets.is_empty() {
        " (was the old fleet cleaned up?)"
    } else {
        ""
    };
    refuse(format!(
        "refusing to point product at the {to} slot ({}): {why}{hint}",
        target.name
    ))
}

/// The serving fleet becomes `product` (one call per instance: each gets its own Name), the
/// fleet it replaces `retired` with the time, kept for rollback until its bake ends.
fn restage(input: &SwitchInput, promoted: &[&Instance], retiring: &[&Instance]) -> Vec<Step> {
    let mut steps = Vec::new();
    let to_promote: Vec<&Instance> = promoted
        .iter()
        .copied()
        .filter(|i| i.stage != Some(Stage::Product) || i.retired_at.is_some())
        .collect();
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
    for instance in retiring {
        steps.push(Step::TagInstances {
            instance_ids: vec![instance.id.clone()],
            tags: stage_tags(input.service, instance, Stage::Retired, Some(input.now)),
        });
    }
    steps
}
