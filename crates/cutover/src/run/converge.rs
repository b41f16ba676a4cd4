//! One loop behind every job and cleanup: observe → plan → execute, until the plan is done,
//! waits, refuses, or the rounds or the deadline run out.

use super::*;
use std::collections::BTreeMap;

use crate::names::ReleaseId;
use crate::world::Alb;

impl<C: Cloud> App<C> {
    /// Observe → plan → execute until the plan is done, waits, refuses or the rounds or the
    /// deadline run out. The one loop behind every job and every cleanup outside CodePipeline.
    pub(super) async fn converge(&self, work: &Work<'_>, deadline: Option<Deadline>) -> Converged {
        let mut steps = Vec::new();
        let stop = |stop: Stop, steps: Vec<String>| Converged { stop, steps };
        let refused = |why: String| match work.dry_run() {
            true => Stop::Planned(Err(plan::Refusal(why))),
            false => Stop::Refused(why),
        };
        // Settings that must be read (a cold start's parameter) are read beside the search for
        // the slots and routes, which needs none of them; what needs the settings (instances,
        // records, addresses, alarms) is read as soon as they are, still beside the search.
        let (settings, mut found_alb, mut first_seen) = if self.settings_ready(work.service()) {
            (self.settings_of(work.service()).await, None, None)
        } else {
            // The settings' LISTENER goes to the search as soon as they are read.
            let (listener, listener_named) = tokio::sync::oneshot::channel();
            let listener_named = async { listener_named.await.ok().flatten() };
            // Boxed, as the reads below: inline, these futures overflow a test thread's stack.
            let ((settings, seen), alb) = Box::pin(async {
                tokio::join!(
                    self.settings_then_what_needs_them(work, listener),
                    self.cloud
                        .alb(work.service(), work.function(), listener_named)
                )
            })
            .await;
            let first_seen = match (seen, &alb) {
                (Some(Ok(seen)), Ok(alb)) => Some(Seen {
                    alb: alb.clone(),
                    ..seen
                }),
                _ => None,
            };
            (settings, alb.ok(), first_seen)
        };
        let (mut settings, source) = match settings {
            Ok(Ok(found)) => found,
            Ok(Err(unusable)) => return stop(refused(unusable), steps),
            Err(error) => return stop(Stop::Broke(error), steps),
        };
        info!(source = %source, "settings");
        for round in 0..MAX_ROUNDS {
            // Every invocation does its first round, so a short deadline still makes progress.
            if round > 0 && out_of_time(deadline) {
                return stop(Stop::waiting(Phase::Handover), steps);
            }
            // Boxed: the reads' future is large, and inline it would sit in every frame above.
            let alb = found_alb.take();
            let seen = first_seen.take();
            let observed = Box::pin(self.observe_and_plan(work, &mut settings, &source, alb, seen));
            // After the first round, reads that would outlive the cut are abandoned.
            let observed = match deadline.filter(|_| round > 0) {
                Some(deadline) => match deadline.cut(observed).await {
                    Some(observed) => observed,
                    None => return stop(Stop::waiting(Phase::Handover), steps),
                },
                None => observed.await,
            };
            let planned = match observed {
                Ok(Ok(planned)) => planned,
                Ok(Err(unusable)) => return stop(refused(unusable), steps),
                Err(error) => return stop(Stop::Broke(error), steps),
            };
            if work.dry_run() {
                return stop(Stop::Planned(planned), steps);
            }
            let plan = match planned {
                Ok(plan) => plan,
                Err(refusal) => return stop(Stop::Refused(refusal.0), steps),
            };
            match self.execute(&plan.steps, &mut steps, deadline).await {
                Ok(Executed::All) => {}
                Ok(Executed::OutOfTime) => return stop(Stop::waiting(Phase::Handover), steps),
                Err(error) => return stop(Stop::Broke(error), steps),
            }
            let next = match plan.next {
                Next::Again => continue,
                Next::Done(summary) => Stop::Done {
                    summary,
                    outputs: plan.outputs,
                    notes: plan.notes,
                },
                Next::Wait { phase, hold_from } => Stop::Waiting { phase, hold_from },
                Next::Abort(message) => Stop::Aborted(message),
            };
            return stop(next, steps);
        }
        stop(Stop::waiting(Phase::Convergence), steps)
    }

    /// What the work needs to see (the port decides which reads that takes), and the plan. A
    /// service whose settings are a parameter re-reads it beside those reads, so an edited
    /// parameter takes effect without a cold start (a changed one means one more look).
    pub(super) async fn observe_and_plan(
        &self,
        work: &Work<'_>,
        settings: &mut ServiceSettings,
        source: &Source,
        alb: Option<Alb>,
        seen: Option<Seen>,
    ) -> Result<Result<Planned, String>, Error> {
        // A cold start's first round: seen already, beside the settings it just read.
        if let Some(seen) = seen {
            return Ok(Ok(self.plan_seen(work, settings, seen).await?));
        }
        let look = |settings| Look {
            function: work.function(),
            service: work.service(),
            settings,
            alb: alb.as_ref(),
        };
        let seen = match source {
            Source::Variable(_) => self.cloud.observe(look(settings)).await?,
            Source::Parameter(name) => {
                let current = settings.clone();
                let (seen, fresh) = tokio::join!(
                    self.cloud.observe(look(&current)),
                    self.cloud.parameters(Parameters::One(name))
                );
                match self.parameters.put(name, &fresh?) {
                    Some(Ok(fresh)) if fresh == *settings => seen?,
                    Some(Ok(fresh)) => {
                        *settings = fresh;
                        self.cloud.observe(look(settings)).await?
                    }
                    Some(Err(invalid)) => return Ok(Err(invalid.to_string())),
                    None => return Ok(Err(format!("parameter {name} was deleted"))),
                }
            }
        };
        Ok(Ok(self.plan_seen(work, settings, seen).await?))
    }

    /// The plan from what was seen, with what CodePipeline says of the executions it needs.
    async fn plan_seen(
        &self,
        work: &Work<'_>,
        settings: &ServiceSettings,
        seen: Seen,
    ) -> Result<Planned, Error> {
        let seen = self.with_executions(work, seen).await?;
        let takeover_s = 2 * self.switch_listener_timeout_s;
        Ok(plan_for(work, settings, &seen, (self.clock)(), takeover_s))
    }

    /// A cold start's settings, then what needs them (everything but the slots and routes,
    /// which are searched for beside this).
    async fn settings_then_what_needs_them(
        &self,
        work: &Work<'_>,
        listener: tokio::sync::oneshot::Sender<Option<String>>,
    ) -> (
        Result<Result<(ServiceSettings, Source), String>, Error>,
        Option<Result<Seen, Error>>,
    ) {
        let settings = self.settings_of(work.service()).await;
        if let Ok(Ok((settings, _))) = &settings {
            // The search may have finished without it (a warm container's, or a failed one).
            let _ = listener.send(settings.listener.clone());
        }
        let seen = match &settings {
            Ok(Ok((settings, _))) => {
                let elsewhere = Alb::read_elsewhere();
                let look = Look {
                    function: work.function(),
                    service: work.service(),
                    settings,
                    alb: Some(&elsewhere),
                };
                Some(Box::pin(self.cloud.observe(look)).await)
            }
            _ => None,
        };
        (settings, seen)
    }

    /// Whether the service's settings are at hand without a read (its variable, or its parameter
    /// as read before).
    fn settings_ready(&self, service: &ServiceName) -> bool {
        match self.registry.get(service) {
            Ok(_) | Err(LookupError::Invalid(_)) => true,
            Err(LookupError::Unknown { .. }) => {
                matches!(self.parameters.get(&parameter_name(service)), Some(Ok(_)))
            }
        }
    }

    /// A service's settings: its variable, else its parameter (read on first use, and again
    /// while it is broken). `Ok(Err(..))`: none usable, and why.
    pub(super) async fn settings_of(
        &self,
        service: &ServiceName,
    ) -> Result<Result<(ServiceSettings, Source), String>, Error> {
        let unknown = match self.registry.get(service) {
            Ok(settings) => {
                let variable = service.settings_variable();
                return Ok(Ok((settings.clone(), Source::Variable(variable))));
            }
            Err(LookupError::Invalid(invalid)) => return Ok(Err(invalid.to_string())),
            Err(unknown @ LookupError::Unknown { .. }) => unknown,
        };
        let name = parameter_name(service);
        // Only the service's own parameter (one call, not every service's in pages). One not
        // read yet, or read broken, is read now: an error is never kept, so a fixed parameter
        // works without a cold start.
        if !matches!(self.parameters.get(&name), Some(Ok(_))) {
            let read = self.cloud.parameters(Parameters::One(&name)).await?;
            self.parameters.put(&name, &read);
        }
        Ok(match self.parameters.get(&name) {
            Some(Ok(settings)) => Ok((settings, Source::Parameter(name))),
            Some(Err(invalid)) => Err(invalid.to_string()),
            None => Err(unknown.to_string()),
        })
    }

    /// Reads every parameter the first time any is needed; later calls read nothing.
    pub(super) async fn load_parameters_once(&self) -> Result<(), Error> {
        if !self.parameters.loaded() {
            let all = self.cloud.parameters(Parameters::All).await?;
            self.parameters.fill(all);
        }
        Ok(())
    }

    /// Carries out the steps round by round (`world::rounds`): the calls of a round side by
    /// side, each round after the one before. After the first round it stops early, with what is
    /// done, when the deadline is near: the next invocation plans the rest from what it sees.
    pub(super) async fn execute(
        &self,
        steps: &[Step],
        done: &mut Vec<String>,
        deadline: Option<Deadline>,
    ) -> Result<Executed, Error> {
        for (n, now) in crate::world::rounds(steps, LAUNCH_PARALLELISM)
            .into_iter()
            .enumerate()
        {
            if n > 0 && out_of_time(deadline) {
                return Ok(Executed::OutOfTime);
            }
            let mut running = tokio::task::JoinSet::new();
            for (position, step) in now.iter().enumerate() {
                let (cloud, step) = (self.cloud.clone(), step.clone());
                running
                    .spawn(async move { (position, cloud.execute(&step).await) }.in_current_span());
            }
            // The first round always runs to its end (each call is bounded by its operation
            // timeout); a later one still running at the cut is abandoned, its calls dropped:
            // AWS may have applied them, and the next invocation plans from what it sees.
            let cut = deadline.filter(|_| n > 0);
            let mut results: Vec<(usize, Result<(), Error>)> = Vec::new();
            let mut abandoned = false;
            loop {
                let next = match cut {
                    Some(deadline) => match deadline.cut(running.join_next()).await {
                        Some(next) => next,
                        None => {
                            running.abort_all();
                            abandoned = true;
                            break;
                        }
                    },
                    None => running.join_next().await,
                };
                match next {
                    Some(Ok(result)) => results.push(result),
                    Some(Err(joined)) if joined.is_panic() => {
                        std::panic::resume_unwind(joined.into_panic())
                    }
                    Some(Err(_)) => {}
                    None => break,
                }
            }
            results.sort_by_key(|(position, _)| *position);
            let mut failure = None;
            for (position, result) in results {
                let description = now[position].describe();
                match result {
                    Ok(()) => {
                        info!(step = %description, "done");
                        done.push(description);
                    }
                    Err(error) => {
                        error!(step = %description, %error, "step failed");
                        failure.get_or_insert(error);
                    }
                }
            }
            if let Some(error) = failure {
                return Err(error);
            }
            if abandoned {
                warn!("calls still running at the cut were abandoned; the next invocation goes on");
                return Ok(Executed::OutOfTime);
            }
        }
        Ok(Executed::All)
    }
}

/// The planner of the work, on what was seen.
pub(super) fn plan_for(
    work: &Work<'_>,
    settings: &ServiceSettings,
    seen: &Seen,
    now: u64,
    takeover_s: u64,
) -> Planned {
    let on = Observed {
        settings,
        seen,
        now,
        takeover_s,
    };
    // Each arm is guarded by its function's feature: a binary built for one function has the
    // others' arms dead at compile time, so their planners are not linked in.
    let planned = match work {
        Work::Job { function, request } => plan_job(work, *function, request, &on),
        Work::Cleanup { service, scope } if cfg!(feature = "cleanup") => {
            on.cleanup(service, scope.clone(), None)
        }
        Work::Rollback { .. } if cfg!(feature = "switch-listener") => {
            roll_back(work, plan::Trigger::Hand, settings, seen, now)
        }
        Work::AlarmRollback { alarm, at, .. } if cfg!(feature = "switch-listener") => {
            let trigger = plan::Trigger::Alarm {
                name: alarm,
                at: *at,
            };
            roll_back(work, trigger, settings, seen, now)
        }
        _ => not_built(work.function()),
    };
    if settings.fleet.is_group() {
        plan::through_groups(planned, &seen.groups, &seen.instances)
    } else {
        planned
    }
}

/// What a planner is handed besides the work itself.
struct Observed<'a> {
    settings: &'a ServiceSettings,
    seen: &'a Seen,
    now: u64,
    takeover_s: u64,
}

impl Observed<'_> {
    fn cleanup(
        &self,
        service: &ServiceName,
        scope: CleanupScope,
        progress: Option<&Progress>,
    ) -> Planned {
        let seen = self.seen;
        let input = plan::CleanupInput {
            service,
            scope,
            settings: self.settings,
            alb: &seen.alb,
            instances: &seen.instances,
            groups: &seen.groups,
            addresses: &seen.addresses,
            dns: seen.dns.as_ref(),
            alarms: &seen.alarms,
            takeover_s: self.takeover_s,
            executions: &seen.executions,
            progress,
            now: self.now,
        };
        let planned = plan::cleanup(&input);
        if !self.settings.fleet.is_group() {
            return planned;
        }
        let leftovers = plan::leftovers(&input, &seen.groups, &seen.templates);
        planned.map(|mut plan| {
            plan.steps.extend(leftovers);
            plan
        })
    }
}

/// A CodePipeline job's planner.
fn plan_job(work: &Work<'_>, function: Function, request: &JobRequest, on: &Observed) -> Planned {
    let (service, release) = (&request.service, &request.release);
    let (settings, seen, now) = (on.settings, on.seen, on.now);
    let progress = request.progress.as_ref();
    match function {
        Function::Provision if cfg!(feature = "provision") => {
            plan::provision(&plan::ProvisionInput {
                service,
                release,
                settings,
                instances: &seen.instances,
                addresses: &seen.addresses,
                dns: seen.dns.as_ref(),
                groups: &seen.groups,
                templates: &seen.templates,
                ami: request.ami.as_deref(),
                // A release that could not take the lock must not launch anything.
                lock: seen.alb.product.lock.as_ref(),
                lock_holder: seen.lock_holder.as_ref(),
                progress,
                now,
            })
        }
        Function::RegisterTarget if cfg!(feature = "register-target") => {
            plan::register(&plan::RegisterInput {
                service,
                release,
                settings,
                alb: &seen.alb,
                instances: &seen.instances,
                lock_holder: seen.lock_holder.as_ref(),
                progress,
                now,
            })
        }
        Function::SwitchListener
            if cfg!(feature = "switch-listener")
                && request.action == crate::event::Action::Rollback =>
        {
            roll_back(work, plan::Trigger::Pipeline, settings, seen, now)
        }
        Function::SwitchListener if cfg!(feature = "switch-listener") => {
            plan::switch(&plan::SwitchInput {
                service,
                release,
                action: request.action,
                settings,
                alb: &seen.alb,
                instances: &seen.instances,
                addresses: &seen.addresses,
                dns: seen.dns.as_ref(),
                strategy: request.strategy,
                alarms: &seen.alarms,
                ignore_alarms: request.ignore_alarms,
                progress,
                now,
            })
        }
        Function::Cleanup if cfg!(feature = "cleanup") => {
            on.cleanup(service, CleanupScope::Expired, progress)
        }
        _ => not_built(function),
    }
}

/// A function this binary was not built for (each binary is built with its own feature).
fn not_built(function: Function) -> Planned {
    Err(plan::Refusal(format!(
        "this binary was built without the `{}` feature",
        function.as_str()
    )))
}

/// A rollback by hand or by an alarm: `plan::roll_back` reads the route's state.
fn roll_back(
    work: &Work<'_>,
    trigger: plan::Trigger<'_>,
    settings: &ServiceSettings,
    seen: &Seen,
    now: u64,
) -> Planned {
    let release = match work {
        Work::Rollback { release, .. } => *release,
        _ => None,
    };
    plan::roll_back(&plan::RollbackInput {
        service: work.service(),
        release,
        trigger,
        settings,
        alb: &seen.alb,
        instances: &seen.instances,
        addresses: &seen.addresses,
        dns: seen.dns.as_ref(),
        alarms: &seen.alarms,
        now,
    })
}

/// What a converge loop works on.
pub(super) enum Work<'a> {
    /// A CodePipeline job of one function.
    Job {
        function: Function,
        request: &'a JobRequest,
    },
    /// A cleanup outside CodePipeline (a failed execution's event, the sweep).
    Cleanup {
        service: &'a ServiceName,
        scope: CleanupScope,
    },
    /// A rollback by hand of whatever release serves product, or of the one named.
    Rollback {
        service: &'a ServiceName,
        release: Option<&'a ReleaseId>,
    },
    /// A rollback because one of the service's alarms fired, if inside its bake window.
    AlarmRollback {
        service: &'a ServiceName,
        alarm: &'a str,
        /// The event's time.
        at: Option<u64>,
    },
}

impl Work<'_> {
    pub(super) fn service(&self) -> &ServiceName {
        match self {
            Work::Job { request, .. } => &request.service,
            Work::Cleanup { service, .. }
            | Work::Rollback { service, .. }
            | Work::AlarmRollback { service, .. } => service,
        }
    }

    pub(super) fn function(&self) -> Function {
        match self {
            Work::Job { function, .. } => *function,
            Work::Cleanup { .. } => Function::Cleanup,
            Work::Rollback { .. } | Work::AlarmRollback { .. } => Function::SwitchListener,
        }
    }

    pub(super) fn dry_run(&self) -> bool {
        matches!(self, Work::Job { request, .. } if request.dry_run)
    }
}

/// How a converge loop stopped, and the steps it carried out on the way.
pub(super) struct Converged {
    pub(super) stop: Stop,
    pub(super) steps: Vec<String>,
}

pub(super) enum Stop {
    Done {
        summary: String,
        outputs: BTreeMap<String, String>,
        notes: Vec<String>,
    },
    Waiting {
        phase: Phase,
        hold_from: Option<u64>,
    },
    /// The planner refused (or the settings are unusable): nothing was changed by this round.
    Refused(String),
    /// An automatic rollback was carried out; the job fails with this message.
    Aborted(String),
    /// Reading or changing AWS failed.
    Broke(Error),
    /// A dry run: the plan (or the refusal), nothing carried out.
    Planned(Planned),
}

impl Stop {
    pub(super) fn waiting(phase: Phase) -> Self {
        Stop::Waiting {
            phase,
            hold_from: None,
        }
    }
}

/// How far `execute` got.
pub(super) enum Executed {
    All,
    /// The deadline came first; the rest is for the next invocation.
    OutOfTime,
}

/// When an invocation that must end by Lambda's deadline stops: `handover`, after which it starts
/// no new round; `cut`, when whatever still runs is abandoned, leaving the acknowledgement and
/// the message their own operation timeout before the deadline.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline {
    pub(super) handover: SystemTime,
    pub(super) cut: SystemTime,
}

impl Deadline {
    pub(super) fn before(lambda_deadline: SystemTime) -> Self {
        let left = |until: SystemTime| until.duration_since(SystemTime::now()).unwrap_or_default();
        let cut = lambda_deadline - ACKNOWLEDGEMENT_BUDGET.min(left(lambda_deadline) / 2);
        let handover = cut - HANDOVER_MARGIN.min(left(cut) / 4);
        Deadline { handover, cut }
    }

    /// `work`, unless the cut comes first.
    pub(super) async fn cut<T>(&self, work: impl std::future::Future<Output = T>) -> Option<T> {
        let left = self
            .cut
            .duration_since(SystemTime::now())
            .unwrap_or_default();
        tokio::time::timeout(left, work).await.ok()
    }
}

pub(super) fn out_of_time(deadline: Option<Deadline>) -> bool {
    deadline.is_some_and(|d| SystemTime::now() >= d.handover)
}
