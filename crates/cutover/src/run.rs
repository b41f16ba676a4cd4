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
use crate::plan::{self, CleanupScope, Next, Plan};
use crate::progress::Progress;
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
        #[serde(skip_serializing_if = "Option::is_none")]
        plan: Option<Plan>,
    },
    Continuing {
        waiting_for: String,
        progress: Progress,
        steps: Vec<String>,
    },
    Failed {
        message: String,
        steps: Vec<String>,
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
            Outcome::Continuing { waiting_for, .. } => info!(waiting_for, "job continues"),
            Outcome::Succeeded { summary, .. } => info!(%summary, "job succeeded"),
        }
        let acknowledged = match &outcome {
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
            if !matches!(outcome, Outcome::Continuing { .. }) {
                self.notify(function, &request.service, Some(&request.release), &outcome)
                    .await;
            }
        }
        Ok(json!({ "job_id": job_id, "acknowledged": acknowledged, "result": outcome }))
    }

    async fn run_job(
        &self,
        function: Function,
        request: &JobRequest,
        deadline: Option<SystemTime>,
    ) -> Outcome {
        let settings = match self.registry.get(&request.service) {
            Ok(settings) => settings,
            Err(lookup) => {
                return Outcome::Failed {
                    message: lookup.to_string(),
                    steps: Vec::new(),
                }
            }
        };
        let mut done = Vec::new();
        for round in 0..MAX_ROUNDS {
            // Every invocation does its first round, so a short deadline still makes progress.
            if round > 0 && out_of_time(deadline) {
                return self.continuing(request, "handover".into(), done, false);
            }
            let plan = match self.plan(function, request, settings).await {
                Ok(plan) => plan,
                Err(error) => {
                    return Outcome::Failed {
                        message: error.to_string(),
                        steps: done,
                    }
                }
            };
            if request.dry_run {
                return Outcome::Succeeded {
                    summary: format!(
                        "dry run: {} step(s) planned, nothing changed",
                        plan.steps.len()
                    ),
                    output_variables: BTreeMap::new(),
                    steps: plan.steps.iter().map(Step::describe).collect(),
                    notes: plan.notes.clone(),
                    plan: Some(plan),
                };
            }
            if let Next::Fail(message) = plan.next {
                return Outcome::Failed {
                    message,
                    steps: done,
                };
            }
            match self.execute(&plan.steps, &mut done, deadline).await {
                Ok(Executed::All) => {}
                Ok(Executed::OutOfTime) => {
                    return self.continuing(request, "handover".into(), done, false)
                }
                Err(error) => {
                    return Outcome::Failed {
                        message: format!("{error}; re-run the stage to continue from here"),
                        steps: done,
                    }
                }
            }
            match plan.next {
                Next::Done(summary) => {
                    return Outcome::Succeeded {
                        summary,
                        output_variables: plan.outputs,
                        steps: done,
                        notes: plan.notes,
                        plan: None,
                    }
                }
                Next::Wait(phase) => return self.continuing(request, phase, done, false),
                Next::Stepped(phase) => return self.continuing(request, phase, done, true),
                Next::Abort(message) => {
                    return Outcome::Failed {
                        message,
                        steps: done,
                    }
                }
                Next::Again => continue,
                Next::Fail(_) => unreachable!("handled above"),
            }
        }
        self.continuing(request, "convergence".into(), done, false)
    }
    /// `stepped`: a step of a gradual shift was just taken, so its hold time starts now.
    fn continuing(
        &self,
        request: &JobRequest,
        phase: String,
        steps: Vec<String>,
        stepped: bool,
    ) -> Outcome {
        let now = (self.clock)();
        // Keep the start of the wait across invocations, so timeouts count from the first one.
        let mut progress = match &request.progress {
            Some(progress) if progress.phase == phase => progress.clone(),
            _ => Progress::new(&phase, now),
        };
        if stepped {
            progress.step = Some(progress.step.unwrap_or(0) + 1);
            progress.stepped_at = Some(now);
        } else if progress.stepped_at.is_none() && phase == "shift" {
            progress.stepped_at = Some(now);
        }
        Outcome::Continuing {
            waiting_for: phase,
            progress,
            steps,
        }
    }

    async fn plan(
        &self,
        function: Function,
        request: &JobRequest,
        settings: &ServiceSettings,
    ) -> Result<Plan, Error> {
        let service = &request.service;
        let release = &request.release;
        let now = (self.clock)();
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
        Ok(match function {
            Function::Provision => {
                // Read for the lock: a release that could not register must not launch anything.
                let alb = self.aws.alb(service.as_str()).await?;
                let addresses = self.aws.addresses(&settings.elastic_ips).await?;
                plan::provision(&plan::ProvisionInput {
                    service,
                    release,
                    settings,
                    instances: &instances,
                    addresses: &addresses,
                    dns: dns.as_ref(),
                    lock: alb.product.lock.as_ref(),
                    progress: request.progress.as_ref(),
                    now,
                })
            }
            Function::RegisterTarget => {
                let alb = self.aws.alb(service.as_str()).await?;
                plan::register(&plan::RegisterInput {
                    service,
                    release,
                    settings,
                    alb: &alb,
                    instances: &instances,
                    progress: request.progress.as_ref(),
                    now,
                })
            }
            Function::SwitchListener => {
                let alb = self.aws.alb(service.as_str()).await?;
                let addresses = self.aws.addresses(&settings.elastic_ips).await?;
                plan::switch(&plan::SwitchInput {
                    service,
                    release,
                    action: request.action,
                    settings,
                    alb: &alb,
                    instances: &instances,
                    addresses: &addresses,
                    dns: dns.as_ref(),
                    strategy: request.strategy,
                    progress: request.progress.as_ref(),
                    now,
                })
            }
            Function::Cleanup => {
                self.cleanup_plan(
                    service,
                    CleanupScope::Expired,
                    settings,
                    &instances,
                    dns.as_ref(),
                    now,
                )
                .await?
            }
        })
    }

    async fn cleanup_plan(
        &self,
        service: &ServiceName,
        scope: CleanupScope,
        settings: &ServiceSettings,
        instances: &[Instance],
        dns: Option<&crate::world::Dns>,
        now: u64,
    ) -> Result<Plan, Error> {
        let alb = self.aws.alb(service.as_str()).await?;
        let ids: Vec<String> = instances.iter().map(|i| i.id.clone()).collect();
        let addresses = self.aws.addresses_of(&ids).await?;
        Ok(plan::cleanup(&plan::CleanupInput {
            service,
            scope,
            settings,
            alb: &alb,
            instances,
            addresses: &addresses,
            dns,
            now,
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
        let settings = match self.registry.get(service) {
            Ok(settings) => settings,
            Err(lookup) => {
                return Outcome::Failed {
                    message: lookup.to_string(),
                    steps: Vec::new(),
                }
            }
        };
        let mut done = Vec::new();
        for _ in 0..MAX_ROUNDS {
            let observed = async {
                let instances = self
                    .aws
                    .instances(InstanceQuery::Service(service.as_str()))
                    .await?;
                let dns = match &settings.dns_zone {
                    Some(zone) => Some(self.aws.dns(zone, service.as_str()).await?),
                    None => None,
                };
                let now = (self.clock)();
                self.cleanup_plan(
                    service,
                    scope.clone(),
                    settings,
                    &instances,
                    dns.as_ref(),
                    now,
                )
                .await
            };
            let plan = match observed.await {
                Ok(plan) => plan,
                Err(error) => {
                    return Outcome::Failed {
                        message: error.to_string(),
                        steps: done,
                    }
                }
            };
            if let Next::Fail(message) = plan.next {
                return Outcome::Failed {
                    message,
                    steps: done,
                };
            }
            if let Err(error) = self.execute(&plan.steps, &mut done, None).await {
                return Outcome::Failed {
                    message: error.to_string(),
                    steps: done,
                };
            }
            match plan.next {
                Next::Again => continue,
                Next::Wait(phase) | Next::Stepped(phase) => {
                    return Outcome::Succeeded {
                        summary: format!(
                            "{service}: waiting for {phase}; the next sweep finishes the job"
                        ),
                        output_variables: BTreeMap::new(),
                        steps: done,
                        notes: plan.notes,
                        plan: None,
                    }
                }
                Next::Done(summary) => {
                    return Outcome::Succeeded {
                        summary,
                        output_variables: BTreeMap::new(),
                        steps: done,
                        notes: plan.notes,
                        plan: None,
                    }
                }
                Next::Abort(message) => {
                    return Outcome::Failed {
                        message,
                        steps: done,
                    }
                }
                Next::Fail(_) => unreachable!("handled above"),
            }
        }
        Outcome::Succeeded {
            summary: format!("{service}: still converging; the next sweep finishes the job"),
            output_variables: BTreeMap::new(),
            steps: done,
            notes: Vec::new(),
            plan: None,
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
