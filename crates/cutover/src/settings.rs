//! Per-service settings: one environment variable per service, parsed once at cold start.
//!
//! The value is a JSON object or the seed's Python dict literal
//! (`{'AMI': 'ami-1', 'SUBNET': "['subnet-a','subnet-b']", ...}`).

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use crate::names::{is_settings_variable, ServiceName};

/// A settings problem, always naming the variable and, where one is at fault, the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {problem}", location(.variable, .key))]
pub struct SettingsError {
    pub variable: String,
    pub key: Option<String>,
    pub problem: String,
}

fn location(variable: &str, key: &Option<String>) -> String {
    // A parameter's name is its path.
    let kind = if variable.starts_with('/') {
        "settings parameter"
    } else {
        "settings variable"
    };
    match key {
        Some(key) => format!("{kind} {variable}, key {key}"),
        None => format!("{kind} {variable}"),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServiceSettings {
    /// The image every instance of a release boots (a job's `ami` takes its place).
    pub ami: String,
    /// How a release's instances come to be: launched one by one, or by a group of its own.
    pub fleet: Fleet,
    pub subnets: Vec<String>,
    pub elastic_ips: Vec<String>,
    /// The fleet's size; a group's is at least this, and at least what serves product now.
    pub count: u32,
    pub dns_zone: Option<String>,
    pub health_timeout_s: u64,
    pub bake_s: u64,
    pub sticky_s: Option<u32>,
    /// How long a failed release's fleet and lock are kept for a retry of its failed action
    /// (CodePipeline V2 retries a failed stage while its execution is the latest there).
    pub retry_window_s: u64,
    pub tags: BTreeMap<String, String>,
    /// CloudWatch alarms that gate a switch and watch the bake window.
    pub alarms: Vec<String>,
    /// `INSTALL_MARK`: register-target takes only a fleet whose every instance its install hook
    /// marked (`cutover:installed=<release>`): CodeDeploy counts a deployment a success when its
    /// minimum of healthy hosts is met, and that minimum always leaves an instance out.
    pub require_install_mark: bool,
    /// `LISTENER`: the listener the service's routes are on, where a cold start looks for them
    /// first (beside the target groups, not after their tags); the routes are still found by
    /// their tags, and anywhere else on the load balancer when they are not there.
    pub listener: Option<String>,
}

/// `FLEET`: how a release's instances are launched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "fleet", rename_all = "kebab-case")]
pub enum Fleet {
    /// `instances` (the default): cutover launches `COUNT` instances, each with its index.
    Instances(InstanceSpec),
    /// `asg`: each release gets an Auto Scaling group of its own, launched from a cutover-owned
    /// copy of the team's launch template (its default version, with the release's image).
    Group {
        /// `LAUNCH_TEMPLATE`: the team's template, by id (`lt-…`) or name; only ever read.
        launch_template: String,
    },
}

/// What the `instances` fleet launches with besides the image and the subnet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct InstanceSpec {
    pub instance_type: String,
    pub security_groups: Vec<String>,
    pub instance_profile: Option<String>,
    pub key_name: Option<String>,
    pub user_data: Option<String>,
}

impl Fleet {
    pub fn is_group(&self) -> bool {
        matches!(self, Fleet::Group { .. })
    }
}

pub const DEFAULT_HEALTH_TIMEOUT_S: u64 = 600;
/// How long a failed release's fleet and lock wait for a retry of the failed action.
pub const DEFAULT_RETRY_WINDOW_S: u64 = 7_200;
pub const DEFAULT_BAKE_S: u64 = 3600;
pub const MAX_COUNT: u32 = 50;

/// Every service's settings, parsed once at cold start. A bad variable only fails its own service.
#[derive(Debug, Default, Clone)]
pub struct Registry {
    by_variable: HashMap<String, Result<ServiceSettings, SettingsError>>,
}

/// Why a service's settings cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error(
        "unknown service `{service}`: no settings variable {variable} is set on this function \
         and there is no parameter {parameter}"
    )]
    Unknown {
        service: String,
        variable: String,
        parameter: String,
    },
    #[error(transparent)]
    Invalid(#[from] SettingsError),
}

impl Registry {
    /// Reads every variable that could hold settings and whose value looks like an object.
    pub fn from_vars(vars: impl IntoIterator<Item = (String, String)>) -> Self {
        let by_variable = vars
            .into_iter()
            .filter(|(name, value)| {
                is_settings_variable(name) && value.trim_start().starts_with('{')
            })
            .map(|(name, value)| {
                let parsed = ServiceSettings::parse(&name, &value);
                (name, parsed)
            })
            .collect();
        Registry { by_variable }
    }

    pub fn from_env() -> Self {
        Self::from_vars(std::env::vars())
    }

    pub fn get(&self, service: &ServiceName) -> Result<&ServiceSettings, LookupError> {
        let variable = service.settings_variable();
        match self.by_variable.get(&variable) {
            Some(Ok(settings)) => Ok(settings),
            Some(Err(error)) => Err(LookupError::Invalid(error.clone())),
            None => Err(LookupError::Unknown {
                service: service.to_string(),
                variable,
                parameter: parameter_name(service),
            }),
        }
    }

    /// Services whose variables parsed, with their names as the variable spells them.
    pub fn variables(
        &self,
    ) -> impl Iterator<Item = (&str, &Result<ServiceSettings, SettingsError>)> {
        self.by_variable
            .iter()
            .map(|(name, parsed)| (name.as_str(), parsed))
    }
}

mod parameters;
mod parse;
pub use self::parameters::*;

#[cfg(test)]
mod tests;
