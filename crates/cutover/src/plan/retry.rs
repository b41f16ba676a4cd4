//! A failed release kept for a retry of its failed action: CodePipeline V2 retries a failed stage
//! while its execution is the latest there, and the retry emits `RESUMED`. The fleet and the lock
//! stay until `RETRY_WINDOW_S` after the failure, or until a newer release takes the service (a
//! newer execution in the stage: it takes the lock over, and launches its own fleet); then the
//! fleet is cleanup's, as any failed release's.

use super::*;

/// Until when `release`'s fleet is kept for a retry, if it is: it failed less than
/// `RETRY_WINDOW_S` ago (its `failed_at`, or now when first seen) and no newer release has taken
/// the service.
pub(super) fn kept_until(input: &CleanupInput, release: &ReleaseId) -> Option<u64> {
    let window = input.settings.retry_window_s;
    let fleet = pre_product_fleet(input.instances, release);
    if window == 0 || fleet.is_empty() || taken_by_a_newer_release(input, release, &fleet) {
        return None;
    }
    let failed_at = fleet
        .iter()
        .filter_map(|i| i.failed_at)
        .min()
        .unwrap_or(input.now);
    let until = failed_at.saturating_add(window);
    (until > input.now).then_some(until)
}

fn pre_product_fleet<'a>(instances: &'a [Instance], release: &ReleaseId) -> Vec<&'a Instance> {
    of_release(instances, release)
        .into_iter()
        .filter(|i| !i.state.is_dead() && i.stage == Some(Stage::PreProduct))
        .collect()
}

/// Another release holds the lock, or launched a pre-product fleet after this one's.
fn taken_by_a_newer_release(
    input: &CleanupInput,
    release: &ReleaseId,
    fleet: &[&Instance],
) -> bool {
    let lock = input.alb.product.lock.as_ref();
    let locked_by_another = lock.is_some_and(|l| l.release != release.as_str());
    let launched = fleet
        .iter()
        .filter_map(|i| i.launched_at)
        .max()
        .unwrap_or(0);
    let newer_fleet = input.instances.iter().any(|i| {
        !i.state.is_dead()
            && i.stage == Some(Stage::PreProduct)
            && i.release.as_ref().is_some_and(|r| r != release)
            && i.launched_at.is_some_and(|at| at >= launched)
    });
    locked_by_another || newer_fleet
}

/// The FAILED event, when the fleet is kept: the failure's time on it, nothing else.
pub(super) fn keep_for_retry(input: &CleanupInput, release: &ReleaseId, until: u64) -> Plan {
    let fleet = pre_product_fleet(input.instances, release);
    Plan::done(format!(
        "release {release} of {} failed: its fleet ({} instance(s)) and the lock are kept until \
         {until} (RETRY_WINDOW_S={}) for a retry of the failed action (Retry in CodePipeline); \
         after that, or once a newer release takes the service, cleanup takes them",
        input.service,
        fleet.len(),
        input.settings.retry_window_s
    ))
    .with_steps(mark_failed(input, release))
}

/// The failure's time on the instances of a kept fleet that lack it (the sweep marks a fleet
/// whose FAILED event never came, so its window ends too).
pub(super) fn mark_failed(input: &CleanupInput, release: &ReleaseId) -> Vec<Step> {
    let unmarked: Vec<String> = pre_product_fleet(input.instances, release)
        .iter()
        .filter(|i| i.failed_at.is_none())
        .map(|i| i.id.clone())
        .collect();
    if unmarked.is_empty() {
        return Vec::new();
    }
    vec![Step::TagInstances {
        instance_ids: unmarked,
        tags: BTreeMap::from([(TAG_FAILED_AT.to_owned(), input.now.to_string())]),
    }]
}

/// `RESUMED`: the retried action goes on with the fleet, whose failure mark goes. A fleet
/// cleanup already took fails, saying how to go on.
pub(super) fn take_back(input: &CleanupInput, release: &ReleaseId) -> Planned {
    let service = input.service;
    let fleet = pre_product_fleet(input.instances, release);
    let launched = !of_release(input.instances, release).is_empty();
    if fleet.is_empty() && launched {
        return refuse(fleet_taken(release, service, input.settings.retry_window_s));
    }
    let marked: Vec<String> = fleet
        .iter()
        .filter(|i| i.failed_at.is_some())
        .map(|i| i.id.clone())
        .collect();
    let steps = if marked.is_empty() {
        Vec::new()
    } else {
        vec![Step::UntagInstances {
            instance_ids: marked,
            keys: vec![TAG_FAILED_AT.to_owned()],
        }]
    };
    Ok(Plan::done(format!(
        "release {release} of {service} resumed: its fleet ({} instance(s)) is the retried release's again",
        fleet.len()
    ))
    .with_steps(steps))
}

/// How a job goes on when cleanup took its release's fleet.
pub fn fleet_taken(release: &ReleaseId, service: &ServiceName, window: u64) -> String {
    format!(
        "the fleet of release {release} of {service} was taken by cleanup after its execution \
         ended (it failed more than RETRY_WINDOW_S={window}s ago, or a newer release took the \
         service): retry the whole Release stage so provision launches it again, or upload the \
         build again for a new release"
    )
}
