//! Settings in SSM Parameter Store, past Lambda's 4 KB environment limit: where they live, where
//! a service's came from, and the cache a warm function keeps of them.

use std::collections::HashMap;

use super::{ServiceSettings, SettingsError};
use crate::names::ServiceName;

/// Where services' settings live in SSM Parameter Store: `/cutover/<service>`.
pub const PARAMETER_PATH: &str = "/cutover";

pub fn parameter_name(service: &ServiceName) -> String {
    format!("{PARAMETER_PATH}/{service}")
}

/// Where a service's settings came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A Lambda environment variable: it wins over a parameter.
    Variable(String),
    /// An SSM parameter, past Lambda's 4 KB environment limit.
    Parameter(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Variable(name) => write!(f, "variable {name}"),
            Source::Parameter(name) => write!(f, "parameter {name}"),
        }
    }
}

/// Settings read from SSM parameters, kept between invocations of a warm function: every
/// parameter under the path on first use, then each service's own as its jobs re-read it.
#[derive(Debug, Clone, Default)]
pub struct ParameterCache {
    inner: std::sync::Arc<std::sync::Mutex<ParameterCacheState>>,
}

#[derive(Debug, Default)]
struct ParameterCacheState {
    loaded: bool,
    by_name: HashMap<String, Result<ServiceSettings, SettingsError>>,
}

impl ParameterCache {
    pub fn loaded(&self) -> bool {
        self.inner.lock().unwrap().loaded
    }

    /// Every parameter under the path, as read at once (the first use).
    pub fn fill(&self, parameters: Vec<(String, String)>) {
        let mut state = self.inner.lock().unwrap();
        state.loaded = true;
        for (name, value) in parameters {
            let parsed = ServiceSettings::parse(&name, &value);
            state.by_name.insert(name, parsed);
        }
    }

    /// One parameter as just read by `Parameters::One` (empty: it does not exist). Returns what
    /// it now holds.
    pub fn put(
        &self,
        name: &str,
        read: &[(String, String)],
    ) -> Option<Result<ServiceSettings, SettingsError>> {
        let mut state = self.inner.lock().unwrap();
        match read.first().map(|(_, value)| value) {
            Some(value) => {
                let parsed = ServiceSettings::parse(name, value);
                state.by_name.insert(name.to_owned(), parsed.clone());
                Some(parsed)
            }
            None => {
                state.by_name.remove(name);
                None
            }
        }
    }

    pub fn get(&self, name: &str) -> Option<Result<ServiceSettings, SettingsError>> {
        self.inner.lock().unwrap().by_name.get(name).cloned()
    }

    /// Every parameter read so far, parsed.
    pub fn entries(&self) -> Vec<(String, Result<ServiceSettings, SettingsError>)> {
        let state = self.inner.lock().unwrap();
        state
            .by_name
            .iter()
            .map(|(name, parsed)| (name.clone(), parsed.clone()))
            .collect()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.inner.lock().unwrap().by_name.contains_key(name)
    }
}
