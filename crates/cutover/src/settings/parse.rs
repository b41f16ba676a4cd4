//! How a settings value is read: a JSON object or the seed's Python dict literal, key by key,
//! every problem naming the variable and the key.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde_json::{Map, Value};

use super::*;

const KNOWN_KEYS: &[&str] = &[
    "AMI",
    "INSTANCE_TYPE",
    "SUBNET",
    "SG",
    "EIP",
    "COUNT",
    "INSTANCE_PROFILE",
    "KEY_NAME",
    "USER_DATA",
    "DNS_ZONE",
    "HEALTH_TIMEOUT_S",
    "BAKE_S",
    "STICKY_S",
    "TAGS",
    "ALARMS",
    "RETRY_WINDOW_S",
    "FLEET",
    "LAUNCH_TEMPLATE",
    "INSTALL_MARK",
    "LISTENER",
];

/// Keys an `asg` fleet takes from its launch template instead.
const INSTANCE_ONLY_KEYS: &[&str] = &[
    "INSTANCE_TYPE",
    "SG",
    "INSTANCE_PROFILE",
    "KEY_NAME",
    "USER_DATA",
    "EIP",
    "INSTALL_MARK",
];

impl ServiceSettings {
    /// Parses one variable's value. `variable` is only used to name the culprit in errors.
    pub fn parse(variable: &str, raw: &str) -> Result<Self, SettingsError> {
        let object = parse_object(variable, raw)?;
        let reader = Reader {
            variable,
            object: &object,
        };
        for key in object.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                return Err(reader.error(
                    key,
                    format!("unknown key (known keys: {})", KNOWN_KEYS.join(", ")),
                ));
            }
        }
        let ami = reader.id("AMI", "ami-")?;
        let fleet = reader.fleet()?;
        let subnets = reader.id_list("SUBNET", "subnet-", true)?;
        let elastic_ips = reader.id_list("EIP", "eipalloc-", false)?;
        let count = reader
            .integer("COUNT", 1, u64::from(MAX_COUNT))?
            .unwrap_or(1) as u32;
        if elastic_ips.len() > count as usize {
            return Err(reader.error(
                "EIP",
                format!(
                    "{} allocation ids for COUNT={count}: at most one per instance",
                    elastic_ips.len()
                ),
            ));
        }
        Ok(ServiceSettings {
            ami,
            fleet,
            subnets,
            elastic_ips,
            count,
            dns_zone: reader.hosted_zone()?,
            health_timeout_s: reader
                .integer("HEALTH_TIMEOUT_S", 1, crate::progress::MAX_ACTION_WAIT_S)?
                .unwrap_or(DEFAULT_HEALTH_TIMEOUT_S),
            bake_s: reader
                .integer("BAKE_S", 0, 30 * 86_400)?
                .unwrap_or(DEFAULT_BAKE_S),
            sticky_s: reader.integer("STICKY_S", 1, 604_800)?.map(|s| s as u32),
            retry_window_s: reader
                .integer("RETRY_WINDOW_S", 0, 7 * 86_400)?
                .unwrap_or(DEFAULT_RETRY_WINDOW_S),
            tags: reader.tags()?,
            alarms: reader.names("ALARMS")?,
            require_install_mark: reader.boolean("INSTALL_MARK")?.unwrap_or(false),
            listener: reader.listener()?,
        })
    }
}

fn parse_object(variable: &str, raw: &str) -> Result<Map<String, Value>, SettingsError> {
    let whole = |problem: String| SettingsError {
        variable: variable.to_owned(),
        key: None,
        problem,
    };
    let value = match serde_json::from_str::<Value>(raw) {
        Ok(value) => value,
        Err(json_error) => {
            let python = py_literal::Value::from_str(raw.trim()).map_err(|_| {
                whole(format!(
                    "is neither a JSON object nor a Python dict literal (JSON: {json_error})"
                ))
            })?;
            python_to_json(&python).map_err(whole)?
        }
    };
    match value {
        Value::Object(object) => Ok(object),
        other => Err(whole(format!(
            "must be an object of settings, found {}",
            kind(&other)
        ))),
    }
}

fn python_to_json(value: &py_literal::Value) -> Result<Value, String> {
    use py_literal::Value as Py;
    Ok(match value {
        Py::String(s) => Value::String(s.clone()),
        Py::Integer(i) => {
            let n: i64 = i
                .to_string()
                .parse()
                .map_err(|_| format!("integer {i} is out of range"))?;
            Value::from(n)
        }
        Py::Float(f) => serde_json::Number::from_f64(*f)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        Py::Boolean(b) => Value::Bool(*b),
        Py::None => Value::Null,
        Py::List(items) | Py::Tuple(items) => {
            Value::Array(items.iter().map(python_to_json).collect::<Result<_, _>>()?)
        }
        Py::Dict(pairs) => {
            let mut object = Map::new();
            for (key, value) in pairs {
                let Py::String(key) = key else {
                    return Err(format!("dict key {key} is not a string"));
                };
                object.insert(key.clone(), python_to_json(value)?);
            }
            Value::Object(object)
        }
        Py::Bytes(_) | Py::Complex(_) | Py::Set(_) => {
            return Err(format!("unsupported Python value {value}"));
        }
    })
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

struct Reader<'a> {
    variable: &'a str,
    object: &'a Map<String, Value>,
}

impl Reader<'_> {
    fn error(&self, key: &str, problem: impl Into<String>) -> SettingsError {
        SettingsError {
            variable: self.variable.to_owned(),
            key: Some(key.to_owned()),
            problem: problem.into(),
        }
    }

    fn present(&self, key: &str) -> Option<&Value> {
        self.object.get(key).filter(|v| !v.is_null())
    }

    fn required(&self, key: &str) -> Result<&Value, SettingsError> {
        self.present(key)
            .ok_or_else(|| self.error(key, "is required"))
    }

    fn string<'v>(&self, key: &str, value: &'v Value) -> Result<&'v str, SettingsError> {
        match value {
            Value::String(s) if !s.trim().is_empty() => Ok(s.trim()),
            Value::String(_) => Err(self.error(key, "must not be empty")),
            other => Err(self.error(key, format!("must be a string, found {}", kind(other)))),
        }
    }

    fn optional_string(&self, key: &str) -> Result<Option<String>, SettingsError> {
        self.present(key)
            .map(|v| self.string(key, v).map(str::to_owned))
            .transpose()
    }

    fn id(&self, key: &str, prefix: &str) -> Result<String, SettingsError> {
        let raw = self.string(key, self.required(key)?)?;
        self.check_id(key, prefix, raw)
    }

    fn check_id(&self, key: &str, prefix: &str, raw: &str) -> Result<String, SettingsError> {
        let suffix = raw.strip_prefix(prefix).unwrap_or("");
        if suffix.is_empty() || !suffix.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(self.error(
                key,
                format!("`{raw}` is not an id of the form {prefix}<hex>"),
            ));
        }
        Ok(raw.to_owned())
    }

    /// A list of ids, a single id, or (the seed's form) a string holding a Python/JSON list.
    /// A list as the settings may write one: a JSON array, a Python list literal in a string (the
    /// seed's form), or a single value.
    fn items(&self, key: &str, value: &Value, expected: &str) -> Result<Vec<Value>, SettingsError> {
        match value {
            Value::Array(items) => Ok(items.clone()),
            Value::String(s) if s.trim_start().starts_with(['[', '(']) => python_list(s)
                .ok_or_else(|| self.error(key, format!("`{s}` is not a list literal"))),
            Value::String(_) => Ok(vec![value.clone()]),
            other => Err(self.error(key, format!("must be {expected}, found {}", kind(other)))),
        }
    }

    /// A list of names (or one name, or a Python list literal): CloudWatch alarm names are
    /// 1-255 characters of anything but control characters.
    fn names(&self, key: &str) -> Result<Vec<String>, SettingsError> {
        let Some(value) = self.present(key) else {
            return Ok(Vec::new());
        };
        let items = self.items(key, value, "a name or a list of names")?;
        let mut names: Vec<String> = Vec::with_capacity(items.len());
        for item in &items {
            let name = self.string(key, item)?;
            if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
                return Err(self.error(key, format!("`{name}` is not an alarm name")));
            }
            if names.iter().any(|n| n == name) {
                return Err(self.error(key, format!("`{name}` is listed twice")));
            }
            names.push(name.to_owned());
        }
        Ok(names)
    }

    fn id_list(
        &self,
        key: &str,
        prefix: &str,
        required: bool,
    ) -> Result<Vec<String>, SettingsError> {
        let Some(value) = self.present(key) else {
            return if required {
                Err(self.error(key, "is required"))
            } else {
                Ok(Vec::new())
            };
        };
        let items = self.items(key, value, "an id or a list of ids")?;
        if items.is_empty() {
            return Err(self.error(key, "must not be an empty list"));
        }
        let mut ids = Vec::with_capacity(items.len());
        for item in &items {
            let id = self.check_id(key, prefix, self.string(key, item)?)?;
            if ids.contains(&id) {
                return Err(self.error(key, format!("`{id}` is listed twice")));
            }
            ids.push(id);
        }
        Ok(ids)
    }

    fn integer(&self, key: &str, min: u64, max: u64) -> Result<Option<u64>, SettingsError> {
        let Some(value) = self.present(key) else {
            return Ok(None);
        };
        let parsed = match value {
            Value::Number(n) => n.as_u64(),
            Value::String(s) => s.trim().parse::<u64>().ok(),
            _ => None,
        };
        match parsed {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            Some(n) => Err(self.error(key, format!("{n} is outside {min}..={max}"))),
            None => Err(self.error(
                key,
                format!("must be a whole number in {min}..={max}, found {value}"),
            )),
        }
    }

    fn boolean(&self, key: &str) -> Result<Option<bool>, SettingsError> {
        match self.present(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s.trim() == "true" => Ok(Some(true)),
            Some(Value::String(s)) if s.trim() == "false" => Ok(Some(false)),
            Some(other) => Err(self.error(key, format!("must be true or false, found {other}"))),
        }
    }

    fn fleet(&self) -> Result<Fleet, SettingsError> {
        let mode = self.optional_string("FLEET")?;
        match mode.as_deref() {
            None | Some("instances") => {
                if self.present("LAUNCH_TEMPLATE").is_some() {
                    return Err(self.error(
                        "LAUNCH_TEMPLATE",
                        "is read only with FLEET=asg (this service's FLEET is instances)",
                    ));
                }
                Ok(Fleet::Instances(InstanceSpec {
                    instance_type: self.instance_type()?,
                    security_groups: self.id_list("SG", "sg-", true)?,
                    instance_profile: self.optional_string("INSTANCE_PROFILE")?,
                    key_name: self.optional_string("KEY_NAME")?,
                    user_data: self.optional_string("USER_DATA")?,
                }))
            }
            Some("asg") => {
                if let Some(key) = INSTANCE_ONLY_KEYS
                    .iter()
                    .find(|key| self.present(key).is_some())
                {
                    return Err(self.error(
                        key,
                        "is not used with FLEET=asg: the launch template sets it (an address per \
                         instance does not fit a group); remove the key",
                    ));
                }
                let template = self.string(
                    "LAUNCH_TEMPLATE",
                    self.present("LAUNCH_TEMPLATE").ok_or_else(|| {
                        self.error("LAUNCH_TEMPLATE", "is required with FLEET=asg")
                    })?,
                )?;
                if !is_launch_template_ref(template) {
                    return Err(self.error(
                        "LAUNCH_TEMPLATE",
                        format!(
                            "`{template}` is neither a launch template id (lt-<hex>) nor a name \
                             (3-128 letters, digits and ( ) . / _ -)"
                        ),
                    ));
                }
                Ok(Fleet::Group {
                    launch_template: template.to_owned(),
                })
            }
            Some(other) => Err(self.error(
                "FLEET",
                format!("`{other}` is neither `instances` nor `asg`"),
            )),
        }
    }

    fn instance_type(&self) -> Result<String, SettingsError> {
        const KEY: &str = "INSTANCE_TYPE";
        let raw = self.string(KEY, self.required(KEY)?)?;
        let well_formed = raw.split_once('.').is_some_and(|(family, size)| {
            family
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_lowercase())
                && family
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !size.is_empty()
                && size
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
        if !well_formed {
            return Err(self.error(
                KEY,
                format!("`{raw}` is not an instance type like t3.small"),
            ));
        }
        Ok(raw.to_owned())
    }

    fn listener(&self) -> Result<Option<String>, SettingsError> {
        const KEY: &str = "LISTENER";
        let Some(value) = self.present(KEY) else {
            return Ok(None);
        };
        let raw = self.string(KEY, value)?;
        let well_formed = raw.starts_with("arn:")
            && raw.split(':').nth(2) == Some("elasticloadbalancing")
            && raw
                .split(':')
                .nth(5)
                .is_some_and(|r| r.starts_with("listener/"));
        if !well_formed {
            return Err(self.error(
                KEY,
                format!("`{raw}` is not a load balancer listener's ARN (arn:aws:elasticloadbalancing:…:listener/app/…)"),
            ));
        }
        Ok(Some(raw.to_owned()))
    }

    fn hosted_zone(&self) -> Result<Option<String>, SettingsError> {
        const KEY: &str = "DNS_ZONE";
        let Some(value) = self.present(KEY) else {
            return Ok(None);
        };
        let raw = self.string(KEY, value)?;
        let id = raw.trim_start_matches("/hostedzone/");
        // AWS ids look like Z0123456789ABC; only the alphabet and length are checked, since
        // other implementations (moto) mint ids without the leading Z.
        let well_formed = !id.is_empty()
            && id.len() <= 32
            && id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        if !well_formed {
            return Err(self.error(
                KEY,
                format!("`{raw}` is not a Route53 hosted zone id like Z0123456789ABC"),
            ));
        }
        Ok(Some(id.to_owned()))
    }

    fn tags(&self) -> Result<BTreeMap<String, String>, SettingsError> {
        const KEY: &str = "TAGS";
        let Some(value) = self.present(KEY) else {
            return Ok(BTreeMap::new());
        };
        let Value::Object(pairs) = value else {
            return Err(self.error(
                KEY,
                format!(
                    "must be an object of tag names to values, found {}",
                    kind(value)
                ),
            ));
        };
        let mut tags = BTreeMap::new();
        for (name, value) in pairs {
            let lower = name.to_ascii_lowercase();
            if lower.starts_with("aws:") || lower.starts_with("cutover:") || name == "Name" {
                return Err(self.error(
                    KEY,
                    format!(
                        "tag `{name}` is reserved (aws:*, cutover:* and Name are set by cutover)"
                    ),
                ));
            }
            if name.is_empty() || name.len() > 128 {
                return Err(self.error(KEY, format!("tag name `{name}` must be 1-128 characters")));
            }
            let value = match value {
                Value::String(s) if s.len() <= 256 => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => {
                    return Err(self.error(
                        KEY,
                        format!("tag `{name}` must have a string value of at most 256 characters"),
                    ))
                }
            };
            tags.insert(name.clone(), value);
        }
        Ok(tags)
    }
}

/// EC2's launch template names: 3-128 characters of letters, digits and `( ) . / _ -`.
fn is_launch_template_ref(raw: &str) -> bool {
    (3..=128).contains(&raw.len())
        && raw
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "()./_-".contains(c))
}

fn python_list(raw: &str) -> Option<Vec<Value>> {
    if let Ok(Value::Array(items)) = serde_json::from_str::<Value>(raw) {
        return Some(items);
    }
    match python_to_json(&py_literal::Value::from_str(raw.trim()).ok()?).ok()? {
        Value::Array(items) => Some(items),
        _ => None,
    }
}
