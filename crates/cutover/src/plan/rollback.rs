//! Rollbacks, whoever sends them (a person, an alarm, a pipeline job), read through
//! `RouteState`: a rollback when product is already a rollback moves nothing, one in flight is
//! finished, one in the middle of a shift puts product on 100 % of the old slot in one call.

use super::*;

/// Who asks for a rollback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger<'a> {
    /// A person, invoking switch-listener directly.
    Hand,
    /// A CloudWatch alarm's state-change event: its alarm, and the event's time.
    Alarm { name: &'a str, at: Option<u64> },
    /// A CodePipeline job with `"action": "rollback"`.
    Pipeline,
}

impl Trigger<'_> {
    fn by(&self) -> String {
        match self {
            Trigger::Hand => "hand".to_owned(),
            Trigger::Alarm { name, .. } => format!("alarm:{name}"),
            Trigger::Pipeline => "pipeline".to_owned(),
        }
    }
}

pub struct RollbackInput<'a> {
    pub service: &'a ServiceName,
    /// The release to roll back from, when the caller names one: refused unless it serves (or
    /// was already rolled back from).
    pub release: Option<&'a ReleaseId>,
    pub trigger: Trigger<'a>,
    pub settings: &'a ServiceSettings,
    pub alb: &'a Alb,
    pub instances: &'a [Instance],
    pub addresses: &'a [Address],
    pub dns: Option<&'a Dns>,
    pub alarms: &'a [Alarm],
    pub now: u64,
}

/// The output a rollback's plan names the release it undoes by (its message threads under it).
pub const ROLLED_BACK_RELEASE: &str = "rolled_back_release";

pub fn roll_back(input: &RollbackInput) -> Planned {
    let service = input.service;
    let state = RouteState::read(input.alb, input.instances)
        .map_err(|why| Refusal(format!("cannot roll back {service}: {why}")))?;
    let from = match &state {
        RouteState::RolledBack { mark, .. } | RouteState::RollingBack { mark, .. } => {
            Some(mark.release.clone())
        }
        RouteState::Shifting { toward: slot, .. } | RouteState::Serving { slot } => {
            release_in(input.alb, input.instances, *slot).map(|r| r.to_string())
        }
    };
    let planned = plan_rollback(input, state)?;
    Ok(match from {
        Some(from) => {
            planned.with_outputs(BTreeMap::from([(ROLLED_BACK_RELEASE.to_owned(), from)]))
        }
        None => planned,
    })
}

fn plan_rollback(input: &RollbackInput, state: RouteState) -> Planned {
    let (service, alb) = (input.service, input.alb);
    match state {
        RouteState::RolledBack { mark, slot } => {
            if let Some(asked) = input.release.filter(|r| r.as_str() != mark.release) {
                return refuse(format!(
                    "release {asked} of {service} is not serving: {} serves product on the {slot} slot ({mark})",
                    serving_release(input, slot)
                ));
            }
            let summary = format!(
                "{service} was already {mark}; nothing moved (going forward again is a release)"
            );
            // A rollback that stopped after its move finishes its bookkeeping.
            let finish = ReleaseId::parse(&mark.release)
                .ok()
                .and_then(|from| rollback_switch(input, &from).ok());
            Ok(match finish {
                Some(plan) => Plan::done(summary).with_steps(plan.steps),
                None => Plan::done(summary),
            })
        }
        RouteState::RollingBack { mark, to } => {
            refuse_another_release(input, &mark.release, to.other())?;
            refuse_a_fleet_past_its_bake(input, to)?;
            let from = ReleaseId::parse(&mark.release).map_err(Refusal)?;
            let plan = rollback_switch(input, &from)?;
            Ok(plan.noting(vec![format!(
                "finished the rollback from release {} started by {} at {}",
                mark.release, mark.by, mark.at
            )]))
        }
        RouteState::Shifting { toward, share } => {
            let Some(release) = release_in(alb, input.instances, toward) else {
                return refuse(format!(
                    "cannot roll back {service}: no release is registered in the {toward} slot it shifts to"
                ));
            };
            refuse_another_release(input, release.as_str(), toward)?;
            if let Some(quiet) = alarm_not_firing(input) {
                return Ok(Plan::done(quiet));
            }
            let old = alb.slot(toward.other());
            if let Some(why) = not_ready_to_keep_serving(old) {
                return refuse(format!(
                    "cannot roll back {service} to the {} slot ({}): {why}",
                    old.slot, old.name
                ));
            }
            Ok(Plan::done(format!(
                "release {release} of {service} rolled back at {share}% of its shift: product on 100% of the {} slot ({})",
                old.slot, old.name
            ))
            .with_steps(vec![
                mark_rollback(&alb.product, &release, &input.trigger.by(), input.now),
                alb.product.repoint(Forward::to(&old.arn)),
            ]))
        }
        RouteState::Serving { slot } => {
            let Some(release) = release_in(alb, input.instances, slot) else {
                return refuse(format!(
                    "cannot roll back {service}: no release of it serves product from the {slot} slot"
                ));
            };
            refuse_another_release(input, release.as_str(), slot)?;
            if let Some(quiet) = alarm_not_firing(input).or_else(|| outside_the_bake(input, slot)) {
                return Ok(Plan::done(quiet));
            }
            refuse_a_fleet_past_its_bake(input, slot.other())?;
            refuse_a_newer_fleet(input, &release, slot.other())?;
            refuse_an_abandoned_fleet(input, slot.other())?;
            let plan = rollback_switch(input, &release)?;
            let mut steps = vec![mark_rollback(
                &alb.product,
                &release,
                &input.trigger.by(),
                input.now,
            )];
            steps.extend(plan.steps);
            Ok(Plan { steps, ..plan })
        }
    }
}

/// The switch planner's rollback of `from`: the move (if still due) and the bookkeeping.
fn rollback_switch(input: &RollbackInput, from: &ReleaseId) -> Planned {
    switch(&SwitchInput {
        service: input.service,
        release: from,
        action: Action::Rollback,
        settings: input.settings,
        alb: input.alb,
        instances: input.instances,
        addresses: input.addresses,
        dns: input.dns,
        strategy: Strategy::AllAtOnce,
        alarms: input.alarms,
        ignore_alarms: true,
        progress: None,
        now: input.now,
    })
}

/// A rollback goes to the previous fleet only inside its bake: after it, cleanup takes the fleet
/// (once no rollback begun inside the bake can still be landing its calls, `CleanupInput::
/// takeover_s`), and a rollback that read it standing could land its move on a fleet being
/// drained. A fleet still being retired by a switch in flight has its whole bake ahead.
fn refuse_a_fleet_past_its_bake(input: &RollbackInput, slot: Slot) -> Result<(), Refusal> {
    let previous = input.alb.slot(slot);
    let bake_s = input.settings.bake_s;
    let ended = input
        .instances
        .iter()
        .filter(|i| !i.state.is_dead() && previous.has(&i.id) && i.stage == Some(Stage::Retired))
        .filter_map(|i| i.retired_at)
        .map(|at| at.saturating_add(bake_s))
        .min()
        .filter(|ends| *ends <= input.now);
    match ended {
        Some(ends) => refuse(format!(
            "cannot roll back {}: the previous fleet in the {slot} slot was kept for rollback until \
             {ends} (BAKE_S={bake_s}) and is cleanup's now; ship a fix as a release",
            input.service
        )),
        None => Ok(()),
    }
}

/// A rollback never goes to a fleet being abandoned (a failed release's): only a release that
/// served may serve again.
fn refuse_an_abandoned_fleet(input: &RollbackInput, slot: Slot) -> Result<(), Refusal> {
    let abandoned = input
        .instances
        .iter()
        .find(|i| input.alb.slot(slot).has(&i.id) && i.stage == Some(Stage::Abandoned));
    match abandoned {
        Some(instance) => refuse(format!(
            "cannot roll back {}: the {slot} slot holds {}, of a failed release being cleaned up",
            input.service, instance.id
        )),
        None => Ok(()),
    }
}

/// A rollback goes back, to a fleet launched before the one serving, never forward: a reader
/// between a release's mark removal and its move sees the older release serving and the newer
/// one standing in the other slot (going forward again is a release).
fn refuse_a_newer_fleet(
    input: &RollbackInput,
    from: &ReleaseId,
    slot: Slot,
) -> Result<(), Refusal> {
    if !is_newer(input.alb, input.instances, slot) {
        return Ok(());
    }
    refuse(format!(
        "cannot roll back release {from} of {}: the {slot} slot holds {}, launched after it; \
         going forward again is a release, never a rollback",
        input.service,
        serving_release(input, slot)
    ))
}

fn serving_release(input: &RollbackInput, slot: Slot) -> String {
    release_in(input.alb, input.instances, slot)
        .map(|r| format!("release {r}"))
        .unwrap_or_else(|| "no release of cutover's".to_owned())
}

/// A caller who named a release gets a refusal, naming what serves, when it is not that one.
fn refuse_another_release(input: &RollbackInput, serving: &str, slot: Slot) -> Result<(), Refusal> {
    match input.release {
        Some(asked) if asked.as_str() != serving => refuse(format!(
            "release {asked} of {} is not serving: release {serving} serves product on the {slot} slot; nothing moved",
            input.service
        )),
        _ => Ok(()),
    }
}

/// An alarm's event is a claim about the past (Lambda's asynchronous queue can hold it for
/// hours): only the alarm's state now counts.
fn alarm_not_firing(input: &RollbackInput) -> Option<String> {
    let Trigger::Alarm { name, .. } = input.trigger else {
        return None;
    };
    match input.alarms.iter().find(|a| a.name == name) {
        Some(alarm) if alarm.state == AlarmState::Alarm => None,
        Some(alarm) => Some(format!(
            "alarm {name} is {:?} now (the event said ALARM): nothing moved",
            alarm.state
        )),
        None => Some(format!(
            "alarm {name} does not exist in CloudWatch now: nothing moved"
        )),
    }
}

/// An alarm rolls back only inside the bake window of the release that serves: the event's
/// time between that release's switch and the end of its bake, the previous fleet still there.
fn outside_the_bake(input: &RollbackInput, serving: Slot) -> Option<String> {
    let Trigger::Alarm { name, at } = input.trigger else {
        return None;
    };
    let service = input.service;
    let previous = input.alb.slot(serving.other());
    let switched_at = input
        .instances
        .iter()
        .filter(|i| !i.state.is_dead() && previous.has(&i.id))
        .filter_map(|i| match i.stage {
            Some(Stage::Retired) => i.retired_at,
            // Retagged after the move: the switch is just over.
            Some(Stage::Product) => Some(input.now),
            _ => None,
        })
        .min();
    let Some(switched_at) = switched_at else {
        return Some(format!(
            "alarm {name} is in ALARM outside the bake window of {service} (no previous fleet stands to roll back to): nothing moved"
        ));
    };
    let at = at.unwrap_or(input.now);
    if at < switched_at {
        return Some(format!(
            "alarm {name}'s event (at {at}) is older than the release serving {service} (switched at {switched_at}): nothing moved"
        ));
    }
    let bake_ends = switched_at.saturating_add(input.settings.bake_s);
    if at >= bake_ends || input.now >= bake_ends {
        return Some(format!(
            "alarm {name} is in ALARM outside the bake window of {service} (it ended at {bake_ends}): nothing moved"
        ));
    }
    None
}
