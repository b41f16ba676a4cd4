//! What cutover sees (instances, target groups, routes, addresses, records) and what it can do
//! (steps), as plain data. `aws` fills the first and carries out the second; `plan` maps one to
//! the other without IO.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::names::ReleaseId;

mod group;
mod step;

pub use self::group::*;
pub use self::step::*;

pub const TAG_SERVICE: &str = "cutover:service";
pub const TAG_SLOT: &str = "cutover:slot";
pub const TAG_ROUTE: &str = "cutover:route";
pub const TAG_STAGE: &str = "cutover:stage";
pub const TAG_RELEASE: &str = "cutover:release";
pub const TAG_INDEX: &str = "cutover:index";
pub const TAG_RETIRED_AT: &str = "cutover:retired-at";
/// On an instance, written by the release's install hook (CodeDeploy `ValidateService`, as
/// `infra/codedeploy/mark-installed.sh` does): the release installed on it.
pub const TAG_INSTALLED: &str = "cutover:installed";
/// On a failed release's fleet: when its execution failed. The fleet and the lock are kept for a
/// retry of the failed action until `RETRY_WINDOW_S` after it.
pub const TAG_FAILED_AT: &str = "cutover:failed-at";
pub const TAG_PREVIOUS: &str = "cutover:previous";
/// On the product route from the moment a rollback starts: the release rolled back from, written
/// (with `TAG_ROLLED_BACK_BY`) in one call before the move. The next release removes both before
/// its own move. `plan::route` owns what they mean.
pub const TAG_ROLLED_BACK: &str = "cutover:rolled-back";
/// Beside `TAG_ROLLED_BACK`: `<who>@<unix seconds>`.
pub const TAG_ROLLED_BACK_BY: &str = "cutover:rolled-back-by";
/// On the product route: `<release>@<unix seconds>`, the release that holds the service.
pub const TAG_LOCK: &str = "cutover:lock";
/// On a target group: the listener its service's routes are on (a hint that saves a read of every
/// listener of the load balancer; the routes are still found by their own tags).
pub const TAG_LISTENER: &str = "cutover:listener";
pub const TAG_NAME: &str = "Name";
/// The value of the TXT record cutover writes beside every A record it owns (the way
/// external-dns keeps its registry): records without it are someone else's and left alone.
pub fn ownership_marker(service: &str) -> String {
    format!("\"heritage=cutover,cutover/service={service}\"")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    PreProduct,
    Product,
    Retired,
    /// The pre-product fleet of an execution that failed, was canceled or superseded: the sweep
    /// removes it as soon as its targets have drained, whatever its age.
    Abandoned,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::PreProduct => "pre-product",
            Stage::Product => "product",
            Stage::Retired => "retired",
            Stage::Abandoned => "abandoned",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [
            Stage::PreProduct,
            Stage::Product,
            Stage::Retired,
            Stage::Abandoned,
        ]
        .into_iter()
        .find(|s| s.as_str() == raw)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Slot {
    Blue,
    Green,
}

impl Slot {
    pub fn as_str(self) -> &'static str {
        match self {
            Slot::Blue => "blue",
            Slot::Green => "green",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Slot::Blue, Slot::Green]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }

    pub fn other(self) -> Self {
        match self {
            Slot::Blue => Slot::Green,
            Slot::Green => Slot::Blue,
        }
    }
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceState {
    Pending,
    Running,
    Stopping,
    Stopped,
    ShuttingDown,
    Terminated,
}

impl InstanceState {
    /// Gone or going: an instance in this state never serves again.
    pub fn is_dead(self) -> bool {
        matches!(
            self,
            InstanceState::ShuttingDown | InstanceState::Terminated
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            InstanceState::Pending => "pending",
            InstanceState::Running => "running",
            InstanceState::Stopping => "stopping",
            InstanceState::Stopped => "stopped",
            InstanceState::ShuttingDown => "shutting-down",
            InstanceState::Terminated => "terminated",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instance {
    pub id: String,
    pub state: InstanceState,
    pub service: String,
    pub stage: Option<Stage>,
    /// The `cutover:release` tag, parsed where it is read (an invalid one reads as none).
    pub release: Option<ReleaseId>,
    /// Position within its release, 1-based; decides subnet, EIP and DNS name.
    pub index: Option<u32>,
    pub name: Option<String>,
    pub private_ip: Option<String>,
    pub retired_at: Option<u64>,
    /// A failed release's fleet kept for a retry: when its execution failed (`TAG_FAILED_AT`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<u64>,
    /// The release its install hook says is installed on it (`TAG_INSTALLED`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed: Option<String>,
    /// Unix seconds.
    pub launched_at: Option<u64>,
    /// Why EC2 moved it to its state (e.g. `Server.InternalError: ...`), when it says.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    Initial,
    Healthy,
    Unhealthy,
    Unused,
    Draining,
    Unavailable,
}

impl Health {
    pub fn as_str(&self) -> &'static str {
        match self {
            Health::Initial => "initial",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Unused => "unused",
            Health::Draining => "draining",
            Health::Unavailable => "unavailable",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub id: String,
    pub health: Health,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetGroup {
    pub arn: String,
    pub name: String,
    pub slot: Slot,
    pub targets: Vec<Target>,
}

impl TargetGroup {
    pub fn has(&self, instance_id: &str) -> bool {
        self.targets.iter().any(|t| t.id == instance_id)
    }

    pub fn unhealthy(&self) -> Vec<&Target> {
        self.targets
            .iter()
            .filter(|t| t.health != Health::Healthy)
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RouteRole {
    Product,
    PreProduct,
}

impl RouteRole {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteRole::Product => "product",
            RouteRole::PreProduct => "pre-product",
        }
    }
}

/// Where a route sends traffic: one or two target groups with weights.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Forward {
    pub targets: Vec<WeightedTarget>,
    /// Target-group stickiness in seconds, for weighted forwards.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sticky_s: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WeightedTarget {
    pub arn: String,
    pub weight: Option<i32>,
}

impl Forward {
    pub fn to(arn: &str) -> Self {
        Forward {
            targets: vec![WeightedTarget {
                arn: arn.to_owned(),
                weight: None,
            }],
            sticky_s: None,
        }
    }

    /// The single target group that gets all the traffic, if there is one.
    pub fn sole_target(&self) -> Option<&str> {
        let receiving: Vec<&WeightedTarget> = self
            .targets
            .iter()
            .filter(|t| t.weight != Some(0))
            .collect();
        match receiving.as_slice() {
            [only] => Some(only.arn.as_str()),
            _ => None,
        }
    }
}

/// An action of a route that cutover does not change but must send back with every
/// `ModifyRule`/`ModifyListener` (which replace the whole action list): the authentication in
/// front of the forward, e.g. a QA route behind company single sign-on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeptAction {
    pub order: Option<i32>,
    pub authenticate: Authenticate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Authenticate {
    /// The client secret is never returned by describe calls; it is re-sent as
    /// `UseExistingClientSecret`.
    Oidc {
        issuer: String,
        authorization_endpoint: String,
        token_endpoint: String,
        user_info_endpoint: String,
        client_id: String,
        session: AuthSession,
    },
    Cognito {
        user_pool_arn: String,
        user_pool_client_id: String,
        user_pool_domain: String,
        session: AuthSession,
    },
}

/// The settings both kinds of authentication share.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct AuthSession {
    pub session_cookie_name: Option<String>,
    pub scope: Option<String>,
    pub session_timeout: Option<i64>,
    pub extra_params: BTreeMap<String, String>,
    pub on_unauthenticated_request: Option<String>,
}

/// A product or pre-product route: a listener rule, or a listener's default action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Route {
    pub arn: String,
    pub role: RouteRole,
    pub is_listener_default: bool,
    pub forward: Forward,
    /// The forward action's `Order`, kept when it is replaced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub forward_order: Option<i32>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept_actions: Vec<KeptAction>,
    pub previous: Option<String>,
    /// On the product route: the rollback that moves (or moved) product away from a release,
    /// until the next release.
    pub rolled_back: Option<RollbackMark>,
    /// On the product route: the release holding the service.
    pub lock: Option<Lock>,
    /// Host-header and path conditions, for telling people where QA is.
    pub conditions: Vec<String>,
}

impl Route {
    /// The step that points this route at `to`, keeping its other actions and their order.
    pub fn repoint(&self, to: Forward) -> Step {
        Step::SetForward {
            route: self.arn.clone(),
            role: self.role,
            is_listener_default: self.is_listener_default,
            from: self.forward.clone(),
            to,
            forward_order: self.forward_order,
            keep: self.kept_actions.clone(),
        }
    }
}

/// A rollback, as the product route's tags record it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RollbackMark {
    /// The release rolled back from.
    pub release: String,
    /// Who asked: `hand` (a person), `alarm:<name>`, `pipeline`.
    pub by: String,
    /// When the rollback started (unix seconds); 0 for a mark written before this was recorded.
    pub at: u64,
}

impl RollbackMark {
    pub fn parse(release: &str, by_at: Option<&str>) -> Self {
        let (by, at) = by_at
            .and_then(|v| v.rsplit_once('@'))
            .map(|(by, at)| (by.to_owned(), at.parse().unwrap_or(0)))
            .unwrap_or_else(|| ("unknown".to_owned(), 0));
        RollbackMark {
            release: release.to_owned(),
            by,
            at,
        }
    }

    pub fn by_value(&self) -> String {
        // ELB tag values allow letters, digits, spaces and `_ . : / = + - @`.
        let by: String = self
            .by
            .chars()
            .map(|c| match c {
                c if c.is_ascii_alphanumeric() || " _.:/=+-".contains(c) => c,
                _ => '-',
            })
            .take(200)
            .collect();
        format!("{by}@{}", self.at)
    }
}

impl fmt::Display for RollbackMark {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rolled back from release {} by {} at {}",
            self.release, self.by, self.at
        )
    }
}

/// What CodePipeline says of a release's execution (the one holding a service's lock, or one
/// whose pre-product fleet the sweep finds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "execution", content = "status", rename_all = "kebab-case")]
pub enum Execution {
    /// `InProgress` or `Stopping`: it may still release (or a person may retry it).
    Running(String),
    /// `Succeeded`, `Failed`, `Stopped`, `Superseded`, `Cancelled`, or not found: in QUEUED mode
    /// a newer execution is in the stage, so it can no longer be retried; its lock is free.
    Ended(String),
}

impl Execution {
    /// CodePipeline knows the execution and says it has ended (a release id it does not know,
    /// such as one typed for a local invoke, may still be releasing).
    pub fn is_known_to_have_ended(&self) -> bool {
        matches!(self, Execution::Ended(status) if !status.ends_with("NotFoundException"))
    }
}

/// The per-service release lock, held from register-target until the switch (or the end of a
/// failed execution).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Lock {
    pub release: String,
    pub since: u64,
}

impl Lock {
    pub fn parse(raw: &str) -> Option<Self> {
        let (release, since) = raw.rsplit_once('@')?;
        Some(Lock {
            release: release.to_owned(),
            since: since.parse().ok()?,
        })
    }

    pub fn tag_value(&self) -> String {
        format!("{}@{}", self.release, self.since)
    }
}

/// A service's two slots and two routes, found by tags.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alb {
    pub blue: TargetGroup,
    pub green: TargetGroup,
    pub product: Route,
    pub pre_product: Route,
}

impl Alb {
    /// Stands in for slots and routes read elsewhere: a cold start reads what needs its settings
    /// beside the search for its slots and routes, and puts what the search found in their place.
    /// Nothing is ever planned from it.
    pub fn read_elsewhere() -> Alb {
        let group = |slot| TargetGroup {
            arn: String::new(),
            name: String::new(),
            slot,
            targets: Vec::new(),
        };
        let route = |role| Route {
            arn: String::new(),
            role,
            is_listener_default: false,
            forward: Forward {
                targets: Vec::new(),
                sticky_s: None,
            },
            forward_order: None,
            kept_actions: Vec::new(),
            previous: None,
            rolled_back: None,
            lock: None,
            conditions: Vec::new(),
        };
        Alb {
            blue: group(Slot::Blue),
            green: group(Slot::Green),
            product: route(RouteRole::Product),
            pre_product: route(RouteRole::PreProduct),
        }
    }

    pub fn slot(&self, slot: Slot) -> &TargetGroup {
        match slot {
            Slot::Blue => &self.blue,
            Slot::Green => &self.green,
        }
    }

    pub fn slot_of_arn(&self, arn: &str) -> Option<Slot> {
        [&self.blue, &self.green]
            .into_iter()
            .find(|tg| tg.arn == arn)
            .map(|tg| tg.slot)
    }

    /// The slot product traffic goes to, or why there is no single one.
    pub fn product_slot(&self) -> Result<Slot, String> {
        let Some(arn) = self.product.forward.sole_target() else {
            return Err(format!(
                "the product route {} splits traffic between target groups (a gradual shift is in progress)",
                self.product.arn
            ));
        };
        self.slot_of_arn(arn).ok_or_else(|| {
            format!("the product route {} forwards to {arn}, which is neither the blue nor the green slot", self.product.arn)
        })
    }

    /// The slot holding every one of these instances, if one does.
    pub fn slot_holding(&self, instance_ids: &[&str]) -> Option<Slot> {
        if instance_ids.is_empty() {
            return None;
        }
        [&self.blue, &self.green]
            .into_iter()
            .find(|tg| instance_ids.iter().all(|id| tg.has(id)))
            .map(|tg| tg.slot)
    }
}

/// A CloudWatch alarm a service's releases answer to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Alarm {
    pub name: String,
    pub state: AlarmState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AlarmState {
    Ok,
    Alarm,
    InsufficientData,
}

impl AlarmState {
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "OK" => Some(AlarmState::Ok),
            "ALARM" => Some(AlarmState::Alarm),
            "INSUFFICIENT_DATA" => Some(AlarmState::InsufficientData),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Address {
    pub allocation_id: String,
    pub association_id: Option<String>,
    pub instance_id: Option<String>,
    pub public_ip: Option<String>,
    /// Its `cutover:service` tag: cutover moves only the addresses tagged for the service.
    pub service: Option<String>,
}

/// The A records under `<service>.<zone>` that cutover owns (each has the ownership TXT record
/// beside it), and the names of those it does not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dns {
    pub zone_id: String,
    /// With the trailing dot, e.g. `internal.example.`.
    pub zone_name: String,
    pub records: BTreeMap<String, RecordSet>,
    /// A records under the service's name that someone else wrote: never changed or deleted.
    #[serde(skip_serializing_if = "BTreeSet::is_empty")]
    pub foreign: BTreeSet<String>,
}

/// An owned A record as Route53 holds it: a DELETE must repeat its TTL and values exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordSet {
    pub ttl: i64,
    pub values: Vec<String>,
    /// The TTL of the ownership TXT record beside it.
    pub marker_ttl: i64,
}

/// What runs an instance: everything of RunInstances except the per-instance parts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LaunchSpec {
    pub ami: String,
    pub instance_type: String,
    pub subnet: String,
    pub security_groups: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_profile: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user_data: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum RecordAction {
    Upsert,
    Delete,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RecordChange {
    pub action: RecordAction,
    pub name: String,
    pub ttl: i64,
    pub values: Vec<String>,
    /// The TTL of the ownership record written (or deleted) with it.
    pub marker_ttl: i64,
}
