//! The four functions: observe → plan → execute, and the CodePipeline contract around them.
//!
//! Every job invocation ends in exactly one `PutJobSuccessResult` (possibly with a continuation
//! token) or `PutJobFailureResult`, whatever went wrong before it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::{json, Value};
use tracing::{error, info, warn, Instrument};

use crate::aws::{Aws, InstanceQuery};
use crate::error::Error;
use crate::event::{BadEvent, Invocation, JobRequest};
use crate::names::{ReleaseId, ServiceName};
use crate::plan::{self, CleanupScope, Next, Plan, Planned};
use crate::progress::{Phase, Progress};
use crate::settings::{Registry, ServiceSettings};
use crate::world::{Instance, Step};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Function {
    Provision,
    RegisterTarget,
    SwitchListener,
    Cleanup,
}

/// IAM actions every function may call (its reads, the job acknowledgement, notifications).
const COMMON_ACTIONS: &[&str] = &[
    "ec2:DescribeInstances",
    "elasticloadbalancing:DescribeTargetGroups",
    "elasticloadbalancing:DescribeTags",
    "elasticloadbalancing:DescribeListeners",
    "elasticloadbalancing:DescribeRules",
    "elasticloadbalancing:DescribeTargetHealth",
    "codepipeline:PutJobSuccessResult",
    "codepipeline:PutJobFailureResult",
    "sns:Publish",
];
const DNS_ACTIONS: &[&str] = &[
    "route53:GetHostedZone",
    "route53:ListResourceRecordSets",
    "route53:ChangeResourceRecordSets",
];

impl Function {
    /// The IAM actions this function's code calls: `infra/template.yaml` must grant each one, and
    /// the end-to-end tests check that the calls made stay within this list.
    pub fn aws_actions(self) -> Vec<&'static str> {
        let own: &[&str] = match self {
            Function::Provision => &[
                "ec2:DescribeAddresses",
                "ec2:RunInstances",
                "ec2:CreateTags",
                "ec2:AssociateAddress",
                "ec2:TerminateInstances",
            ],
            Function::RegisterTarget => &[
                "elasticloadbalancing:RegisterTargets",
                "elasticloadbalancing:DeregisterTargets",
                "elasticloadbalancing:ModifyRule",
                "elasticloadbalancing:ModifyListener",
                "elasticloadbalancing:AddTags",
            ],
            Function::SwitchListener => &[
                "ec2:DescribeAddresses",
                "ec2:CreateTags",
                "ec2:DeleteTags",
                "ec2:AssociateAddress",
                "elasticloadbalancing:ModifyRule",
                "elasticloadbalancing:ModifyListener",
                "elasticloadbalancing:AddTags",
                "elasticloadbalancing:RemoveTags",
            ],
            Function::Cleanup => &[
                "ec2:DescribeAddresses",
                "ec2:CreateTags",
                "ec2:TerminateInstances",
                "ec2:DisassociateAddress",
                "elasticloadbalancing:DeregisterTargets",
                "elasticloadbalancing:RemoveTags",
            ],
        };
        let dns = if self.writes_dns() { DNS_ACTIONS } else { &[] };
        COMMON_ACTIONS
            .iter()
            .chain(own)
            .chain(dns)
            .copied()
            .collect()
    }

    fn writes_dns(self) -> bool {
        self != Function::RegisterTarget
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Function::Provision => "provision",
            Function::RegisterTarget => "register-target",
            Function::SwitchListener => "switch-listener",
            Function::Cleanup => "cleanup",
        }
    }
}

/// Rounds of observe → plan → execute within one invocation before handing over to a
/// continuation token.
const MAX_ROUNDS: usize = 4;
/// Left of the Lambda timeout when an invocation stops working and hands over with a
/// continuation token: enough for the acknowledgement and a notification. An invocation with less
/// time than four margins keeps a quarter of what it has, so a short timeout still makes progress.
pub const HANDOVER_MARGIN: Duration = Duration::from_secs(20);
/// RunInstances calls in flight at once: fifty serial launches at real latency (0.5–2 s each)
/// would outlive the Lambda timeout; EC2's request rate limits favour a small bound.
pub const LAUNCH_PARALLELISM: usize = 8;

pub type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

/// Everything built once at cold start.
#[derive(Clone)]
pub struct App {
    pub registry: Registry,
    pub aws: Aws,
    pub topic_arn: Option<String>,
    pub clock: Clock,
}

pub fn system_clock() -> Clock {
    Arc::new(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    })
}

/// How one job invocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    Succeeded {
        summary: String,
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        output_variables: BTreeMap<String, String>,
        steps: Vec<String>,
        notes: Vec<String>,
    },
    Continuing {
        waiting_for: Phase,
        progress: Progress,
        steps: Vec<String>,
    },
    Failed {
        message: String,
        steps: Vec<String>,
    },
    /// A dry run: what the function would do, changed nothing and told no one.
    DryRun {
        summary: String,
        /// Why the function would refuse, when it would.
        #[serde(skip_serializing_if = "Option::is_none")]
        would_fail: Option<String>,
        steps: Vec<String>,
        notes: Vec<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        plan: Option<Plan>,
    },
}

impl App {
    pub async fn from_env() -> Self {
        let config = crate::aws::load_config().await;
        App {
            registry: Registry::from_env(),
            aws: Aws::new(&config),
            topic_arn: std::env::var("CUTOVER_SNS_TOPIC_ARN")
                .ok()
                .filter(|t| !t.is_empty()),
            clock: system_clock(),
        }
    }

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
            .map(handover_time);
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
            } if function == Function::Cleanup => {
                let span = tracing::info_span!("pipeline-execution", pipeline = %pipeline, release = %execution_id, state = %state);
                self.cleanup_failed_release(&execution_id, &state)
                    .instrument(span)
                    .await
            }
            Invocation::Schedule if function == Function::Cleanup => {
                self.sweep().instrument(tracing::info_span!("sweep")).await
            }
            _ => {
                let bad = BadEvent(format!(
                    "{} only accepts CodePipeline job events",
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
        deadline: Option<SystemTime>,
    ) -> Result<Value, Error> {
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
        let acknowledged = match &outcome {
            Outcome::DryRun { summary, .. } => {
                self.aws
                    .put_job_success(job_id, summary, None, &BTreeMap::new())
                    .await?
            }
            Outcome::Succeeded {
                summary,
                output_variables,
                ..
            } => {
                self.aws
                    .put_job_success(job_id, summary, None, output_variables)
                    .await?
            }
            Outcome::Continuing {
                waiting_for,
                progress,
                ..
            } => {
                let summary = format!("waiting for {waiting_for}");
                self.aws
                    .put_job_success(job_id, &summary, Some(progress.encode()), &BTreeMap::new())
                    .await?
            }
            Outcome::Failed { message, .. } => self.aws.put_job_failure(job_id, message).await?,
        };
        if !acknowledged {
            warn!(
                "CodePipeline says the job was already acknowledged; this was a duplicate delivery"
            );
        }
        if let Ok(request) = &request {
            // A wait is not news, and a dry run is for whoever asked for it, not the channel.
            if !matches!(outcome, Outcome::Continuing { .. } | Outcome::DryRun { .. }) {
                self.notify(function, &request.service, Some(&request.release), &outcome)
                    .await;
            }
        }
        Ok(json!({ "job_id": job_id, "acknowledged": acknowledged, "result": outcome }))
    }

    /// A CodePipeline job: converge, then say it the way CodePipeline hears it.
    async fn run_job(
        &self,
        function: Function,
        request: &JobRequest,
        deadline: Option<SystemTime>,
    ) -> Outcome {
        let work = Work::Job { function, request };
        let Converged { stop, steps } = self.converge(&work, deadline).await;
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

    /// Observe → plan → execute until the plan is done, waits, refuses or the rounds or the
    /// deadline run out. The one loop behind every job and every cleanup outside CodePipeline.
    async fn converge(&self, work: &Work<'_>, deadline: Option<SystemTime>) -> Converged {
        let mut steps = Vec::new();
        let stop = |stop: Stop, steps: Vec<String>| Converged { stop, steps };
        let settings = match self.registry.get(work.service()) {
            Ok(settings) => settings,
            Err(lookup) => return stop(Stop::Refused(lookup.to_string()), steps),
        };
        for round in 0..MAX_ROUNDS {
            // Every invocation does its first round, so a short deadline still makes progress.
            if round > 0 && out_of_time(deadline) {
                return stop(Stop::waiting(Phase::Handover), steps);
            }
            let planned = match self.observe_and_plan(work, settings).await {
                Ok(planned) => planned,
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

    /// What the work needs to see, read from AWS, and the plan made from it.
    async fn observe_and_plan(
        &self,
        work: &Work<'_>,
        settings: &ServiceSettings,
    ) -> Result<Planned, Error> {
        let service = work.service();
        let function = work.function();
        let query = InstanceQuery::Service(service.as_str());
        let instances = if function == Function::Provision {
            self.aws.instances_with_dead(query).await?
        } else {
            self.aws.instances(query).await?
        };
        let dns = match &settings.dns_zone {
            Some(zone) if function.writes_dns() => {
                Some(self.aws.dns(zone, service.as_str()).await?)
            }
            _ => None,
        };
        let seen = Seen {
            alb: self.aws.alb(service.as_str()).await?,
            instances,
            dns,
            now: (self.clock)(),
        };
        match work {
            Work::Job { function, request } => {
                self.plan_job(*function, request, settings, &seen).await
            }
            Work::Cleanup { scope, .. } => {
                self.plan_cleanup(service, scope.clone(), settings, &seen)
                    .await
            }
        }
    }

    async fn plan_job(
        &self,
        function: Function,
        request: &JobRequest,
        settings: &ServiceSettings,
        seen: &Seen,
    ) -> Result<Planned, Error> {
        let (service, release) = (&request.service, &request.release);
        let progress = request.progress.as_ref();
        Ok(match function {
            Function::Provision => plan::provision(&plan::ProvisionInput {
                service,
                release,
                settings,
                instances: &seen.instances,
                addresses: &self.aws.addresses(&settings.elastic_ips).await?,
                dns: seen.dns.as_ref(),
                // A release that could not take the lock must not launch anything.
                lock: seen.alb.product.lock.as_ref(),
                progress,
                now: seen.now,
            }),
            Function::RegisterTarget => plan::register(&plan::RegisterInput {
                service,
                release,
                settings,
                alb: &seen.alb,
                instances: &seen.instances,
                progress,
                now: seen.now,
            }),
            Function::SwitchListener => plan::switch(&plan::SwitchInput {
                service,
                release,
                action: request.action,
                settings,
                alb: &seen.alb,
                instances: &seen.instances,
                addresses: &self.aws.addresses(&settings.elastic_ips).await?,
                dns: seen.dns.as_ref(),
                strategy: request.strategy,
                progress,
                now: seen.now,
            }),
            Function::Cleanup => {
                self.plan_cleanup(service, CleanupScope::Expired, settings, seen)
                    .await?
            }
        })
    }

    async fn plan_cleanup(
        &self,
        service: &ServiceName,
        scope: CleanupScope,
        settings: &ServiceSettings,
        seen: &Seen,
    ) -> Result<Planned, Error> {
        let ids: Vec<String> = seen.instances.iter().map(|i| i.id.clone()).collect();
        let addresses = self.aws.addresses_of(&ids).await?;
        Ok(plan::cleanup(&plan::CleanupInput {
            service,
            scope,
            settings,
            alb: &seen.alb,
            instances: &seen.instances,
            addresses: &addresses,
            dns: seen.dns.as_ref(),
            now: seen.now,
        }))
    }

    /// Carries out the steps in order; consecutive launches run side by side, at most
    /// `LAUNCH_PARALLELISM` at once. After the first batch it stops early, with what is done,
    /// when the deadline is near: the next invocation plans the rest from what it sees.
    async fn execute(
        &self,
        steps: &[Step],
        done: &mut Vec<String>,
        deadline: Option<SystemTime>,
    ) -> Result<Executed, Error> {
        let mut rest = steps;
        while let Some(first) = rest.first() {
            if rest.len() < steps.len() && out_of_time(deadline) {
                return Ok(Executed::OutOfTime);
            }
            let batch = match first {
                Step::Launch { .. } => rest
                    .iter()
                    .take(LAUNCH_PARALLELISM)
                    .take_while(|s| matches!(s, Step::Launch { .. }))
                    .count(),
                _ => 1,
            };
            let (now, later) = rest.split_at(batch);
            rest = later;
            let mut running = tokio::task::JoinSet::new();
            for (position, step) in now.iter().enumerate() {
                let (aws, step) = (self.aws.clone(), step.clone());
                running.spawn(async move { (position, aws.execute(&step).await) });
            }
            let mut results: Vec<(usize, Result<(), Error>)> =
                running.join_all().await.into_iter().collect();
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
        }
        Ok(Executed::All)
    }

    /// Runs cleanup for one service outside CodePipeline: no continuation, so a wait ends the
    /// run and the next sweep picks it up.
    async fn cleanup_service(&self, service: &ServiceName, scope: CleanupScope) -> Outcome {
        let work = Work::Cleanup { service, scope };
        let Converged { stop, steps } = self.converge(&work, None).await;
        let succeeded =
            |summary: String, notes: Vec<String>, steps: Vec<String>| Outcome::Succeeded {
                summary,
                output_variables: BTreeMap::new(),
                steps,
                notes,
            };
        match stop {
            Stop::Done { summary, notes, .. } => succeeded(summary, notes, steps),
            Stop::Waiting { phase, .. } => succeeded(
                format!("{service}: waiting for {phase}; the next sweep finishes the job"),
                Vec::new(),
                steps,
            ),
            Stop::Refused(message) | Stop::Aborted(message) => Outcome::Failed { message, steps },
            Stop::Broke(error) => Outcome::Failed {
                message: error.to_string(),
                steps,
            },
            Stop::Planned(planned) => dry_run(planned),
        }
    }

    /// A pipeline execution ended without releasing: remove its pre-product instances.
    async fn cleanup_failed_release(
        &self,
        release: &ReleaseId,
        state: &str,
    ) -> Result<Value, Error> {
        if !matches!(state, "FAILED" | "CANCELED" | "SUPERSEDED" | "STOPPED") {
            info!("pipeline execution is {state}: nothing to clean up");
            return Ok(json!({ "ignored": state }));
        }
        let instances = self
            .aws
            .instances(InstanceQuery::Release(release.as_str()))
            .await?;
        let services: BTreeSet<String> = instances.iter().map(|i| i.service.clone()).collect();
        let mut results = BTreeMap::new();
        for service in services {
            let outcome = match ServiceName::parse(&service) {
                Ok(name) => {
                    let outcome = self
                        .cleanup_service(&name, CleanupScope::FailedRelease(release.clone()))
                        .await;
                    self.notify(Function::Cleanup, &name, Some(release), &outcome)
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

    /// The scheduled sweep: every service's retired instances past their bake time.
    async fn sweep(&self) -> Result<Value, Error> {
        let instances = self.aws.instances(InstanceQuery::AllServices).await?;
        let services: BTreeSet<String> = instances.iter().map(|i| i.service.clone()).collect();
        let mut results = BTreeMap::new();
        for service in services {
            let Ok(name) = ServiceName::parse(&service) else {
                continue;
            };
            let outcome = self.cleanup_service(&name, CleanupScope::Expired).await;
            let changed = matches!(&outcome, Outcome::Succeeded { steps, .. } if !steps.is_empty());
            if changed || matches!(outcome, Outcome::Failed { .. }) {
                self.notify(Function::Cleanup, &name, None, &outcome).await;
            }
            results.insert(service, outcome);
        }
        Ok(json!({ "sweep": results }))
    }

    /// One SNS message per outcome; no topic, no message. A failed publish is logged, never fatal.
    async fn notify(
        &self,
        function: Function,
        service: &ServiceName,
        release: Option<&ReleaseId>,
        outcome: &Outcome,
    ) {
        let Some(topic) = &self.topic_arn else { return };
        let (subject, message) = notification(function, service, release, outcome);
        if let Err(error) = self.aws.publish(topic, &subject, &message).await {
            error!(%error, topic, "could not publish the notification; the outcome stands");
        }
    }
}

/// The plan as a dry run reports it: the steps it would take, or why it would refuse.
fn dry_run(planned: Planned) -> Outcome {
    match planned {
        Ok(plan) => Outcome::DryRun {
            summary: format!(
                "dry run: would take {} step(s); nothing changed",
                plan.steps.len()
            ),
            would_fail: None,
            steps: plan.steps.iter().map(Step::describe).collect(),
            notes: plan.notes.clone(),
            plan: Some(plan),
        },
        Err(refusal) => Outcome::DryRun {
            summary: format!("dry run: would fail: {refusal}"),
            would_fail: Some(refusal.0),
            steps: Vec::new(),
            notes: Vec::new(),
            plan: None,
        },
    }
}

/// What a converge loop works on.
enum Work<'a> {
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
}

impl Work<'_> {
    fn service(&self) -> &ServiceName {
        match self {
            Work::Job { request, .. } => &request.service,
            Work::Cleanup { service, .. } => service,
        }
    }

    fn function(&self) -> Function {
        match self {
            Work::Job { function, .. } => *function,
            Work::Cleanup { .. } => Function::Cleanup,
        }
    }

    fn dry_run(&self) -> bool {
        matches!(self, Work::Job { request, .. } if request.dry_run)
    }
}

/// What one round saw.
struct Seen {
    alb: crate::world::Alb,
    instances: Vec<Instance>,
    dns: Option<crate::world::Dns>,
    now: u64,
}

/// How a converge loop stopped, and the steps it carried out on the way.
struct Converged {
    stop: Stop,
    steps: Vec<String>,
}

enum Stop {
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
    fn waiting(phase: Phase) -> Self {
        Stop::Waiting {
            phase,
            hold_from: None,
        }
    }
}

/// How far `execute` got.
enum Executed {
    All,
    /// The deadline came first; the rest is for the next invocation.
    OutOfTime,
}

/// When an invocation that must end by `deadline` stops working and hands over.
fn handover_time(deadline: SystemTime) -> SystemTime {
    let left = deadline
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    deadline - HANDOVER_MARGIN.min(left / 4)
}

/// `handover`: from `handover_time`.
fn out_of_time(handover: Option<SystemTime>) -> bool {
    handover.is_some_and(|at| SystemTime::now() >= at)
}

/// Subject and body of the SNS message for an outcome.
pub fn notification(
    function: Function,
    service: &ServiceName,
    release: Option<&ReleaseId>,
    outcome: &Outcome,
) -> (String, String) {
    let release_label = release
        .map(|r| format!(" {}", r.short()))
        .unwrap_or_default();
    let (verdict, headline, steps, notes) = match outcome {
        Outcome::Succeeded {
            summary,
            steps,
            notes,
            ..
        } => ("succeeded", summary.clone(), steps, notes.clone()),
        Outcome::Failed { message, steps } => ("FAILED", message.clone(), steps, Vec::new()),
        Outcome::Continuing {
            waiting_for, steps, ..
        } => (
            "waiting",
            format!("waiting for {waiting_for}"),
            steps,
            Vec::new(),
        ),
        Outcome::DryRun {
            summary,
            steps,
            notes,
            ..
        } => ("planned", summary.clone(), steps, notes.clone()),
    };
    let subject = format!(
        "cutover: {service}{release_label} {} {verdict}",
        function.as_str()
    );
    let mut body = format!(
        "{headline}\n\nservice: {service}\nrelease: {}\nstage: {}\n",
        release.map(ReleaseId::as_str).unwrap_or("-"),
        function.as_str()
    );
    if !steps.is_empty() {
        body.push_str("\nwhat changed:\n");
        for step in steps {
            body.push_str(&format!("- {step}\n"));
        }
    }
    for note in notes {
        body.push_str(&format!("\nnote: {note}"));
    }
    (subject, body)
}
