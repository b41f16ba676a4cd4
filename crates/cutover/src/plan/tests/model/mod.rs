//! A model of a service's whole release, explored by proptest: pipeline executions (queued, each
//! running provision, register-target, an approval and a switch all at once or gradual, with
//! their continuations, failures and FAILED events), rollbacks by hand (repeated, naming a
//! release or not), alarm events (fresh or delivered late) and sweeps, each an invocation that
//! reads the world once, plans with the real planner, then makes its calls one at a time. The
//! test decides when each invocation reads and when each of its calls lands, so every reader can
//! fall between any two calls of any writer (ELBv2 has no conditional write); Lambda may deliver
//! a job twice, end an invocation at its timeout and retry it, and an SDK may land an applied
//! call again. After every call it checks:
//! - product moves only to non-empty slots whose targets are all healthy;
//! - no instance registered in a slot product forwards to is deregistered or terminated, and no
//!   instance is registered into such a slot (it would serve before QA saw it);
//! - a rollback never sends product to the fleet it rolls back from;
//! - no release runs more instances than its fleet's size.
//!
//! And once every execution and continuation has finished: product is on one slot; a release
//! marked rolled back serves no traffic, and product is on the fleet that served before it; every
//! execution ended and every job was acknowledged (or timed out after Lambda's last attempt); and
//! once the bakes are over and the sweep has run past the drains, nothing runs but the fleet
//! product forwards to.
//!
//! `PROPTEST_CASES` sets the number of cases (`make soak` runs many); a failure shrinks to a short
//! sequence of operations and proptest keeps its seed under `proptest-regressions/`.

use std::cell::Cell;
use std::collections::BTreeMap;

use proptest::prelude::{any, prop_assert, prop_oneof, proptest, Just, ProptestConfig};
use proptest::strategy::Strategy as Generate;

use super::*;

mod aws;
mod groups;
mod pipeline;
mod planners;
mod regressions;

pub(super) use self::aws::apply_tags;
use self::pipeline::{JobAction, JobRecord, PipelineRun};

const COUNT: u32 = 2;

#[derive(Debug, Clone)]
enum Op {
    /// An upload: a new pipeline execution, queued behind the one in the stage.
    Release {
        gradual: bool,
    },
    /// The manual approval of the execution waiting for it, given or rejected.
    Approval {
        approve: bool,
    },
    /// The stage of a rolled-back release is run again: going forward is a release.
    Forward {
        gradual: bool,
    },
    /// A person sends the rollback command, naming the newest release or not.
    HandRollback {
        named: bool,
    },
    /// The service's alarm goes to ALARM; its event arrives now or hours late.
    Alarm {
        late: bool,
    },
    AlarmClears,
    /// The scheduled sweep.
    Sweep,
    /// The next call (or first read) of one in-flight invocation.
    Advance(usize),
    /// Time passes (continuations become due, targets drain).
    Tick(u64),
    /// The last call an in-flight invocation made lands again (an SDK retry of a call AWS applied
    /// whose answer was lost), after whatever other writers did in between.
    Retry(usize),
    /// Lambda delivers an in-flight job's event a second time.
    Duplicate(usize),
    /// `FLEET=asg`: the group serving product scales out by one.
    ScaleOut,
}

fn op() -> impl Generate<Value = Op> {
    prop_oneof![
        2 => any::<bool>().prop_map(|gradual| Op::Release { gradual }),
        2 => prop_oneof![4 => Just(true), 1 => Just(false)].prop_map(|approve| Op::Approval { approve }),
        1 => any::<bool>().prop_map(|gradual| Op::Forward { gradual }),
        2 => any::<bool>().prop_map(|named| Op::HandRollback { named }),
        2 => any::<bool>().prop_map(|late| Op::Alarm { late }),
        1 => Just(Op::AlarmClears),
        1 => Just(Op::Sweep),
        10 => (0usize..4).prop_map(Op::Advance),
        2 => prop_oneof![Just(1u64), Just(30), Just(120), Just(599), Just(700)].prop_map(Op::Tick),
        1 => (0usize..4).prop_map(Op::Retry),
        1 => (0usize..4).prop_map(Op::Duplicate),
        1 => Just(Op::ScaleOut),
    ]
}

#[derive(Debug, Clone)]
enum Kind {
    /// A CodePipeline job (a continuation is a job of its own).
    Job {
        id: u32,
        action: JobAction,
        release: ReleaseId,
        progress: Option<Progress>,
    },
    Rollback {
        named: Option<ReleaseId>,
        alarm_at: Option<u64>,
    },
    Sweep,
    /// The FAILED event of a release's execution.
    Failed(ReleaseId),
}

#[derive(Debug)]
struct Invocation {
    kind: Kind,
    /// `None` until it has read the world and planned; then the calls still to make.
    calls: Option<Vec<Step>>,
    next: Option<Next>,
    reads: usize,
    /// When it read the world last; Lambda ends it `SWITCH_LISTENER_TIMEOUT_S` after it started.
    started: u64,
    /// The call it made last, which an SDK retry may land again.
    last_call: Option<Step>,
    /// Lambda's attempt at its event (1, then 2 and 3 after timeouts).
    attempt: u32,
}

struct Model {
    alb: Alb,
    instances: Vec<Instance>,
    alarm: AlarmState,
    now: u64,
    releases: u32,
    inflight: Vec<Invocation>,
    /// Continuations CodePipeline will send: (due at, the job).
    continuations: Vec<(u64, Kind)>,
    runs: Vec<PipelineRun>,
    jobs: BTreeMap<u32, JobRecord>,
    /// ClientToken → the instance RunInstances launched under it.
    tokens: BTreeMap<String, String>,
    /// For each release, the release that served when it first moved product.
    served_before: BTreeMap<String, String>,
    /// Whether the service keeps a failed release's fleet for a retry (`RETRY_WINDOW_S`).
    retries: bool,
    /// `FLEET=asg`: the groups and templates, when the service's fleets are groups.
    asg: groups::Asg,
    log: Vec<String>,
}

thread_local! {
    /// Set by a test that breaks one rule on purpose, to see the model catch it.
    static BROKEN: Cell<Option<Broken>> = const { Cell::new(None) };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Broken {
    /// Cleanup takes a retired fleet as soon as its bake ends, with no margin for a rollback
    /// that read it inside the bake and is still landing its calls.
    NoTakeoverMargin,
    /// The sweep does not ask CodePipeline whether a pre-product fleet's execution has ended.
    SweepTrustsTheFailedEvent,
}

impl Model {
    fn new(retries: bool, in_groups: bool) -> Self {
        let mut model = Model {
            retries,
            asg: groups::Asg {
                on: in_groups,
                ..Default::default()
            },
            alb: alb(vec![], vec![]),
            instances: Vec::new(),
            alarm: AlarmState::Ok,
            now: NOW,
            releases: 0,
            inflight: Vec::new(),
            continuations: Vec::new(),
            runs: Vec::new(),
            jobs: BTreeMap::new(),
            tokens: BTreeMap::new(),
            served_before: BTreeMap::new(),
            log: Vec::new(),
        };
        let first = model.new_fleet(Slot::Blue, Stage::Product);
        model.first_group(&first, Slot::Blue);
        model.served_before.insert(first, String::new());
        model
    }

    fn settings(&self) -> ServiceSettings {
        let mut settings = self.fleet_settings();
        if !self.retries {
            settings.retry_window_s = 0;
        }
        settings
    }

    /// The fleet that serves when the model starts.
    fn new_fleet(&mut self, slot: Slot, stage: Stage) -> String {
        self.releases += 1;
        let release = format!("r{}", self.releases);
        for index in 1..=COUNT {
            let id = format!("i-{release}-{index}");
            self.instances.push(running(&id, &release, index, stage));
            let group = self.group_mut(slot);
            group.targets.push(target(&id, Health::Healthy));
        }
        release
    }

    fn group_mut(&mut self, slot: Slot) -> &mut TargetGroup {
        match slot {
            Slot::Blue => &mut self.alb.blue,
            Slot::Green => &mut self.alb.green,
        }
    }

    fn slot_of(&self, arn: &str) -> Slot {
        self.alb.slot_of_arn(arn).expect("a slot's arn")
    }

    /// The slots product sends traffic to.
    fn product_slots(&self) -> Vec<Slot> {
        self.alb
            .product
            .forward
            .targets
            .iter()
            .filter(|t| t.weight != Some(0))
            .map(|t| self.slot_of(&t.arn))
            .collect()
    }

    fn run(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::Release { gradual } => self.enqueue(*gradual),
            Op::Approval { approve } => self.approval(*approve),
            Op::Forward { gradual } => self.go_forward_again(*gradual),
            Op::HandRollback { named } => {
                let named = named.then(|| release(&format!("r{}", self.releases)));
                self.start(Kind::Rollback {
                    named,
                    alarm_at: None,
                });
            }
            Op::Alarm { late } => {
                self.alarm = AlarmState::Alarm;
                let at = if *late { self.now - 7_200 } else { self.now };
                self.start(Kind::Rollback {
                    named: None,
                    alarm_at: Some(at),
                });
            }
            Op::AlarmClears => self.alarm = AlarmState::Ok,
            Op::Sweep => self.start(Kind::Sweep),
            Op::Advance(n) => {
                if !self.inflight.is_empty() {
                    let n = n % self.inflight.len();
                    self.advance(n)?;
                }
            }
            Op::Tick(seconds) => self.tick(*seconds),
            Op::ScaleOut => self.scale_out()?,
            Op::Retry(n) => {
                if !self.inflight.is_empty() {
                    let n = n % self.inflight.len();
                    if let Some(call) = self.inflight[n].last_call.clone() {
                        let kind = self.inflight[n].kind.clone();
                        self.log.push("  (retried)".to_owned());
                        self.apply(&kind, &call)?;
                    }
                }
            }
            Op::Duplicate(n) => {
                if !self.inflight.is_empty() {
                    let kind = self.inflight[n % self.inflight.len()].kind.clone();
                    self.duplicate(kind);
                }
            }
        }
        Ok(())
    }

    fn start(&mut self, kind: Kind) {
        self.start_attempt(kind, 1);
    }

    fn start_attempt(&mut self, kind: Kind, attempt: u32) {
        self.log.push(format!("start {kind:?}"));
        self.inflight.push(Invocation {
            kind,
            calls: None,
            next: None,
            reads: 0,
            started: self.now,
            last_call: None,
            attempt,
        });
    }

    fn go_forward_again(&mut self, gradual: bool) {
        if let Ok(RouteState::RolledBack { mark, .. }) =
            RouteState::read(&self.alb, &self.instances)
        {
            if !self.releasing()
                && slot_of_release(&self.alb, &self.instances, &mark.release).is_some()
            {
                let strategy = if gradual {
                    "linear:50:1"
                } else {
                    "all-at-once"
                };
                let strategy = Strategy::parse(strategy).unwrap();
                self.start_job(JobAction::Switch(strategy), release(&mark.release), None);
            }
        }
    }

    fn tick(&mut self, seconds: u64) {
        self.now += seconds;
        // Lambda ends an invocation at its timeout: what it had not sent is never sent.
        let now = self.now;
        let (ended, running): (Vec<Invocation>, Vec<Invocation>) =
            std::mem::take(&mut self.inflight)
                .into_iter()
                .partition(|i| {
                    i.calls.is_some() && i.started.saturating_add(SWITCH_LISTENER_TIMEOUT_S) < now
                });
        self.inflight = running;
        for invocation in ended {
            self.log
                .push(format!("{:?} ended at its timeout", invocation.kind));
            self.timed_out(invocation);
        }
        self.time_passes();
        let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut self.continuations)
            .into_iter()
            .partition(|(at, _)| *at <= self.now);
        self.continuations = later;
        for (_, kind) in due {
            self.start(kind);
        }
    }

    /// One read-and-plan, or one call, of the `n`th invocation in flight.
    fn advance(&mut self, n: usize) -> Result<(), String> {
        if self.inflight[n].calls.is_none() {
            let planned = self.plan(&self.inflight[n].kind);
            self.log.push(format!(
                "{:?} reads and plans {:?}",
                self.inflight[n].kind, planned
            ));
            let invocation = &mut self.inflight[n];
            invocation.reads += 1;
            invocation.started = self.now;
            match planned {
                Ok(plan) => {
                    invocation.calls = Some(plan.steps);
                    invocation.next = Some(plan.next);
                }
                Err(refusal) => {
                    let invocation = self.inflight.remove(n);
                    self.conclude(invocation, Next::Abort(refusal.to_string()));
                    return Ok(());
                }
            }
        } else if let Some(step) = self.inflight[n]
            .calls
            .as_mut()
            .and_then(|c| (!c.is_empty()).then(|| c.remove(0)))
        {
            let kind = self.inflight[n].kind.clone();
            self.apply(&kind, &step)?;
            self.inflight[n].last_call = Some(step);
        }
        if self.inflight[n]
            .calls
            .as_ref()
            .is_some_and(|c| c.is_empty())
        {
            let mut invocation = self.inflight.remove(n);
            let next = invocation.next.take().expect("planned");
            self.conclude(invocation, next);
        }
        Ok(())
    }

    /// An invocation that made all its calls: it looks again, or its job gets its result.
    fn conclude(&mut self, invocation: Invocation, next: Next) {
        if next == Next::Again && invocation.reads < 4 {
            self.inflight.push(Invocation {
                calls: None,
                next: None,
                last_call: None,
                ..invocation
            });
            return;
        }
        if let Kind::Job {
            id,
            action,
            release,
            progress,
        } = invocation.kind
        {
            self.acknowledge(id, action, release, progress, next);
        }
    }

    /// Every invocation and continuation to its end, time passing between continuations.
    fn settle(&mut self) -> Result<(), String> {
        for _ in 0..400 {
            if self.inflight.is_empty() && self.continuations.is_empty() {
                if self.runs.iter().any(|r| r.waits_for_approval()) {
                    self.approval(true);
                } else if !self.time_out_jobs() {
                    break;
                }
            }
            while !self.inflight.is_empty() {
                self.advance(0)?;
            }
            self.tick(60);
        }
        // Product left split (a rollback that a late step undid, or a shift whose job died at its
        // timeout) is what the on-call engineer rolls back: every rollback works mid-shift.
        if RouteState::read(&self.alb, &self.instances).is_ok_and(|s| s.is_moving()) {
            self.start(Kind::Rollback {
                named: None,
                alarm_at: None,
            });
            while !self.inflight.is_empty() {
                self.advance(0)?;
            }
        }
        Ok(())
    }

    /// Past every bake, retry window and the takeover margin, with no alarm firing, the sweep
    /// until the drains are over; twice, as a fleet the first sweeps restage as retired has a bake
    /// of its own.
    fn retire(&mut self) -> Result<(), String> {
        self.alarm = AlarmState::Ok;
        for _ in 0..3 {
            let settings = self.settings();
            let kept = settings.bake_s.max(settings.retry_window_s);
            self.tick(kept + 2 * SWITCH_LISTENER_TIMEOUT_S + 1);
            for _ in 0..4 {
                self.start(Kind::Sweep);
                while !self.inflight.is_empty() {
                    self.advance(0)?;
                }
                self.tick(60);
            }
        }
        Ok(())
    }

    /// Nothing runs but the fleet product forwards to.
    fn check_nothing_left(&self) -> Result<(), String> {
        let product: Vec<&TargetGroup> = self
            .product_slots()
            .into_iter()
            .map(|slot| self.alb.slot(slot))
            .collect();
        match self
            .instances
            .iter()
            .find(|i| !i.state.is_dead() && !product.iter().any(|g| g.has(&i.id)))
        {
            Some(left) => Err(format!(
                "{} of release {:?} ({:?}) is left running after the sweep",
                left.id,
                left.release.as_ref().map(ToString::to_string),
                left.stage
            )),
            None => Ok(()),
        }
    }

    /// What must hold once nothing is in flight.
    fn check_settled(&self) -> Result<(), String> {
        let state = RouteState::read(&self.alb, &self.instances)?;
        let slots = self.product_slots();
        if slots.len() != 1 {
            return Err(format!("settled with product split: {state:?}"));
        }
        if let RouteState::RolledBack { mark, slot } = state {
            let serving = release_in(&self.alb, &self.instances, slot).map(|r| r.to_string());
            let before = self.served_before.get(&mark.release);
            if serving.as_ref() != before {
                return Err(format!(
                    "rolled back from {} but {serving:?} serves, not {before:?}, which served before it",
                    mark.release
                ));
            }
        }
        Ok(())
    }
}

fn explore(ops: &[Op], retries: bool) -> Result<(), String> {
    explore_fleets(ops, retries, false)
}

fn explore_fleets(ops: &[Op], retries: bool, in_groups: bool) -> Result<(), String> {
    let mut model = Model::new(retries, in_groups);
    let mut outcome = Ok(());
    for op in ops {
        model.log.push(format!("{op:?}"));
        outcome = model.run(op);
        if outcome.is_err() {
            break;
        }
    }
    outcome = outcome
        .and_then(|()| model.settle())
        .and_then(|()| model.check_settled())
        .and_then(|()| model.check_pipeline())
        .and_then(|()| model.retire())
        .and_then(|()| model.check_settled())
        .and_then(|()| model.check_nothing_left())
        .and_then(|()| model.check_no_group_left());
    outcome.map_err(|breach| format!("{breach}\n{}", model.log.join("\n")))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_interleaving_of_releases_rollbacks_alarms_and_sweeps_breaks_an_invariant(
        retries in any::<bool>(),
        in_groups in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..100)
    ) {
        if let Err(breach) = explore_fleets(&ops, retries, in_groups) {
            prop_assert!(false, "{}", breach);
        }
    }
}
