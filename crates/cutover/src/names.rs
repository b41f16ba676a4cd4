//! Validated names: the service tag, the release id, and the settings variable derived from them.

use std::fmt;

use serde::Serialize;

/// One deployable app component, e.g. `mobile-zum-api`: 1–40 chars of `a-z 0-9 -`, starting with a letter.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ServiceName(String);

/// Environment variables a service's settings may never be read from.
const RESERVED_PREFIXES: &[&str] = &["AWS_", "LAMBDA_", "_", "CUTOVER_"];
const RESERVED_NAMES: &[&str] = &[
    "HOME",
    "LANG",
    "LD_LIBRARY_PATH",
    "PATH",
    "PWD",
    "RUST_LOG",
    "RUST_BACKTRACE",
    "TZ",
];

impl ServiceName {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid_chars = raw
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
        let starts_with_letter = raw.chars().next().is_some_and(|c| c.is_ascii_lowercase());
        if raw.is_empty() || raw.len() > 40 || !valid_chars || !starts_with_letter {
            return Err(format!(
                "service `{raw}` is not a valid service name (1-40 chars of a-z, 0-9 and -, starting with a letter)"
            ));
        }
        let name = ServiceName(raw.to_owned());
        let variable = name.settings_variable();
        if is_reserved_variable(&variable) {
            return Err(format!(
                "service `{raw}` would read its settings from {variable}, a reserved variable name"
            ));
        }
        Ok(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `mobile-zum-api` → `MOBILE_ZUM_API`.
    pub fn settings_variable(&self) -> String {
        self.0.to_ascii_uppercase().replace('-', "_")
    }
}

impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub fn is_reserved_variable(variable: &str) -> bool {
    RESERVED_NAMES.contains(&variable) || RESERVED_PREFIXES.iter().any(|p| variable.starts_with(p))
}

/// Could this environment variable name hold a service's settings?
pub fn is_settings_variable(variable: &str) -> bool {
    let mut chars = variable.chars();
    chars.next().is_some_and(|c| c.is_ascii_uppercase())
        && chars.all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
        && !is_reserved_variable(variable)
}

/// One pipeline execution: the CodePipeline execution id.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ReleaseId(String);

/// A release id reads as the string it is (`as_deref()` on an `Option<ReleaseId>`).
impl std::ops::Deref for ReleaseId {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl ReleaseId {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let valid = !raw.is_empty()
            && raw.len() <= 128
            && raw
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            let hint = if raw.contains("#{") {
                " (the CodePipeline variable was not resolved: use a V2 pipeline or pass the execution id)"
            } else {
                ""
            };
            return Err(format!(
                "release `{raw}` is not a valid release id (1-128 chars of A-Z, a-z, 0-9, - and _){hint}"
            ));
        }
        Ok(ReleaseId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// 8 lower-case characters, unique per release, for DNS labels, Name tags and chat threads:
    /// a pipeline execution id (a UUID, random from its first character) keeps its first 8, as
    /// the console shows it; any other id (typed by hand, shared prefixes) a hash of all of it.
    pub fn short(&self) -> String {
        let is_uuid = self.0.len() == 36
            && self.0.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            });
        if is_uuid {
            return self.0[..8].to_ascii_lowercase();
        }
        let mut hash: u32 = 0x811c_9dc5;
        for byte in self.0.bytes() {
            hash ^= u32::from(byte);
            hash = hash.wrapping_mul(0x0100_0193);
        }
        format!("{hash:08x}")
    }
}

impl fmt::Display for ReleaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_map_to_upper_snake_variables() {
        let name = ServiceName::parse("mobile-zum-api").unwrap();
        assert_eq!(name.settings_variable(), "MOBILE_ZUM_API");
    }

    #[test]
    fn service_names_reject_bad_shapes() {
        for bad in ["", "Mobile", "1api", "api_x", "a.b", &"a".repeat(41)] {
            assert!(ServiceName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn service_names_that_hit_reserved_variables_are_refused() {
        for reserved in [
            "aws-region",
            "lambda-task-root",
            "path",
            "cutover-sns-topic-arn",
        ] {
            let err = ServiceName::parse(reserved).unwrap_err();
            assert!(err.contains("reserved"), "{reserved}: {err}");
        }
    }

    #[test]
    fn release_ids_are_checked_and_shortened() {
        let id = ReleaseId::parse("A1B2C3D4-e5f6-7890-abcd-ef1234567890").unwrap();
        assert_eq!(id.short(), "a1b2c3d4");
        // Ids that are not execution ids may share any prefix: each gets its own short form.
        let typed = ["release-2026-12-01-a", "release-2026-12-01-b", "r1", "r10"]
            .map(|raw| ReleaseId::parse(raw).unwrap().short());
        for (i, short) in typed.iter().enumerate() {
            assert!(short.len() == 8 && short.chars().all(|c| c.is_ascii_hexdigit()));
            assert!(!typed[i + 1..].contains(short), "{typed:?}");
        }
        let err = ReleaseId::parse("#{codepipeline.PipelineExecutionId}").unwrap_err();
        assert!(err.contains("not resolved"), "{err}");
        assert!(ReleaseId::parse("").is_err());
    }
}
