//! The four functions: observe → plan → execute, and the CodePipeline contract around them.
//!
//! Every job invocation ends in exactly one `PutJobSuccessResult` (possibly with a continuation
//! token) or `PutJobFailureResult`, whatever went wrong before it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use tracing::{error, info, warn, Instrument};

use crate::error::Error;
use crate::event::{BadEvent, Invocation, JobRequest};
pub use crate::function::Function;
use crate::names::{ReleaseId, ServiceName};
use crate::plan::{self, CleanupScope, Next, Plan, Planned};
pub use crate::port::Notification;
use crate::port::{Acknowledgement, Cloud, InstanceQuery, Look, Parameters, Seen};
use crate::progress::{Phase, Progress};
use crate::settings::{
    parameter_name, LookupError, ParameterCache, Registry, ServiceSettings, Source,
};
use crate::world::Step;

mod converge;
mod executions;
mod notification;
mod outcome;

use self::converge::*;
pub use self::notification::*;
pub use self::outcome::*;

/// Rounds of observe → plan → execute within one invocation before handing over to a
/// continuation token.
const MAX_ROUNDS: usize = 4;
/// Before the cut (`converge::Deadline`), an invocation starts no new round: room for one more
/// round of calls. An invocation with less time keeps a quarter of what it has.
pub const HANDOVER_MARGIN: Duration = Duration::from_secs(20);
/// Kept for the acknowledgement and the message (side by side) after the cut: their operation
/// timeout (30 s, `aws::config_loader`) and a little more. An invocation with less time keeps half.
pub const ACKNOWLEDGEMENT_BUDGET: Duration = Duration::from_secs(35);
/// RunInstances calls in flight at once: fifty serial launches at real latency (0.5–2 s each)
/// would outlive the Lambda timeout; EC2's request rate limits favour a small bound.
pub const LAUNCH_PARALLELISM: usize = 8;

pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Everything built once at cold start. `cloud` is the port to the world: AWS in Lambda, an
/// in-memory one in `run`'s tests.
#[derive(Clone)]
pub struct App<C> {
    pub registry: Registry,
    pub cloud: C,
    pub topic_arn: Option<String>,
    pub clock: Clock,
    /// The switch-listener function a person invokes to roll back (named in every message).
    pub rollback_function: String,
    /// Settings read from SSM parameters, kept while the function stays warm.
    pub parameters: ParameterCache,
    /// switch-listener's Lambda timeout (`CUTOVER_SWITCH_LISTENER_TIMEOUT_S`): a rollback's calls
    /// land within it, so cleanup leaves a retired fleet alone for twice as long past its bake.
    pub switch_listener_timeout_s: u64,
}

/// The deployed switch-listener's name, from this function's own (`<stack>-<function>`).
pub fn rollback_function_name(own_name: Option<&str>, function: Function) -> String {
    let prefix = own_name
        .and_then(|name| name.strip_suffix(&format!("-{}", function.as_str())))
        .unwrap_or("cutover");
    format!("{prefix}-{}", Function::SwitchListener.as_str())
}

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

impl<C: Cloud> App<C> {
    /// Everything but the adapter from the Lambda environment; `cutover::serve` builds the
    /// adapter (AWS) and hands it in.
    pub fn from_env(function: Function, cloud: C) -> Self {
        App {
            registry: Registry::from_env(),
            cloud,
            topic_arn: std::env::var("CUTOVER_SNS_TOPIC_ARN")
                .ok()
                .filter(|t| !t.is_empty()),
            clock: system_clock(),
            rollback_function: rollback_function_name(
                std::env::var("AWS_LAMBDA_FUNCTION_NAME").ok().as_deref(),
                function,
            ),
            parameters: ParameterCache::default(),
            switch_listener_timeout_s: std::env::var("CUTOVER_SWITCH_LISTENER_TIMEOUT_S")
                .ok()
                .and_then(|s| s.parse().ok())
                .unwrap_or(plan::SWITCH_LISTENER_TIMEOUT_S),
        }
    }
}

impl<C: Cloud> App<C> {
    /// One Lambda invocation with no deadline (tests, local tools).
    pub async fn handle(&self, function: Function, event: Value) -> Result<Value, Error> {
        self.handle_until(function, event, None).await
    }

    /// One Lambda invocation that must end before `deadline` (the Lambda context's).
    pub async fn handle_until(
        &self,
        function: Function,
        event: Value,
        deadline: Option<SystemTime>,
    ) -> Result<Value, Error> {
        // Lambda's deadline is always ahead at the start; one already past comes from a runtime
        // that sets none (local emulators), and would hand every invocation over at once.
        let deadline = deadline
            .filter(|d| *d > SystemTime::now())
            .map(Deadline::before);
        let invocation = Invocation::parse(event)
            .inspect_err(|bad| warn!(function = function.as_str(), %bad, "rejected event"))?;
        match invocation {
            Invocation::Job { job_id, request } => {
                let span = tracing::info_span!(
                    "job",
                    function = function.as_str(),
                    job_id = %job_id,
                    service = request.as_ref().map(|r| r.service.to_string()).unwrap_or_default(),
                    release = request.as_ref().map(|r| r.release.to_string()).unwrap_or_default(),
                );
                Box::pin(
                    self.handle_job(function, &job_id, request, deadline)
                        .instrument(span),
                )
                .await
            }
            Invocation::PipelineExecution {
                pipeline,
                execution_id,
                state,
            } if function == Function::Cleanup && cfg!(feature = "cleanup") => {
                let span = tracing::info_span!("pipeline-execution", pipeline = %pipeline, release = %execution_id, state = %state);
                self.cleanup_failed_release(&execution_id, &state, deadline)
                    .instrument(span)
                    .await
            }
            Invocation::Schedule if function == Function::Cleanup && cfg!(feature = "cleanup") => {
                self.sweep(deadline)
                    .instrument(tracing::info_span!("sweep"))
                    .await
            }
            Invocation::AlarmChange { alarm, state, at }
                if function == Function::SwitchListener && cfg!(feature = "switch-listener") =>
            {
                let span = tracing::info_span!("alarm", alarm = %alarm, state = %state);
                Box::pin(
                    self.alarm_changed(&alarm, &state, at, deadline)
                        .instrument(span),
                )
                .await
            }
            Invocation::Rollback { service, release }
                if function == Function::SwitchListener && cfg!(feature = "switch-listener") =>
            {
                let span = tracing::info_span!("rollback", service = %service);
                Box::pin(
                    self.roll_back(&service, release.as_ref(), deadline)
                        .instrument(span),
                )
                .await
            }
            _ => {
                let bad = BadEvent(format!(
                    "{} does not accept this event (cleanup takes pipeline-execution and schedule \
                     events, switch-listener a rollback; every function takes CodePipeline jobs)",
                    function.as_str()
                ));
                warn!(%bad, "rejected event");
                Err(bad.into())
            }
        }
    }

    async fn handle_job(
        &self,
        function: Function,
        job_id: &str,
        request: Result<JobRequest, BadEvent>,
        deadline: Option<Deadline>,
    ) -> Result<Value, Error> {
        let started = Instant::now();
        let outcome = match &request {
            Ok(request) => Box::pin(self.run_job(function, request, deadline)).await,
            Err(bad) => Outcome::Failed {
                message: bad.to_string(),
                steps: Vec::new(),
            },
        };
        match &outcome {
            Outcome::Failed { message, .. } => error!(%message, "job failed"),
            Outcome::Continuing { waiting_for, .. } => {
                info!(waiting_for = waiting_for.as_str(), "job continues")
            }
            Outcome::Succeeded { summary, .. } => info!(%summary, "job succeeded"),
            Outcome::DryRun { summary, plan, .. } => {
                let plan = serde_json::to_string(plan).unwrap_or_default();
                info!(%summary, %plan, "dry run")
            }
        }
        // The acknowledgement and the message go side by side: what the message tells (product
        // moved, say) has happened whether or not CodePipeline hears it at once.
        let ack = acknowledgement(&outcome);
        let acknowledge = self.cloud.acknowledge(job_id, &ack);
        let tell = async {
            // A wait is not news, and a dry run is for whoever asked for it, not the channel.
            let news = !matches!(outcome, Outcome::Continuing { .. } | Outcome::DryRun { .. });
            if let (Ok(request), true) = (&request, news) {
                self.notify(
                    function,
                    &request.service,
                    Some(&request.release),
                    &outcome,
                    started,
                )
                .await;
            }
        };
        let (acknowledged, ()) = tokio::join!(acknowledge, tell);
        let acknowledged = acknowledged?;
        if !acknowledged {
            warn!(
                "CodePipeline says the job was already acknowledged; this was a duplicate delivery"
            );
        }
        Ok(json!({ "job_id": job_id, "acknowledged": acknowledged, "result": outcome }))
    }

    /// A CodePipeline job: converge, then say it the way CodePipeline hears it.
    async fn run_job(
        &self,
        function: Function,
        request: &JobRequest,
        deadline: Option<Deadline>,
    ) -> Outcome {
        let work = Work::Job { function, request };
        let Converged { stop, steps } = Box::pin(self.converge(&work, deadline)).await;
        match stop {
            Stop::Done {
                summary,
                outputs,
                notes,
            } => Outcome::Succeeded {
                summary,
                output_variables: outputs,
                steps,
                notes,
            },
            Stop::Waiting { phase, hold_from } => self.continuing(request, phase, hold_from, steps),
            Stop::Refused(message) | Stop::Aborted(message) => Outcome::Failed { message, steps },
            Stop::Broke(error) => Outcome::Failed {
                message: format!("{error}; re-run the stage to continue from here"),
                steps,
            },
            Stop::Planned(planned) => dry_run(planned),
        }
    }

    /// The continuation token for a wait: its start is kept across invocations of the same wait,
    /// so timeouts count from the first one.
    fn continuing(
        &self,
        request: &JobRequest,
        phase: Phase,
        hold_from: Option<u64>,
        steps: Vec<String>,
    ) -> Outcome {
        let mut progress = match &request.progress {
            Some(progress) if progress.phase == phase => progress.clone(),
            _ => Progress::new(phase, (self.clock)()),
        };
        if hold_from.is_some() {
            progress.stepped_at = hold_from;
        }
        Outcome::Continuing {
            waiting_for: phase,
            progress,
            steps,
        }
    }

    /// Runs cleanup for one service outside CodePipeline: no continuation, so a wait ends the
    /// run and the next sweep picks it up.
    async fn cleanup_service(
        &self,
        service: &ServiceName,
        scope: CleanupScope,
        deadline: Option<Deadline>,
    ) -> Outcome {
        let work = Work::Cleanup { service, scope };
        let Converged { stop, steps } = Box::pin(self.converge(&work, deadline)).await;
        settled_outside_a_job(stop, steps, |phase, steps| Outcome::Succeeded {
            summary: format!("{service}: waiting for {phase}; the next sweep finishes the job"),
            output_variables: BTreeMap::new(),
            steps,
            notes: Vec::new(),
        })
    }

    /// A rollback by hand: product back to the previous fleet in one call, told to the team.
    async fn roll_back(
        &self,
        service: &ServiceName,
        release: Option<&ReleaseId>,
        deadline: Option<Deadline>,
    ) -> Result<Value, Error> {
        let started = Instant::now();
        let outcome = self
            .rollback_outcome(&Work::Rollback { service, release }, deadline)
            .await;
        let undone = rolled_back_release(&outcome);
        let release = release.or(undone.as_ref());
        self.notify(
            Function::SwitchListener,
            service,
            release,
            &outcome,
            started,
        )
        .await;
        Ok(json!({ "service": service, "result": outcome }))
    }

    /// An alarm changed state. In ALARM, every service whose `ALARMS` name it is rolled back if
    /// it is inside its bake window, and told either way; other states change nothing.
    async fn alarm_changed(
        &self,
        alarm: &str,
        state: &str,
        at: Option<u64>,
        deadline: Option<Deadline>,
    ) -> Result<Value, Error> {
        if state != "ALARM" {
            info!("alarm state {state}: nothing to do");
            return Ok(json!({ "alarm": alarm, "state": state, "services": {} }));
        }
        // Which service the alarm is for is known only from the settings; what any discovery of
        // its slots starts with is read beside them. The services its name says it is for
        // (`cutover-<service>-…`) are read and rolled back first; every other service naming it
        // is looked for while they roll back (reading every parameter takes a page per ten
        // services), and rolled back after.
        let (likely, ()) = tokio::join!(self.services_named_like(alarm), self.cloud.survey_slots());
        let likely = likely?;
        let (mut results, everyone) = tokio::join!(
            Box::pin(self.roll_back_on_alarm(&likely, alarm, at, deadline)),
            self.services_naming(alarm)
        );
        let rest: Vec<ServiceName> = everyone?
            .into_iter()
            .filter(|service| !results.contains_key(service.as_str()))
            .collect();
        results.extend(Box::pin(self.roll_back_on_alarm(&rest, alarm, at, deadline)).await);
        if results.is_empty() {
            warn!("no service's ALARMS names this alarm");
        }
        Ok(json!({ "alarm": alarm, "state": state, "services": results }))
    }

    /// Rolls back each service for `alarm` (if it is inside its bake), and tells its team.
    async fn roll_back_on_alarm(
        &self,
        services: &[ServiceName],
        alarm: &str,
        at: Option<u64>,
        deadline: Option<Deadline>,
    ) -> BTreeMap<String, Outcome> {
        let mut results = BTreeMap::new();
        for service in services {
            let started = Instant::now();
            let work = Work::AlarmRollback { service, alarm, at };
            let outcome = self.rollback_outcome(&work, deadline).await;
            let undone = rolled_back_release(&outcome);
            self.notify(
                Function::SwitchListener,
                service,
                undone.as_ref(),
                &outcome,
                started,
            )
            .await;
            results.insert(service.to_string(), outcome);
        }
        results
    }

    /// The services `alarm`'s name says it is for (`cutover-<service>-…`, every way of reading
    /// it) whose settings name it: known ones, else their parameters read now, one call each,
    /// side by side.
    async fn services_named_like(&self, alarm: &str) -> Result<Vec<ServiceName>, Error> {
        let known = self.services_known_to_name(alarm);
        if !known.is_empty() {
            return Ok(known);
        }
        let names: Vec<String> = services_an_alarm_name_suggests(alarm)
            .iter()
            .map(parameter_name)
            .filter(|name| !self.parameters.contains(name))
            .collect();
        let reads = names
            .iter()
            .map(|name| self.cloud.parameters(Parameters::One(name)));
        for (name, read) in names
            .iter()
            .zip(futures_util::future::join_all(reads).await)
        {
            self.parameters.put(name, &read?);
        }
        Ok(self.services_known_to_name(alarm))
    }

    /// Services whose settings (variables, then parameters) name `alarm` in their `ALARMS`. An
    /// alarm no service is known to name makes the parameters read again, once: a service's
    /// `ALARMS` may have grown since this container read them.
    async fn services_naming(&self, alarm: &str) -> Result<Vec<ServiceName>, Error> {
        let fresh = !self.parameters.loaded();
        self.load_parameters_once().await?;
        let services = self.services_known_to_name(alarm);
        if !services.is_empty() || fresh {
            return Ok(services);
        }
        info!("no service is known to name this alarm: reading the settings parameters again");
        self.parameters
            .fill(self.cloud.parameters(Parameters::All).await?);
        Ok(self.services_known_to_name(alarm))
    }

    fn services_known_to_name(&self, alarm: &str) -> Vec<ServiceName> {
        let names_it = |parsed: &Result<ServiceSettings, _>| {
            parsed
                .as_ref()
                .is_ok_and(|s: &ServiceSettings| s.alarms.iter().any(|a| a == alarm))
        };
        let from_variables = self
            .registry
            .variables()
            .filter(|(_, parsed)| names_it(parsed))
            .map(|(variable, _)| variable.to_ascii_lowercase().replace('_', "-"));
        let from_parameters = self
            .parameters
            .entries()
            .into_iter()
            .filter(|(_, parsed)| names_it(parsed))
            .filter_map(|(name, _)| {
                name.strip_prefix(&format!("{}/", crate::settings::PARAMETER_PATH))
                    .map(str::to_owned)
            });
        let services: BTreeSet<String> = from_variables.chain(from_parameters).collect();
        services
            .iter()
            .filter_map(|s| ServiceName::parse(s).ok())
            .collect()
    }

    /// A rollback (by hand or by an alarm), converged and told as an outcome: it never waits.
    async fn rollback_outcome(&self, work: &Work<'_>, deadline: Option<Deadline>) -> Outcome {
        let Converged { stop, steps } = Box::pin(self.converge(work, deadline)).await;
        settled_outside_a_job(stop, steps, |phase, steps| Outcome::Failed {
            message: format!(
                "the rollback of {} stopped waiting for {phase}; run it again",
                work.service()
            ),
            steps,
        })
    }

    /// A pipeline execution ended without releasing: remove its pre-product instances.
    async fn cleanup_failed_release(
        &self,
        release: &ReleaseId,
        state: &str,
        deadline: Option<Deadline>,
    ) -> Result<Value, Error> {
        let started = Instant::now();
        let scope = match state {
            // CodePipeline V2 may still retry the failed stage: kept for a while.
            "FAILED" => CleanupScope::FailedExecution(release.clone()),
            "CANCELED" | "SUPERSEDED" | "STOPPED" => CleanupScope::FailedRelease(release.clone()),
            "RESUMED" => CleanupScope::Resumed(release.clone()),
            _ => {
                info!("pipeline execution is {state}: nothing to clean up");
                return Ok(json!({ "ignored": state }));
            }
        };
        let instances = self
            .cloud
            .instances(InstanceQuery::Release(release.as_str()))
            .await?;
        let services: BTreeSet<String> = instances.iter().map(|i| i.service.clone()).collect();
        let mut results = BTreeMap::new();
        for service in services {
            let outcome = match ServiceName::parse(&service) {
                Ok(name) => {
                    let outcome = self.cleanup_service(&name, scope.clone(), deadline).await;
                    self.notify(Function::Cleanup, &name, Some(release), &outcome, started)
                        .await;
                    outcome
                }
                Err(why) => Outcome::Failed {
                    message: why,
                    steps: Vec::new(),
                },
            };
            results.insert(service, outcome);
        }
        Ok(json!({ "release": release, "state": state, "services": results }))
    }

    /// The scheduled sweep: every service's retired instances past their bake time. Services it
    /// has no time left for are the next sweep's (every five minutes).
    async fn sweep(&self, deadline: Option<Deadline>) -> Result<Value, Error> {
        let started = Instant::now();
        let instances = self.cloud.instances(InstanceQuery::AllServices).await?;
        let services: BTreeSet<String> = instances.iter().map(|i| i.service.clone()).collect();
        let mut results = BTreeMap::new();
        let mut not_reached = Vec::new();
        for service in services {
            let Ok(name) = ServiceName::parse(&service) else {
                continue;
            };
            if out_of_time(deadline) {
                not_reached.push(service);
                continue;
            }
            let outcome = self
                .cleanup_service(&name, CleanupScope::Expired, deadline)
                .await;
            let changed = matches!(&outcome, Outcome::Succeeded { steps, .. } if !steps.is_empty());
            if changed || matches!(outcome, Outcome::Failed { .. }) {
                self.notify(Function::Cleanup, &name, None, &outcome, started)
                    .await;
            }
            results.insert(service, outcome);
        }
        if !not_reached.is_empty() {
            warn!(
                ?not_reached,
                "out of time: the next sweep takes these services"
            );
        }
        Ok(json!({ "sweep": results, "not_reached": not_reached }))
    }

    /// One SNS message per outcome; no topic, no message. A failed publish is logged, never fatal.
    async fn notify(
        &self,
        function: Function,
        service: &ServiceName,
        release: Option<&ReleaseId>,
        outcome: &Outcome,
        started: Instant,
    ) {
        let Some(topic) = &self.topic_arn else { return };
        let message = notification(
            function,
            service,
            release,
            outcome,
            started.elapsed(),
            &self.rollback_function,
        );
        if let Err(error) = self.cloud.publish(topic, &message).await {
            error!(%error, topic, "could not publish the notification; the outcome stands");
        }
    }
}

/// The release a rollback undid (or found undone), which its message threads under.
fn rolled_back_release(outcome: &Outcome) -> Option<ReleaseId> {
    match outcome {
        Outcome::Succeeded {
            output_variables, ..
        } => output_variables
            .get(plan::ROLLED_BACK_RELEASE)
            .and_then(|r| ReleaseId::parse(r).ok()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;

/// `cutover-mobile-zum-api-5xx` → `mobile`, `mobile-zum`, `mobile-zum-api`, `mobile-zum-api-5xx`:
/// the services an alarm named by the convention (`cutover-<service>-…`) may be for.
fn services_an_alarm_name_suggests(alarm: &str) -> Vec<ServiceName> {
    let Some(rest) = alarm.strip_prefix("cutover-") else {
        return Vec::new();
    };
    rest.match_indices('-')
        .map(|(at, _)| &rest[..at])
        .chain([rest])
        .filter_map(|name| ServiceName::parse(name).ok())
        .collect()
}
