//! What invokes a function: a CodePipeline job, or an EventBridge event (cleanup only).

use aws_lambda_events::event::codepipeline_cloudwatch::CodePipelineCloudWatchEvent;
use aws_lambda_events::event::codepipeline_job::CodePipelineJobEvent;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::names::{ReleaseId, ServiceName};
use crate::progress::Progress;

/// A malformed or unexpected event. The message names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad event: {0}")]
pub struct BadEvent(pub String);

#[derive(Debug, Clone, PartialEq)]
pub enum Invocation {
    /// A CodePipeline Invoke action. `request` is an error when the job is well-formed enough
    /// to be acknowledged but its parameters are not: the job must still be failed.
    Job {
        job_id: String,
        request: Result<JobRequest, BadEvent>,
    },
    /// `CodePipeline Pipeline Execution State Change`.
    PipelineExecution {
        pipeline: String,
        execution_id: ReleaseId,
        state: String,
    },
    /// A scheduled EventBridge rule.
    Schedule,
    /// `CloudWatch Alarm State Change`: an alarm some service's `ALARMS` may name.
    AlarmChange {
        alarm: String,
        state: String,
        /// The event's `time` (unix seconds): when the alarm changed, not when it arrives.
        at: Option<u64>,
    },
    /// A person rolling a service back: `{"service": "...", "action": "rollback"}`, invoked
    /// directly (IAM decides who may), optionally with `"release"`, the release to roll back
    /// from. Product returns to the previous fleet in one call; a second one moves nothing.
    Rollback {
        service: ServiceName,
        release: Option<ReleaseId>,
    },
}

/// What a person sends to roll a service back.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackRequest {
    service: String,
    action: Action,
    #[serde(default)]
    release: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    #[default]
    Release,
    Rollback,
}

/// How switch-listener moves product traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Strategy {
    #[default]
    AllAtOnce,
    /// `percent` to the new slot for `minutes`, then all of it.
    Canary { percent: u8, minutes: u32 },
    /// `percent` more every `minutes`.
    Linear { percent: u8, minutes: u32 },
}

impl Strategy {
    pub fn parse(raw: &str) -> Result<Self, String> {
        if raw == "all-at-once" {
            return Ok(Strategy::AllAtOnce);
        }
        let invalid = || {
            format!(
                "strategy `{raw}` is not all-at-once, canary:<percent>:<minutes> or linear:<percent>:<minutes> \
                 (percent 1-99, minutes 0-1440)"
            )
        };
        let mut parts = raw.split(':');
        let (Some(kind), Some(percent), Some(minutes), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        let percent: u8 = percent
            .parse()
            .ok()
            .filter(|p| (1..=99).contains(p))
            .ok_or_else(invalid)?;
        let minutes: u32 = minutes
            .parse()
            .ok()
            .filter(|m| *m <= 1440)
            .ok_or_else(invalid)?;
        let strategy = match kind {
            "canary" => Strategy::Canary { percent, minutes },
            "linear" => Strategy::Linear { percent, minutes },
            _ => return Err(invalid()),
        };
        let total = strategy.total_hold_s();
        if total > crate::progress::MAX_ACTION_WAIT_S {
            return Err(format!(
                "strategy `{raw}` holds traffic split for {total}s in all, longer than one CodePipeline \
                 action may run ({}s of its 24 hours are usable); use fewer or shorter steps",
                crate::progress::MAX_ACTION_WAIT_S
            ));
        }
        Ok(strategy)
    }

    /// How long traffic stays split, all steps together.
    pub fn total_hold_s(&self) -> u64 {
        (self.weights().len() as u64 - 1) * self.interval_s()
    }

    /// The new slot's share of traffic after each step, ending at 100.
    pub fn weights(&self) -> Vec<i32> {
        match *self {
            Strategy::AllAtOnce => vec![100],
            Strategy::Canary { percent, .. } => vec![i32::from(percent), 100],
            Strategy::Linear { percent, .. } => {
                let step = i32::from(percent);
                (1..)
                    .map(|n| (n * step).min(100))
                    .take_while(|w| *w < 100)
                    .chain([100])
                    .collect()
            }
        }
    }

    /// How long each weighted step is held.
    pub fn interval_s(&self) -> u64 {
        match *self {
            Strategy::AllAtOnce => 0,
            Strategy::Canary { minutes, .. } | Strategy::Linear { minutes, .. } => {
                u64::from(minutes) * 60
            }
        }
    }

    pub fn is_gradual(&self) -> bool {
        *self != Strategy::AllAtOnce
    }
}

impl std::fmt::Display for Strategy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Strategy::AllAtOnce => f.write_str("all-at-once"),
            Strategy::Canary { percent, minutes } => write!(f, "canary:{percent}:{minutes}"),
            Strategy::Linear { percent, minutes } => write!(f, "linear:{percent}:{minutes}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobRequest {
    pub service: ServiceName,
    pub release: ReleaseId,
    pub action: Action,
    pub strategy: Strategy,
    pub dry_run: bool,
    /// Switch even while one of the service's alarms is in ALARM (shipping a fix in an incident).
    pub ignore_alarms: bool,
    /// Where an earlier invocation of this job left off.
    pub progress: Option<Progress>,
    /// The service's pipeline (`UserParameters.pipeline`, else `cutover-<service>` as the service
    /// stack names it): where the execution holding the service's lock is asked after.
    pub pipeline: String,
    /// provision: the image this release boots (`UserParameters.ami`, e.g. an image-building
    /// action's output variable), in place of the settings' `AMI`.
    pub ami: Option<String>,
}

/// `UserParameters` as the pipeline writes it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserParameters {
    service: String,
    release: String,
    #[serde(default)]
    action: Action,
    #[serde(default)]
    strategy: Option<String>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    ignore_alarms: bool,
    #[serde(default)]
    pipeline: Option<String>,
    #[serde(default)]
    ami: Option<String>,
}

pub const ALARM_STATE_CHANGE_DETAIL_TYPE: &str = "CloudWatch Alarm State Change";
pub const PIPELINE_EXECUTION_DETAIL_TYPE: &str = "CodePipeline Pipeline Execution State Change";
pub const SCHEDULED_DETAIL_TYPE: &str = "Scheduled Event";

impl Invocation {
    pub fn parse(event: Value) -> Result<Self, BadEvent> {
        if event.get("CodePipeline.job").is_some() {
            return parse_job(event);
        }
        if event.get("action").is_some() {
            return parse_rollback(event);
        }
        match event.get("detail-type").and_then(Value::as_str) {
            Some(PIPELINE_EXECUTION_DETAIL_TYPE) => parse_pipeline_execution(event),
            Some(SCHEDULED_DETAIL_TYPE) => Ok(Invocation::Schedule),
            Some(ALARM_STATE_CHANGE_DETAIL_TYPE) => parse_alarm_change(&event),
            Some(other) => Err(BadEvent(format!("unsupported EventBridge detail-type `{other}`"))),
            None => Err(BadEvent(
                "neither a CodePipeline job (`CodePipeline.job`), an EventBridge event (`detail-type`) \
                 nor a rollback (`{\"service\": ..., \"action\": \"rollback\"}`)"
                    .into(),
            )),
        }
    }
}

fn parse_alarm_change(event: &Value) -> Result<Invocation, BadEvent> {
    let field = |pointer: &str| {
        event
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| BadEvent(format!("alarm state change: `{pointer}` is missing")))
    };
    let at = match event.get("time").and_then(Value::as_str) {
        None => None,
        Some(time) => Some(
            aws_smithy_types::DateTime::from_str(
                time,
                aws_smithy_types::date_time::Format::DateTime,
            )
            .ok()
            .and_then(|t| u64::try_from(t.secs()).ok())
            .ok_or_else(|| {
                BadEvent(format!(
                    "alarm state change: `time` `{time}` is not an RFC 3339 time"
                ))
            })?,
        ),
    };
    Ok(Invocation::AlarmChange {
        alarm: field("/detail/alarmName")?,
        state: field("/detail/state/value")?,
        at,
    })
}

fn parse_rollback(event: Value) -> Result<Invocation, BadEvent> {
    let request: RollbackRequest = serde_json::from_value(event).map_err(|e| {
        BadEvent(format!(
            "a rollback is {{\"service\": ..., \"action\": \"rollback\"}}, optionally with \"release\": {e}"
        ))
    })?;
    if request.action != Action::Rollback {
        return Err(BadEvent(
            "only `\"action\": \"rollback\"` may be invoked directly; releases go through the pipeline"
                .into(),
        ));
    }
    let service =
        ServiceName::parse(&request.service).map_err(|e| BadEvent(format!("service: {e}")))?;
    let release = request
        .release
        .map(|r| ReleaseId::parse(&r).map_err(|e| BadEvent(format!("release: {e}"))))
        .transpose()?;
    Ok(Invocation::Rollback { service, release })
}

fn parse_job(event: Value) -> Result<Invocation, BadEvent> {
    let job_id = event
        .pointer("/CodePipeline.job/id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .ok_or_else(|| BadEvent("`CodePipeline.job.id` is missing".into()))?
        .to_owned();
    let request = serde_json::from_value::<CodePipelineJobEvent>(event)
        .map_err(|e| {
            BadEvent(format!(
                "`CodePipeline.job` does not have the job event's shape: {e}"
            ))
        })
        .and_then(|job| job_request(&job));
    Ok(Invocation::Job { job_id, request })
}

fn job_request(event: &CodePipelineJobEvent) -> Result<JobRequest, BadEvent> {
    let data = &event.code_pipeline_job.data;
    let raw = data
        .action_configuration
        .configuration
        .user_parameters
        .as_deref()
        .ok_or_else(|| {
            BadEvent(
                "UserParameters is missing: set it to {\"service\": ..., \"release\": ...}".into(),
            )
        })?;
    let params: UserParameters = serde_json::from_str(raw)
        .map_err(|e| BadEvent(format!("UserParameters is not valid: {e}")))?;
    let service = ServiceName::parse(&params.service)
        .map_err(|e| BadEvent(format!("UserParameters.service: {e}")))?;
    let release = ReleaseId::parse(&params.release)
        .map_err(|e| BadEvent(format!("UserParameters.release: {e}")))?;
    let progress = data
        .continuation_token
        .as_deref()
        .map(Progress::decode)
        .transpose()
        .map_err(|e| BadEvent(format!("continuationToken: {e}")))?;
    let ami = params.ami.filter(|a| !a.is_empty());
    if let Some(ami) = &ami {
        let hex = ami.strip_prefix("ami-").unwrap_or("");
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(BadEvent(format!(
                "UserParameters.ami: `{ami}` is not an image id of the form ami-<hex>"
            )));
        }
    }
    Ok(JobRequest {
        ami,
        action: params.action,
        strategy: params
            .strategy
            .as_deref()
            .map(Strategy::parse)
            .transpose()
            .map_err(|e| BadEvent(format!("UserParameters.{e}")))?
            .unwrap_or_default(),
        dry_run: params.dry_run,
        ignore_alarms: params.ignore_alarms,
        progress,
        pipeline: params
            .pipeline
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| default_pipeline(&service)),
        service,
        release,
    })
}

fn parse_pipeline_execution(event: Value) -> Result<Invocation, BadEvent> {
    let event: CodePipelineCloudWatchEvent = serde_json::from_value(event)
        .map_err(|e| BadEvent(format!("pipeline execution state change event: {e}")))?;
    let detail = event.detail;
    let pipeline = detail
        .pipeline
        .ok_or_else(|| BadEvent("detail.pipeline is missing".into()))?;
    let execution_id = detail
        .execution_id
        .ok_or_else(|| BadEvent("detail.execution-id is missing".into()))?;
    let execution_id = ReleaseId::parse(&execution_id)
        .map_err(|e| BadEvent(format!("detail.execution-id: {e}")))?;
    Ok(Invocation::PipelineExecution {
        pipeline,
        execution_id,
        state: detail.state,
    })
}

/// The pipeline a service's releases run in when the event does not name it: the stacks name
/// it `cutover-<service>`.
pub fn default_pipeline(service: &ServiceName) -> String {
    format!("cutover-{service}")
}
