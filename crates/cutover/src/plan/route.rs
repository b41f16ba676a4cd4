//! The product route's state, and the one place that decides how its writers change it.
//!
//! ELBv2 has no conditional write, so a reader may land between any two calls of any writer.
//! The state is therefore read from what one call changes at a time, and every writer orders
//! its calls so that each moment in between reads as what is in flight:
//!
//! | what is on the product route | reads as |
//! |---|---|
//! | no rollback mark, one target group | `Serving` that slot |
//! | no rollback mark, a weighted forward | `Shifting` toward the slot holding the newer fleet |
//! | `cutover:rolled-back=X`, some traffic still on X's fleet | `RollingBack`: finish it |
//! | `cutover:rolled-back=X`, no traffic on X's fleet | `RolledBack`: nothing is due |
//!
//! The writers, and the order of their calls:
//! - a **rollback** (by hand, by an alarm, by a pipeline job) writes the mark
//!   (`cutover:rolled-back` and `cutover:rolled-back-by`, one call), then moves product (one
//!   call), then the bookkeeping (`cutover:previous`, instance stages, addresses, records). A
//!   reader after the mark and before the move sees `RollingBack` and can only finish the same
//!   move; a reader after the move sees `RolledBack` and moves nothing.
//! - a **release** removes the mark (one call) before its own move, and only when it moves: a
//!   replayed job of an older release never clears a newer rollback.
//! - a **gradual step** moves the weights alone; a shift that finds its release marked stops.
//! - a release moves product only to a fleet launched after the one serving, a rollback only to
//!   one launched before: the direction of a shift is read from launch times, never from stage
//!   tags that a writer stopped at its timeout may have left stale.
//! - `cutover:previous` is bookkeeping, written after the move; no reader decides a move from it.
//! - the **lock** (`cutover:lock`) is claimed by register-target and removed last by the switch
//!   (or by a failed execution's cleanup), only if it still names the release removing it.
//!
//! Every call that writes the product route is built here: `mark_rollback`, `clear_rollback`,
//! `claim_lock`, `release_lock`, `record_previous`, and `Route::repoint` for the moves.

use super::*;

/// What the product route is doing, as any reader between two calls can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteState {
    /// All of product on one slot, no rollback marked.
    Serving { slot: Slot },
    /// A gradual shift: `share` % of product on `toward`, the rest on the other slot.
    Shifting { toward: Slot, share: i32 },
    /// A rollback from `mark.release` started and product still has traffic on its fleet: every
    /// reader that may move product finishes it (all of product to `to`).
    RollingBack { mark: RollbackMark, to: Slot },
    /// Rolled back: product is off the marked release's fleet, on `slot`.
    RolledBack { mark: RollbackMark, slot: Slot },
}

impl RouteState {
    pub fn read(alb: &Alb, instances: &[Instance]) -> Result<RouteState, String> {
        let forward = &alb.product.forward;
        if let Some(mark) = &alb.product.rolled_back {
            let from = slot_of_release(alb, instances, &mark.release);
            let share_on_from = from.and_then(|slot| share_of(forward, alb, slot));
            match (from, share_on_from) {
                (Some(from), Some(share)) if share > 0 => {
                    return Ok(RouteState::RollingBack {
                        mark: mark.clone(),
                        to: from.other(),
                    })
                }
                _ => {
                    if let Ok(slot) = alb.product_slot() {
                        return Ok(RouteState::RolledBack {
                            mark: mark.clone(),
                            slot,
                        });
                    }
                }
            }
        }
        if let Some(arn) = forward.sole_target() {
            return alb
                .slot_of_arn(arn)
                .map(|slot| RouteState::Serving { slot })
                .ok_or_else(|| {
                    format!(
                        "the product route {} forwards to {arn}, which is neither the blue nor the green slot",
                        alb.product.arn
                    )
                });
        }
        // A shift goes forward, to the newer fleet (a release never moves product to an older
        // one): launch times, unlike stage tags, are never stale. Fleets launched within the
        // same second (local endpoints) fall back to the stages: toward the fleet not `product`.
        let serves = |slot: Slot| {
            instances.iter().any(|i| {
                !i.state.is_dead() && alb.slot(slot).has(&i.id) && i.stage == Some(Stage::Product)
            })
        };
        let in_qa = [Slot::Blue, Slot::Green]
            .into_iter()
            .find(|slot| is_newer(alb, instances, *slot))
            .or(match (serves(Slot::Blue), serves(Slot::Green)) {
                (true, false) => Some(Slot::Green),
                (false, true) => Some(Slot::Blue),
                _ => None,
            });
        match in_qa.and_then(|toward| share_of(forward, alb, toward).map(|s| (toward, s))) {
            Some((toward, share)) => Ok(RouteState::Shifting { toward, share }),
            None => Err(format!(
                "the product route {} forwards to {}, and neither slot holds a release being shifted to",
                alb.product.arn,
                describe_forward(forward)
            )),
        }
    }

    /// Whether a move of product is under way: a gradual shift, or a rollback not yet finished
    /// (cleanup waits; the model's on-call engineer rolls back).
    pub fn is_moving(&self) -> bool {
        matches!(self, RouteState::Shifting { .. })
            || matches!(self, RouteState::RollingBack { .. })
    }
}

/// The slot holding live instances of `release`, if one does.
pub fn slot_of_release(alb: &Alb, instances: &[Instance], release: &str) -> Option<Slot> {
    let ids: Vec<&str> = instances
        .iter()
        .filter(|i| !i.state.is_dead() && i.release.as_ref().is_some_and(|r| r.as_str() == release))
        .map(|i| i.id.as_str())
        .collect();
    [Slot::Blue, Slot::Green]
        .into_iter()
        .find(|slot| ids.iter().any(|id| alb.slot(*slot).has(id)))
}

/// (first, last) launch time of the live instances registered in `slot`.
pub fn launched(alb: &Alb, instances: &[Instance], slot: Slot) -> Option<(u64, u64)> {
    let times: Vec<u64> = instances
        .iter()
        .filter(|i| !i.state.is_dead() && alb.slot(slot).has(&i.id))
        .filter_map(|i| i.launched_at)
        .collect();
    Some((*times.iter().min()?, *times.iter().max()?))
}

/// Whether the fleet in `slot` was launched after the one in the other slot: product moves
/// forward (a release) only to the newer fleet, back (a rollback) only to the older. Fleets are
/// compared by their first launch: a group that serves launches instances later as it scales
/// out, and is no newer for them.
pub fn is_newer(alb: &Alb, instances: &[Instance], slot: Slot) -> bool {
    match (
        launched(alb, instances, slot),
        launched(alb, instances, slot.other()),
    ) {
        (Some(this), Some(other)) => this.0 > other.0,
        _ => false,
    }
}

/// The release whose instances are registered in `slot`.
pub fn release_in(alb: &Alb, instances: &[Instance], slot: Slot) -> Option<ReleaseId> {
    instances
        .iter()
        .filter(|i| !i.state.is_dead() && alb.slot(slot).has(&i.id))
        .find_map(|i| i.release.clone())
}

/// The call that starts a rollback from `release`: the mark, before any move.
pub fn mark_rollback(route: &Route, release: &ReleaseId, by: &str, now: u64) -> Step {
    let mark = RollbackMark {
        release: release.to_string(),
        by: by.to_owned(),
        at: now,
    };
    Step::TagRoute {
        route: route.arn.clone(),
        tags: BTreeMap::from([
            (TAG_ROLLED_BACK.to_owned(), mark.release.clone()),
            (TAG_ROLLED_BACK_BY.to_owned(), mark.by_value()),
        ]),
    }
}

/// The call a release makes before its move when a rollback is marked.
pub fn clear_rollback(route: &Route) -> Option<Step> {
    route.rolled_back.as_ref().map(|_| Step::UntagRoute {
        route: route.arn.clone(),
        keys: vec![TAG_ROLLED_BACK.to_owned(), TAG_ROLLED_BACK_BY.to_owned()],
    })
}

/// register-target's claim of the service for `release` (verified on its next invocation: of two
/// claims that race, the one that landed last is there, and exactly one release sees itself).
pub fn claim_lock(route: &Route, release: &ReleaseId, now: u64) -> Step {
    let claim = Lock {
        release: release.to_string(),
        since: now,
    };
    Step::TagRoute {
        route: route.arn.clone(),
        tags: BTreeMap::from([(TAG_LOCK.to_owned(), claim.tag_value())]),
    }
}

/// The lock's removal by the release holding it (after its switch, or its failed execution's
/// cleanup), the last call: re-read in the same step, removed only if still `release`'s.
pub fn release_lock(route: &Route, release: &ReleaseId) -> Option<Step> {
    holds_lock(route.lock.as_ref(), release).then(|| Step::ReleaseLock {
        route: route.arn.clone(),
        release: release.to_string(),
    })
}

/// `cutover:previous`, bookkeeping after a move: the slot product left. No reader decides a
/// move from it.
pub fn record_previous(route: &Route, left: &TargetGroup) -> Option<Step> {
    (route.previous.as_deref() != Some(left.arn.as_str())).then(|| Step::TagRoute {
        route: route.arn.clone(),
        tags: BTreeMap::from([(TAG_PREVIOUS.to_owned(), left.arn.clone())]),
    })
}
