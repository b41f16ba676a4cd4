//! register-target: the release into the idle slot, healthy, with the pre-product route on it.

use super::*;

pub struct RegisterInput<'a> {
    pub service: &'a ServiceName,
    pub release: &'a ReleaseId,
    pub settings: &'a ServiceSettings,
    pub alb: &'a Alb,
    pub instances: &'a [Instance],
    /// What CodePipeline says of the execution holding the lock, when another release holds it.
    pub lock_holder: Option<&'a Execution>,
    pub progress: Option<&'a Progress>,
    pub now: u64,
}

pub fn register(input: &RegisterInput) -> Planned {
    let (service, release, alb) = (input.service, input.release, input.alb);
    let all_of_it = of_release(input.instances, release);
    let taken = all_of_it.iter().any(|i| i.stage == Some(Stage::Abandoned));
    let mine: Vec<&Instance> = all_of_it
        .into_iter()
        .filter(|i| i.state == InstanceState::Running)
        .collect();
    if taken {
        return refuse(fleet_taken(release, service, input.settings.retry_window_s));
    }
    if mine.is_empty() {
        return refuse(format!(
            "no running instances of release {release} for service {service}: run provision first \
             (a retry after cleanup took a failed release's fleet: retry the whole Release stage, \
             or upload the build again for a new release)"
        ));
    }
    if let Some(refusal) = not_installed(input, &mine) {
        return refusal;
    }
    let product = match alb.product_slot() {
        Ok(slot) => slot,
        Err(why) => return refuse(format!("cannot pick the idle slot: {why}")),
    };
    if let Some(already) = already_serving(input, &mine, product) {
        return already;
    }
    if let Some(claim) = claim_the_lock(input)? {
        return Ok(claim);
    }
    let idle = alb.slot(product.other());
    if let Some(wait) = wait_for_bake(input, idle) {
        return wait;
    }
    let steps = registrations(idle, &mine);
    if !steps.is_empty() {
        return Ok(Plan::wait(Phase::Healthy).with_steps(steps));
    }
    let unhealthy = idle.unhealthy();
    if !unhealthy.is_empty() {
        // Measured from the registration (a wait for the lock or the bake before it is not
        // a wait for health).
        let waited = Progress::waited_for(input.progress, Phase::Healthy, input.now);
        if waited >= input.settings.health_timeout_s {
            return refuse(format!(
                "targets of release {release} in the {} slot were not healthy after {waited}s ({}); product was not touched",
                idle.slot,
                describe_targets(&unhealthy)
            ));
        }
        return Ok(Plan::wait(Phase::Healthy));
    }
    Ok(route_qa_there(input, idle, mine.len()))
}

/// With `INSTALL_MARK`, an instance its install hook did not mark for this release did not get
/// the build (CodeDeploy's deployment succeeded on the others): refused at once, naming it, before
/// the lock or a registration, rather than at the health timeout.
fn not_installed(input: &RegisterInput, mine: &[&Instance]) -> Option<Planned> {
    if !input.settings.require_install_mark {
        return None;
    }
    let release = input.release.as_str();
    let unmarked: Vec<&str> = mine
        .iter()
        .filter(|i| i.stage == Some(Stage::PreProduct) && i.installed.as_deref() != Some(release))
        .map(|i| i.id.as_str())
        .collect();
    if unmarked.is_empty() {
        return None;
    }
    Some(refuse(format!(
        "release {release} of {} is not installed on {} (no {TAG_INSTALLED}={release} from the \
         install hook; CodeDeploy counts a deployment a success once its minimum of healthy hosts \
         succeeded): see that deployment's instances, then retry the stage",
        input.service,
        unmarked.join(", ")
    )))
}

/// A late duplicate after the switch (the release serves product: done), or a release half in
/// the product slot (refused).
fn already_serving(input: &RegisterInput, mine: &[&Instance], product: Slot) -> Option<Planned> {
    let (service, release) = (input.service, input.release);
    let serving: Vec<&str> = mine
        .iter()
        .filter(|i| input.alb.slot(product).has(&i.id))
        .map(|i| i.id.as_str())
        .collect();
    if serving.is_empty() {
        return None;
    }
    if serving.len() == mine.len() {
        return Some(Ok(Plan::done(format!(
            "release {release} of {service} already serves product from the {product} slot; nothing to do"
        ))));
    }
    Some(refuse(format!(
        "instances {} of release {release} are registered in the product slot {product}, others are not; fix the registrations by hand",
        serving.join(", ")
    )))
}

/// The release lock: refused while another release holds it; claimed (and verified on the next
/// invocation) when free. `None` when this release holds it.
fn claim_the_lock(input: &RegisterInput) -> Result<Option<Plan>, Refusal> {
    let (alb, release) = (input.alb, input.release);
    let lock = alb.product.lock.as_ref();
    let holder = input.lock_holder;
    if let Some(wait) = lock_verdict(
        lock,
        holder,
        release,
        input.service,
        input.now,
        input.progress,
    )? {
        return Ok(Some(wait));
    }
    if holds_lock(lock, release) {
        return Ok(None);
    }
    Ok(Some(Plan::wait(Phase::Lock).with_steps(vec![claim_lock(
        &alb.product,
        release,
        input.now,
    )])))
}

/// Stale targets out of the idle slot, the release's instances in.
fn registrations(idle: &TargetGroup, mine: &[&Instance]) -> Vec<Step> {
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
    steps
}

/// All healthy: the pre-product route goes to the idle slot, and the job says where QA is.
fn route_qa_there(input: &RegisterInput, idle: &TargetGroup, healthy: usize) -> Plan {
    let (service, release, alb) = (input.service, input.release, input.alb);
    let to = Forward::to(&idle.arn);
    let steps = if alb.pre_product.forward != to {
        vec![alb.pre_product.repoint(to)]
    } else {
        Vec::new()
    };
    let qa = if alb.pre_product.conditions.is_empty() {
        String::new()
    } else {
        format!("; QA at {}", alb.pre_product.conditions.join(" "))
    };
    Plan::done(format!(
        "release {release} of {service}: {healthy} healthy target(s) in the {} slot, pre-product route points there{qa}",
        idle.slot
    ))
    .with_steps(steps)
    .with_outputs(BTreeMap::from([(
        "slot".to_owned(),
        idle.slot.as_str().to_owned(),
    )]))
}

/// The idle slot may still hold the previous fleet, kept for rollback until its bake ends: the
/// release waits for that (a continuation) rather than take the slot, or fails at once, naming
/// the bake's end, when that is further away than this action may wait.
pub(super) fn wait_for_bake(input: &RegisterInput, idle: &TargetGroup) -> Option<Planned> {
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
