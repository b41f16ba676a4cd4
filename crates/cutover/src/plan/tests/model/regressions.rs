//! The breaches the model found, each kept as a named regression: the shrunk sequence of
//! operations holds now, and (where a rule can be switched off) breaks once it is.

use super::*;

/// The model on `ops` holds, and reports a breach once `rule` is broken; the breach.
fn holds_and_breaks_without(ops: &[Op], retries: bool, rule: Broken) -> String {
    assert_eq!(
        explore(ops, retries).map_err(|b| b.lines().next().map(str::to_owned)),
        Ok(())
    );
    BROKEN.set(Some(rule));
    let broken = explore(ops, retries);
    BROKEN.set(None);
    broken.expect_err("a breach once the rule is broken")
}

/// The first breach the model found, as a regression: a sweep reads a fleet past its bake, a
/// rollback read it inside the bake and lands its move, the sweep's deregistration lands on the
/// fleet now serving product.
fn a_sweep_and_a_rollback_across_the_end_of_the_bake() -> Vec<Op> {
    let mut ops = vec![Op::Release { gradual: false }];
    // Provision, register-target (the lock, the registration, health), each continuation a
    // minute later; then the approval and the switch.
    for _ in 0..3 {
        ops.extend(std::iter::repeat_n(Op::Advance(0), 4));
        ops.push(Op::Tick(60));
    }
    ops.extend(std::iter::repeat_n(Op::Advance(0), 4));
    ops.push(Op::Approval { approve: true });
    ops.extend(std::iter::repeat_n(Op::Advance(0), 12));
    ops.extend([
        Op::Tick(599),
        Op::HandRollback { named: false },
        Op::Advance(0), // the rollback reads inside the bake
        Op::Tick(30),
        Op::Sweep,
        Op::Advance(1), // the sweep reads after it
        Op::Advance(0), // the mark
        Op::Advance(0), // the move
        Op::Advance(0), // the sweep's deregistration, if it planned one
    ]);
    ops
}

#[test]
fn the_sweep_and_rollback_interleaving_holds_and_breaks_without_the_takeover_margin() {
    let breach = holds_and_breaks_without(
        &a_sweep_and_a_rollback_across_the_end_of_the_bake(),
        true,
        Broken::NoTakeoverMargin,
    );
    assert!(breach.starts_with("deregistered"), "{breach}");
}

/// A breach the model found in the whole pipeline (for a service that keeps no failed fleet for a
/// retry, RETRY_WINDOW_S=0): the switch job is delivered twice; the first invocation refuses (an
/// alarm fires) and fails the execution, whose FAILED event abandons the fleet in the idle slot;
/// the duplicate, read before the fleet was marked, moves product there once the alarm clears, and the cleanup's deregistration lands on the slot product now
/// forwards to. Fixed by leaving a registered fleet being abandoned in its slot for the same
/// margin as a retired one (a switch that read it before the mark has landed by then), and by
/// refusing to switch to a fleet marked abandoned.
fn a_duplicate_switch_after_its_execution_failed() -> Vec<Op> {
    use Op::*;
    let mut ops = to_the_approval();
    ops.extend([
        Approval { approve: true },
        Duplicate(0),
        Alarm { late: false },
        Advance(0),
        Advance(1),
        AlarmClears,
        Sweep,
        Advance(1),
    ]);
    ops
}

#[test]
fn a_duplicate_switch_after_a_failed_execution_holds_and_breaks_without_the_margin() {
    let breach = holds_and_breaks_without(
        &a_duplicate_switch_after_its_execution_failed(),
        false,
        Broken::NoTakeoverMargin,
    );
    assert!(breach.starts_with("deregistered"), "{breach}");
}

/// A breach the model found in the whole pipeline: the approval is rejected and every attempt
/// Lambda makes at the FAILED event ends at its timeout; the fleet stays in the idle slot,
/// pre-product, its execution over, and the sweep took only pre-product fleets a week old. Fixed
/// by the sweep asking CodePipeline about every pre-product fleet's execution.
fn a_failed_event_lambda_gives_up_on() -> Vec<Op> {
    use Op::*;
    let mut ops = to_the_approval();
    ops.push(Approval { approve: false });
    for _ in 0..3 {
        ops.extend([Advance(0), Tick(599)]);
    }
    ops
}

/// One release through provision and register-target, waiting for its approval.
fn to_the_approval() -> Vec<Op> {
    use Op::*;
    let mut ops = vec![Release { gradual: false }];
    ops.extend([Advance(0), Advance(0), Advance(0), Tick(120)]);
    ops.extend([Advance(0), Advance(0), Advance(0), Tick(120)]);
    ops.extend([Advance(0), Advance(0), Tick(120), Advance(0)]);
    ops
}

#[test]
fn a_lost_failed_event_leaves_nothing_and_orphans_a_fleet_without_the_sweeps_check() {
    let breach = holds_and_breaks_without(
        &a_failed_event_lambda_gives_up_on(),
        true,
        Broken::SweepTrustsTheFailedEvent,
    );
    assert!(breach.contains("left running after the sweep"), "{breach}");
}

/// A breach the model found with `FLEET=asg`: the serving group scales out while a release is in
/// QA; the release fails (an alarm) and its fleet is being abandoned; a hand rollback then took
/// the failed release for the older fleet (fleets were ordered by the serving one's last launch,
/// its scale-out) and moved product onto it. Fixed by ordering fleets by their first launch and
/// by refusing to roll back onto an abandoned fleet.
#[test]
fn a_rollback_after_a_scale_out_never_goes_to_a_newer_failed_fleet() {
    use Op::*;
    let ops = [
        vec![Release { gradual: false }; 4],
        vec![Advance(0); 4],
        vec![
            Release { gradual: false },
            Alarm { late: false },
            Advance(0),
            Tick(120),
            Release { gradual: false },
            Sweep,
            Advance(2),
            Advance(1),
            Advance(1),
            Tick(120),
            ScaleOut,
            Advance(1),
            Advance(1),
            Tick(120),
            Advance(1),
            Release { gradual: false },
            Approval { approve: true },
            Advance(0),
            Sweep,
            Release { gradual: false },
            Release { gradual: false },
            Release { gradual: false },
            Sweep,
            HandRollback { named: false },
        ],
    ]
    .concat();
    assert_eq!(
        explore_fleets(&ops, false, true).map_err(|b| b.lines().next().map(str::to_owned)),
        Ok(())
    );
}
