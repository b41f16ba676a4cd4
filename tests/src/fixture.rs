//! The fixture world, seeded through the real SDK: a VPC with two subnets in two AZs, a security
//! group, an AMI, an ALB with an HTTP listener, a private hosted zone and an SNS topic; and per
//! service, `blue`/`green` target groups and `product`/`pre-product` rules tagged as DESIGN §4 says.

use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_sdk_ec2::types as ec2t;
use aws_sdk_elasticloadbalancingv2::types as elbt;
use serde_json::json;

pub const REGION: &str = "us-east-1";
pub const ZONE_NAME: &str = "internal.example";

/// The functions' production configuration (retries, timeouts) pointed at the local endpoint.
pub async fn production_sdk_config(endpoint_url: &str) -> SdkConfig {
    at_local_endpoint(cutover::aws::config_loader(), endpoint_url)
        .load()
        .await
}

/// SDK configuration for the local endpoint with two attempts per call, for seeding and
/// inspecting the world.
pub async fn sdk_config(endpoint_url: &str) -> SdkConfig {
    at_local_endpoint(
        aws_config::defaults(BehaviorVersion::latest()).http_client(cutover::aws::http_client()),
        endpoint_url,
    )
    .retry_config(aws_config::retry::RetryConfig::standard().with_max_attempts(2))
    .load()
    .await
}

/// The endpoint URL, a region and throwaway credentials (moto accepts any): what
/// `AWS_ENDPOINT_URL` and the Lambda environment give the functions.
fn at_local_endpoint(
    loader: aws_config::ConfigLoader,
    endpoint_url: &str,
) -> aws_config::ConfigLoader {
    loader
        .endpoint_url(endpoint_url)
        .region(Region::new(REGION))
        .credentials_provider(aws_sdk_ec2::config::Credentials::new(
            "local",
            "local",
            None,
            None,
            "cutover-tests",
        ))
}

#[derive(Debug, Clone)]
pub struct Base {
    pub vpc: String,
    pub subnets: Vec<String>,
    pub security_group: String,
    pub ami: String,
    pub load_balancer: String,
    pub listener: String,
    pub zone_id: String,
    pub topic_arn: String,
    pub elastic_ips: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ServiceFixture {
    pub name: String,
    pub blue: String,
    pub green: String,
    pub product_rule: String,
    pub pre_product_rule: String,
    pub product_host: String,
    pub qa_host: String,
}

pub struct Clients {
    pub ec2: aws_sdk_ec2::Client,
    pub elb: aws_sdk_elasticloadbalancingv2::Client,
    pub route53: aws_sdk_route53::Client,
    pub sns: aws_sdk_sns::Client,
    pub ssm: aws_sdk_ssm::Client,
    pub cloudwatch: aws_sdk_cloudwatch::Client,
}

impl Clients {
    pub fn new(config: &SdkConfig) -> Self {
        Clients {
            ec2: aws_sdk_ec2::Client::new(config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(config),
            route53: aws_sdk_route53::Client::new(config),
            sns: aws_sdk_sns::Client::new(config),
            ssm: aws_sdk_ssm::Client::new(config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(config),
        }
    }
}

fn elb_tag(key: &str, value: &str) -> elbt::Tag {
    elbt::Tag::builder().key(key).value(value).build()
}

pub async fn seed_base(clients: &Clients, elastic_ips: usize) -> Base {
    let ec2 = &clients.ec2;
    let vpc = ec2
        .create_vpc()
        .cidr_block("10.0.0.0/16")
        .send()
        .await
        .expect("CreateVpc");
    let vpc = vpc.vpc().and_then(|v| v.vpc_id()).unwrap().to_owned();
    let mut subnets = Vec::new();
    for (n, az) in ["us-east-1a", "us-east-1b"].iter().enumerate() {
        let subnet = ec2
            .create_subnet()
            .vpc_id(&vpc)
            .cidr_block(format!("10.0.{}.0/24", n + 1))
            .availability_zone(*az)
            .send()
            .await
            .expect("CreateSubnet");
        subnets.push(
            subnet
                .subnet()
                .and_then(|s| s.subnet_id())
                .unwrap()
                .to_owned(),
        );
    }
    let security_group = ec2
        .create_security_group()
        .group_name("cutover-app")
        .description("app instances")
        .vpc_id(&vpc)
        .send()
        .await
        .expect("CreateSecurityGroup")
        .group_id()
        .unwrap()
        .to_owned();
    let images = ec2
        .describe_images()
        .owners("amazon")
        .send()
        .await
        .expect("DescribeImages");
    let ami = images
        .images()
        .iter()
        .filter_map(|i| i.image_id())
        .find(|id| {
            id.strip_prefix("ami-")
                .is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .expect("moto ships amazon AMIs")
        .to_owned();
    let mut eips = Vec::new();
    for _ in 0..elastic_ips {
        // The service's addresses, as its team tags them: cutover moves no other.
        let address = ec2
            .allocate_address()
            .domain(ec2t::DomainType::Vpc)
            .tag_specifications(
                ec2t::TagSpecification::builder()
                    .resource_type(ec2t::ResourceType::ElasticIp)
                    .tags(
                        ec2t::Tag::builder()
                            .key("cutover:service")
                            .value(crate::SERVICE)
                            .build(),
                    )
                    .build(),
            )
            .send()
            .await
            .expect("AllocateAddress");
        eips.push(address.allocation_id().unwrap().to_owned());
    }

    let elb = &clients.elb;
    let load_balancer = elb
        .create_load_balancer()
        .name("cutover-alb")
        .set_subnets(Some(subnets.clone()))
        .security_groups(&security_group)
        .r#type(elbt::LoadBalancerTypeEnum::Application)
        .send()
        .await
        .expect("CreateLoadBalancer");
    let load_balancer = load_balancer.load_balancers()[0]
        .load_balancer_arn()
        .unwrap()
        .to_owned();
    let not_found = elbt::Action::builder()
        .r#type(elbt::ActionTypeEnum::FixedResponse)
        .fixed_response_config(
            elbt::FixedResponseActionConfig::builder()
                .status_code("404")
                .content_type("text/plain")
                .build(),
        )
        .build();
    let listener = elb
        .create_listener()
        .load_balancer_arn(&load_balancer)
        .protocol(elbt::ProtocolEnum::Http)
        .port(80)
        .default_actions(not_found)
        .send()
        .await
        .expect("CreateListener");
    let listener = listener.listeners()[0].listener_arn().unwrap().to_owned();

    let zone = clients
        .route53
        .create_hosted_zone()
        .name(ZONE_NAME)
        .caller_reference(format!("cutover-{vpc}"))
        .vpc(
            aws_sdk_route53::types::Vpc::builder()
                .vpc_id(&vpc)
                .vpc_region(aws_sdk_route53::types::VpcRegion::UsEast1)
                .build(),
        )
        .hosted_zone_config(
            aws_sdk_route53::types::HostedZoneConfig::builder()
                .private_zone(true)
                .build(),
        )
        .send()
        .await
        .expect("CreateHostedZone");
    let zone_id = zone
        .hosted_zone()
        .unwrap()
        .id()
        .trim_start_matches("/hostedzone/")
        .to_owned();

    let topic_arn = clients
        .sns
        .create_topic()
        .name("cutover-releases")
        .send()
        .await
        .expect("CreateTopic");
    let topic_arn = topic_arn.topic_arn().unwrap().to_owned();

    Base {
        vpc,
        subnets,
        security_group,
        ami,
        load_balancer,
        listener,
        zone_id,
        topic_arn,
        elastic_ips: eips,
    }
}

/// Target groups and rules for one service. `priority` must differ between services.
pub async fn seed_service(
    clients: &Clients,
    base: &Base,
    service: &str,
    priority: i32,
) -> ServiceFixture {
    let elb = &clients.elb;
    let mut arns = Vec::new();
    for slot in ["blue", "green"] {
        let group = elb
            .create_target_group()
            .name(format!("{}-{slot}", truncate_name(service)))
            .protocol(elbt::ProtocolEnum::Http)
            .port(80)
            .vpc_id(&base.vpc)
            .target_type(elbt::TargetTypeEnum::Instance)
            .send()
            .await
            .expect("CreateTargetGroup");
        let arn = group.target_groups()[0]
            .target_group_arn()
            .unwrap()
            .to_owned();
        elb.add_tags()
            .resource_arns(&arn)
            .tags(elb_tag("cutover:service", service))
            .tags(elb_tag("cutover:slot", slot))
            .tags(elb_tag("cutover:listener", &base.listener))
            .send()
            .await
            .expect("AddTags on a target group");
        arns.push(arn);
    }
    let product_host = format!("{service}.example.com");
    let qa_host = format!("qa.{service}.example.com");
    let mut rules = Vec::new();
    for (route, host, group, offset) in [
        ("pre-product", &qa_host, &arns[1], 0),
        ("product", &product_host, &arns[0], 1),
    ] {
        let rule = route_rule(
            clients,
            &base.listener,
            priority + offset,
            host,
            group,
            service,
            route,
        )
        .await;
        rules.push(rule);
    }
    ServiceFixture {
        name: service.to_owned(),
        blue: arns[0].clone(),
        green: arns[1].clone(),
        pre_product_rule: rules[0].clone(),
        product_rule: rules[1].clone(),
        product_host,
        qa_host,
    }
}

/// `count` more services' groups and rules on the same listener (`other-1`, …), as in an
/// account that holds many.
pub async fn seed_other_services(clients: &Clients, base: &Base, count: i32) {
    for n in 1..=count {
        seed_service(clients, base, &format!("other-{n}"), 100 + 2 * n).await;
    }
}

/// The service's target groups stop naming their listener (`cutover:listener`), as groups made
/// without it do.
pub async fn forget_the_listener(clients: &Clients, service: &ServiceFixture) {
    for group in [&service.blue, &service.green] {
        clients
            .elb
            .remove_tags()
            .resource_arns(group.as_str())
            .tag_keys("cutover:listener")
            .send()
            .await
            .expect("RemoveTags");
    }
}

/// Another listener on `load_balancer` (HTTP 8080, answering 404), holding no route: its ARN.
pub async fn another_listener(clients: &Clients, load_balancer: &str) -> String {
    let created = clients
        .elb
        .create_listener()
        .load_balancer_arn(load_balancer)
        .protocol(elbt::ProtocolEnum::Http)
        .port(8080)
        .default_actions(
            elbt::Action::builder()
                .r#type(elbt::ActionTypeEnum::FixedResponse)
                .fixed_response_config(
                    elbt::FixedResponseActionConfig::builder()
                        .status_code("404")
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("CreateListener");
    created.listeners()[0].listener_arn().unwrap().to_owned()
}

/// A host-header rule on `listener` forwarding to `group`, tagged as the service's `route`
/// (`product` or `pre-product`): its ARN.
pub async fn route_rule(
    clients: &Clients,
    listener: &str,
    priority: i32,
    host: &str,
    group: &str,
    service: &str,
    route: &str,
) -> String {
    let rule = clients
        .elb
        .create_rule()
        .listener_arn(listener)
        .priority(priority)
        .conditions(
            elbt::RuleCondition::builder()
                .field("host-header")
                .host_header_config(
                    elbt::HostHeaderConditionConfig::builder()
                        .values(host)
                        .build(),
                )
                .build(),
        )
        .actions(
            elbt::Action::builder()
                .r#type(elbt::ActionTypeEnum::Forward)
                .target_group_arn(group)
                .build(),
        )
        .tags(elb_tag("cutover:service", service))
        .tags(elb_tag("cutover:route", route))
        .send()
        .await
        .expect("CreateRule");
    rule.rules()[0].rule_arn().unwrap().to_owned()
}

/// Puts company single sign-on (authenticate-oidc, order 1) in front of a route's forward
/// (order 2), the way a QA route usually is.
pub async fn require_sign_on(clients: &Clients, rule: &str, group: &str) {
    let oidc = elbt::Action::builder()
        .r#type(elbt::ActionTypeEnum::AuthenticateOidc)
        .order(1)
        .authenticate_oidc_config(
            elbt::AuthenticateOidcActionConfig::builder()
                .issuer("https://sso.example.com")
                .authorization_endpoint("https://sso.example.com/authorize")
                .token_endpoint("https://sso.example.com/token")
                .user_info_endpoint("https://sso.example.com/userinfo")
                .client_id("cutover-qa")
                .client_secret("s3cret")
                .scope("openid")
                .build(),
        )
        .build();
    sign_on_then_forward(clients, rule, group, oidc).await;
}

/// The same behind Cognito sign-on (a user pool's hosted UI).
pub async fn require_cognito_sign_on(clients: &Clients, rule: &str, group: &str) {
    let cognito = elbt::Action::builder()
        .r#type(elbt::ActionTypeEnum::AuthenticateCognito)
        .order(1)
        .authenticate_cognito_config(
            elbt::AuthenticateCognitoActionConfig::builder()
                .user_pool_arn(COGNITO_USER_POOL)
                .user_pool_client_id("cutover-qa")
                .user_pool_domain("cutover-qa")
                .build(),
        )
        .build();
    sign_on_then_forward(clients, rule, group, cognito).await;
}

/// The user pool of `require_cognito_sign_on`.
pub const COGNITO_USER_POOL: &str =
    "arn:aws:cognito-idp:us-east-1:123456789012:userpool/us-east-1_cutoverQA";

async fn sign_on_then_forward(clients: &Clients, rule: &str, group: &str, sign_on: elbt::Action) {
    clients
        .elb
        .modify_rule()
        .rule_arn(rule)
        .actions(sign_on)
        .actions(
            elbt::Action::builder()
                .r#type(elbt::ActionTypeEnum::Forward)
                .order(2)
                .target_group_arn(group)
                .build(),
        )
        .send()
        .await
        .expect("ModifyRule with a sign-on action");
}

/// One rule, as ELB describes it now.
pub async fn describe_rule(clients: &Clients, rule: &str) -> elbt::Rule {
    let rules = clients
        .elb
        .describe_rules()
        .rule_arns(rule)
        .send()
        .await
        .expect("DescribeRules");
    rules.rules()[0].clone()
}

/// The types of a rule's actions, in order: what a test checks survives a repoint.
pub async fn rule_action_types(clients: &Clients, rule: &str) -> Vec<String> {
    let mut actions = describe_rule(clients, rule).await.actions().to_vec();
    actions.sort_by_key(|a| a.order());
    actions
        .iter()
        .map(|a| {
            a.r#type()
                .map(|t| t.as_str().to_owned())
                .unwrap_or_default()
        })
        .collect()
}

/// An A record under the service's name that cutover did not write (an admin host kept by
/// hand, with its own TTL).
pub async fn add_foreign_record(clients: &Clients, base: &Base, name: &str, ttl: i64, ip: &str) {
    use aws_sdk_route53::types as r53t;
    let set = r53t::ResourceRecordSet::builder()
        .name(name)
        .r#type(r53t::RrType::A)
        .ttl(ttl)
        .resource_records(r53t::ResourceRecord::builder().value(ip).build().unwrap())
        .build()
        .unwrap();
    clients
        .route53
        .change_resource_record_sets()
        .hosted_zone_id(&base.zone_id)
        .change_batch(
            r53t::ChangeBatch::builder()
                .changes(
                    r53t::Change::builder()
                        .action(r53t::ChangeAction::Create)
                        .resource_record_set(set)
                        .build()
                        .unwrap(),
                )
                .build()
                .unwrap(),
        )
        .send()
        .await
        .expect("a foreign record");
}

/// Every record set of the zone: (name, type, TTL, values).
pub async fn zone_records(
    clients: &Clients,
    base: &Base,
) -> Vec<(String, String, i64, Vec<String>)> {
    let page = clients
        .route53
        .list_resource_record_sets()
        .hosted_zone_id(&base.zone_id)
        .send()
        .await
        .expect("ListResourceRecordSets");
    page.resource_record_sets()
        .iter()
        .map(|set| {
            (
                set.name().to_owned(),
                set.r#type().as_str().to_owned(),
                set.ttl().unwrap_or_default(),
                set.resource_records()
                    .iter()
                    .map(|r| r.value().to_owned())
                    .collect(),
            )
        })
        .collect()
}

/// A service's settings as the SSM parameter `/cutover/<service>` (created or overwritten).
pub async fn put_settings_parameter(clients: &Clients, service: &str, value: &str) {
    clients
        .ssm
        .put_parameter()
        .name(format!("/cutover/{service}"))
        .value(value)
        .r#type(aws_sdk_ssm::types::ParameterType::String)
        .overwrite(true)
        .send()
        .await
        .expect("PutParameter");
}

/// The settings parameters of `seed_other_services`' services, each naming its own alarm
/// (`cutover-other-<n>-5xx`), as their stacks write them.
pub async fn put_other_settings_parameters(clients: &Clients, base: &Base, count: i32) {
    for n in 1..=count {
        let alarms = serde_json::json!({"ALARMS": [format!("cutover-other-{n}-5xx")]});
        let settings = settings_json(base, 1, 0, alarms);
        put_settings_parameter(clients, &format!("other-{n}"), &settings).await;
    }
}

/// A 5xx alarm on the service's load balancer, then set to `state` (OK, ALARM, …).
pub async fn put_alarm(clients: &Clients, name: &str, state: &str) {
    use aws_sdk_cloudwatch::types::{ComparisonOperator, Statistic};
    clients
        .cloudwatch
        .put_metric_alarm()
        .alarm_name(name)
        .namespace("AWS/ApplicationELB")
        .metric_name("HTTPCode_Target_5XX_Count")
        .statistic(Statistic::Sum)
        .period(60)
        .evaluation_periods(1)
        .threshold(5.0)
        .comparison_operator(ComparisonOperator::GreaterThanThreshold)
        .send()
        .await
        .expect("PutMetricAlarm");
    set_alarm(clients, name, state).await;
}

/// What CloudWatch would do when the metric crosses (or leaves) the threshold.
pub async fn set_alarm(clients: &Clients, name: &str, state: &str) {
    clients
        .cloudwatch
        .set_alarm_state()
        .alarm_name(name)
        .state_value(aws_sdk_cloudwatch::types::StateValue::from(state))
        .state_reason("set by the test")
        .send()
        .await
        .expect("SetAlarmState");
}

fn truncate_name(service: &str) -> &str {
    &service[..service.len().min(26)]
}

/// The service's settings variable value, as a JSON object.
pub fn settings_json(
    base: &Base,
    count: u32,
    elastic_ips: usize,
    extra: serde_json::Value,
) -> String {
    let mut settings = json!({
        "AMI": base.ami,
        "INSTANCE_TYPE": "t3.small",
        "SUBNET": base.subnets,
        "SG": base.security_group,
        "COUNT": count,
        "DNS_ZONE": base.zone_id,
        "HEALTH_TIMEOUT_S": 600,
        "BAKE_S": 0,
        "TAGS": {"team": "portal"},
    });
    if elastic_ips > 0 {
        settings["EIP"] = json!(base.elastic_ips[..elastic_ips]);
    }
    if let (Some(settings), Some(extra)) = (settings.as_object_mut(), extra.as_object()) {
        for (key, value) in extra {
            settings.insert(key.clone(), value.clone());
        }
    }
    settings.to_string()
}
