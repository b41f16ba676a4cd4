//! The port: what the job loop needs from the world, narrow enough to fake. `aws` is the adapter
//! that talks to AWS; `run`'s tests use an in-memory one.

use std::collections::BTreeMap;
use std::future::Future;

use serde_json::{json, Value};

use crate::error::Error;
pub use crate::function::Function;
use crate::names::ServiceName;
use crate::settings::ServiceSettings;
use crate::world::{Address, Alarm, Alb, Dns, Execution, Group, Instance, LaunchTemplate, Step};

/// One message, in the forms its subscribers read.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub subject: String,
    /// For email.
    pub text: String,
    /// For chat channels: the custom-notification event.
    pub chat: Value,
}

impl Notification {
    /// The SNS message for `MessageStructure: json`: the chat event by default, text for email.
    pub fn message(&self) -> String {
        json!({"default": self.chat.to_string(), "email": self.text}).to_string()
    }
}

/// Which instances to read.
#[derive(Debug, Clone)]
pub enum InstanceQuery<'a> {
    Service(&'a str),
    Release(&'a str),
    AllServices,
}

/// What a function is about to plan for.
#[derive(Debug, Clone, Copy)]
pub struct Look<'a> {
    pub function: Function,
    pub service: &'a ServiceName,
    pub settings: &'a ServiceSettings,
    /// The service's slots and routes, when they were read beside its settings (a cold start's
    /// first round): not read again.
    pub alb: Option<&'a Alb>,
}

/// What a function saw of its service, all it plans from.
#[derive(Debug, Clone)]
pub struct Seen {
    /// The service's slots and routes; for provision, without the slots' targets (it needs only
    /// the lock on the product route).
    pub alb: Alb,
    /// The service's instances; for provision, the dead ones too.
    pub instances: Vec<Instance>,
    /// `FLEET=asg`: the groups cutover created for the service (with their target-tracking
    /// policies for switch-listener), and its launch templates (provision, cleanup).
    pub groups: Vec<Group>,
    pub templates: Vec<LaunchTemplate>,
    /// The service's records, for the functions that write them, with a zone.
    pub dns: Option<Dns>,
    /// The settings' addresses (provision, switch-listener) or those held by the service's
    /// instances (cleanup).
    pub addresses: Vec<Address>,
    /// The service's `ALARMS` that exist, for the functions that answer to them (switch-listener,
    /// cleanup).
    pub alarms: Vec<Alarm>,
    /// The execution holding the service's lock, when another release holds it and the job asked
    /// (provision, register-target).
    pub lock_holder: Option<Execution>,
    /// What CodePipeline says of the executions of the pre-product fleets a cleanup finds (the
    /// sweep, the pipeline's cleanup), by release: an ended one's fleet is abandoned.
    pub executions: BTreeMap<String, Execution>,
}

/// How a CodePipeline job ends (or goes on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Acknowledgement {
    Success {
        summary: String,
        /// The job goes on: CodePipeline invokes again with this token.
        continuation_token: Option<String>,
        output_variables: BTreeMap<String, String>,
    },
    Failure {
        message: String,
    },
}

/// Which settings parameters to read.
#[derive(Debug, Clone, Copy)]
pub enum Parameters<'a> {
    /// Every parameter under `/cutover` (one paginated read).
    All,
    /// One parameter by name; absent when it does not exist.
    One(&'a str),
}

pub trait Cloud: Clone + Send + Sync + 'static {
    /// Settings parameters: `(name, value)` pairs.
    fn parameters(
        &self,
        which: Parameters<'_>,
    ) -> impl Future<Output = Result<Vec<(String, String)>, Error>> + Send;

    /// What `look.function` must see to plan: the reads each function makes are decided by the
    /// adapter, in one place.
    fn observe(&self, look: Look<'_>) -> impl Future<Output = Result<Seen, Error>> + Send;

    /// The service's slots and routes as `function` reads them (what `observe` would read), for
    /// a first round that reads them beside the settings; `listener` is the settings' `LISTENER`
    /// once they are read.
    fn alb(
        &self,
        service: &ServiceName,
        function: Function,
        listener: impl Future<Output = Option<String>> + Send,
    ) -> impl Future<Output = Result<Alb, Error>> + Send;

    /// Reads ahead what finding any service's slots and routes starts with, when a discovery is
    /// to come and the service is not known yet (an alarm's rollback, beside the settings that
    /// name it). Nothing by default.
    fn survey_slots(&self) -> impl Future<Output = ()> + Send {
        async {}
    }

    /// Live instances, to find the services a sweep or a failed execution concerns.
    fn instances(
        &self,
        query: InstanceQuery<'_>,
    ) -> impl Future<Output = Result<Vec<Instance>, Error>> + Send;

    /// What CodePipeline says of one execution of a pipeline (the lock holder's).
    fn execution(
        &self,
        pipeline: &str,
        execution_id: &str,
    ) -> impl Future<Output = Result<Execution, Error>> + Send;

    /// Carries out one step (one AWS call).
    fn execute(&self, step: &Step) -> impl Future<Output = Result<(), Error>> + Send;

    /// `Ok(false)`: CodePipeline says the job was already acknowledged (or is gone).
    fn acknowledge(
        &self,
        job_id: &str,
        ack: &Acknowledgement,
    ) -> impl Future<Output = Result<bool, Error>> + Send;

    fn publish(
        &self,
        topic: &str,
        notification: &Notification,
    ) -> impl Future<Output = Result<(), Error>> + Send;
}
