//! The only module that knows about the AWS SDK. It reads the world into `world` types and
//! carries out `Step`s, one AWS call each. Endpoints come from the SDK's own configuration
//! (`AWS_ENDPOINT_URL`), never from here.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_ec2::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

use crate::error::Error;
use crate::names::ServiceName;
pub use crate::port::InstanceQuery;
use crate::port::{Acknowledgement, Cloud, Function, Look, Parameters, Seen};
use crate::world::*;

mod alb;
mod convert;
#[cfg(feature = "dns")]
mod dns;
mod execute;
mod groups;
mod observe;
mod parameters;
mod pipeline;
mod survey;
mod template;

#[derive(Debug, Clone)]
pub struct Aws {
    ec2: aws_sdk_ec2::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    #[cfg(feature = "dns")]
    route53: aws_sdk_route53::Client,
    codepipeline: aws_sdk_codepipeline::Client,
    sns: aws_sdk_sns::Client,
    ssm: aws_sdk_ssm::Client,
    #[cfg(feature = "alarms")]
    cloudwatch: aws_sdk_cloudwatch::Client,
    /// Where this container last found each service's slots and routes.
    known_albs: alb::KnownAlbs,
    /// A cold container's survey of every target group, read ahead of a discovery.
    surveyed: survey::Surveyed,
}

/// Attempts per AWS call (the first and three retries), with exponential back-off and jitter:
/// enough to ride out throttling and a brief 5xx, short enough to stay inside a Lambda timeout.
pub const MAX_ATTEMPTS: u32 = 4;

const LIVE_STATES: &[&str] = &["pending", "running", "stopping", "stopped"];
const ALL_STATES: &[&str] = &[
    "pending",
    "running",
    "stopping",
    "stopped",
    "shutting-down",
    "terminated",
];

/// A ClientToken stays bound to its instance for at least 24 hours after that instance
/// terminates: a launch whose token returns a dead instance moves to the next generation.
const MAX_TOKEN_GENERATIONS: u32 = 8;

/// The resource types RunInstances creates and tags: every one of them must carry the tags the
/// launch policy's `aws:RequestTag` conditions ask for, since EC2 checks them per resource.
pub const TAGGED_AT_LAUNCH: &[&str] = &["instance", "volume", "network-interface"];

/// ELBv2 DescribeTags takes at most 20 ARNs.
const DESCRIBE_TAGS_BATCH: usize = 20;

fn aws_error<E, R>(operation: &'static str) -> impl FnOnce(SdkError<E, R>) -> Error
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    move |err| Error::Aws {
        operation,
        code: err.code().unwrap_or("Unknown").to_owned(),
        message: err
            .message()
            .map(str::to_owned)
            .unwrap_or_else(|| DisplayErrorContext(&err).to_string()),
    }
}

/// What a function built without `feature` answers if it is ever asked to use it.
#[cfg(any(not(feature = "dns"), not(feature = "alarms")))]
fn not_built(feature: &str) -> Error {
    Error::Internal(format!(
        "this function was built without the `{feature}` feature"
    ))
}

/// Without the `dns` feature (register-target writes no records).
#[cfg(not(feature = "dns"))]
impl Aws {
    pub async fn dns(&self, _zone_id: &str, _service: &str) -> Result<Dns, Error> {
        Err(not_built("dns"))
    }

    async fn change_records(
        &self,
        _zone_id: &str,
        _service: &str,
        _changes: &[RecordChange],
    ) -> Result<(), Error> {
        Err(not_built("dns"))
    }
}

fn build_error(what: &'static str) -> impl FnOnce(aws_sdk_ec2::error::BuildError) -> Error {
    move |err| Error::Internal(format!("building {what}: {err}"))
}

/// Standard retry mode (exponential back-off with jitter), `MAX_ATTEMPTS` attempts, bounded
/// timeouts. `AWS_MAX_ATTEMPTS` / `AWS_RETRY_MODE` in the environment still win.
pub async fn load_config() -> SdkConfig {
    config_loader().load().await
}

/// HTTPS through rustls with the `ring` provider (the SDK's default client uses aws-lc-rs, which
/// weighs more in a Lambda zip and needs cmake to cross-compile); plain HTTP for a local endpoint.
pub fn http_client() -> aws_smithy_runtime_api::client::http::SharedHttpClient {
    use aws_smithy_http_client::tls::{rustls_provider::CryptoMode, Provider};
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// The production configuration before it is loaded: tests add only where the endpoint is.
pub fn config_loader() -> aws_config::ConfigLoader {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(Duration::from_secs(10))
                .operation_timeout(Duration::from_secs(30))
                .build(),
        );
    if std::env::var_os("AWS_MAX_ATTEMPTS").is_none()
        && std::env::var_os("AWS_RETRY_MODE").is_none()
    {
        loader = loader.retry_config(
            aws_config::retry::RetryConfig::standard()
                .with_max_attempts(MAX_ATTEMPTS)
                .with_initial_backoff(Duration::from_millis(200)),
        );
    }
    loader
}

impl Aws {
    pub fn new(config: &SdkConfig) -> Self {
        Aws {
            ec2: aws_sdk_ec2::Client::new(config),
            autoscaling: aws_sdk_autoscaling::Client::new(config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(config),
            #[cfg(feature = "dns")]
            route53: aws_sdk_route53::Client::new(config),
            codepipeline: aws_sdk_codepipeline::Client::new(config),
            sns: aws_sdk_sns::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
            #[cfg(feature = "alarms")]
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
            known_albs: alb::KnownAlbs::default(),
            surveyed: survey::Surveyed::default(),
        }
    }
}

impl Cloud for Aws {
    async fn parameters(&self, which: Parameters<'_>) -> Result<Vec<(String, String)>, Error> {
        self.settings_parameters(which).await
    }

    async fn observe(&self, look: Look<'_>) -> Result<Seen, Error> {
        // Boxed: the reads side by side nest deep enough to overflow the compiler's layout limit
        // in the futures that await them.
        Box::pin(self.observe(look)).await
    }

    async fn instances(&self, query: InstanceQuery<'_>) -> Result<Vec<Instance>, Error> {
        self.instances(query).await
    }

    async fn execute(&self, step: &Step) -> Result<(), Error> {
        self.execute(step).await
    }

    async fn survey_slots(&self) {
        self.survey_ahead().await
    }

    async fn alb(
        &self,
        service: &ServiceName,
        function: Function,
        listener: impl Future<Output = Option<String>> + Send,
    ) -> Result<Alb, Error> {
        let health = function.reads_target_health();
        self.slots_and_routes(service.as_str(), health, listener)
            .await
    }

    async fn execution(&self, pipeline: &str, execution_id: &str) -> Result<Execution, Error> {
        self.pipeline_execution(pipeline, execution_id).await
    }

    async fn acknowledge(&self, job_id: &str, ack: &Acknowledgement) -> Result<bool, Error> {
        match ack {
            Acknowledgement::Success {
                summary,
                continuation_token,
                output_variables,
            } => {
                self.put_job_success(
                    job_id,
                    summary,
                    continuation_token.clone(),
                    output_variables,
                )
                .await
            }
            Acknowledgement::Failure { message } => self.put_job_failure(job_id, message).await,
        }
    }

    async fn publish(
        &self,
        topic: &str,
        notification: &crate::port::Notification,
    ) -> Result<(), Error> {
        self.publish(topic, &notification.subject, &notification.message())
            .await
    }
}
