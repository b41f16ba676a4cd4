use super::*;

const VAR: &str = "MOBILE_ZUM_API";

fn parse(raw: &str) -> Result<ServiceSettings, SettingsError> {
    ServiceSettings::parse(VAR, raw)
}

/// Asserts that `raw` is refused with an error naming the variable and `key`.
fn refused(raw: &str, key: Option<&str>, needle: &str) {
    let error = parse(raw).expect_err(raw);
    assert_eq!(error.variable, VAR, "{raw}");
    assert_eq!(error.key.as_deref(), key, "{raw}: {error}");
    let message = error.to_string();
    assert!(message.contains(VAR), "{message}");
    if let Some(key) = key {
        assert!(message.contains(key), "{message}");
    }
    assert!(message.contains(needle), "`{message}` lacks `{needle}`");
}

fn spec(settings: &ServiceSettings) -> &InstanceSpec {
    match &settings.fleet {
        Fleet::Instances(spec) => spec,
        Fleet::Group { .. } => panic!("an instances fleet was expected"),
    }
}

const MINIMAL: &str = r#"{"AMI": "ami-0abc", "INSTANCE_TYPE": "t3.small", "SUBNET": ["subnet-0a", "subnet-0b"], "SG": "sg-01"}"#;

#[test]
fn minimal_json_gets_defaults() {
    let s = parse(MINIMAL).unwrap();
    assert_eq!(s.ami, "ami-0abc");
    assert_eq!(spec(&s).instance_type, "t3.small");
    assert_eq!(s.subnets, ["subnet-0a", "subnet-0b"]);
    assert_eq!(spec(&s).security_groups, ["sg-01"]);
    assert_eq!(s.count, 1);
    assert_eq!(s.health_timeout_s, DEFAULT_HEALTH_TIMEOUT_S);
    assert_eq!(s.bake_s, DEFAULT_BAKE_S);
    assert!(s.elastic_ips.is_empty());
    assert!(s.dns_zone.is_none());
    assert!(s.tags.is_empty());
}

#[test]
fn full_json_is_read_into_every_field() {
    let s = parse(
        r##"{"AMI":"ami-1","INSTANCE_TYPE":"m7g.large","SUBNET":"subnet-a","SG":["sg-1","sg-2"],
            "EIP":["eipalloc-1","eipalloc-2"],"COUNT":2,"INSTANCE_PROFILE":"codedeploy-agent",
            "KEY_NAME":"ops","USER_DATA":"#!/bin/sh","DNS_ZONE":"/hostedzone/Z123ABC",
            "HEALTH_TIMEOUT_S":"120","BAKE_S":0,"STICKY_S":300,"TAGS":{"team":"portal","cost":42}}"##,
    )
    .unwrap();
    assert_eq!(s.subnets, ["subnet-a"]);
    assert_eq!(spec(&s).security_groups, ["sg-1", "sg-2"]);
    assert_eq!(s.elastic_ips, ["eipalloc-1", "eipalloc-2"]);
    assert_eq!(s.count, 2);
    assert_eq!(
        spec(&s).instance_profile.as_deref(),
        Some("codedeploy-agent")
    );
    assert_eq!(spec(&s).key_name.as_deref(), Some("ops"));
    assert_eq!(spec(&s).user_data.as_deref(), Some("#!/bin/sh"));
    assert_eq!(s.dns_zone.as_deref(), Some("Z123ABC"));
    assert_eq!(s.health_timeout_s, 120);
    assert_eq!(s.bake_s, 0);
    assert_eq!(s.sticky_s, Some(300));
    assert_eq!(s.tags.get("team").map(String::as_str), Some("portal"));
    assert_eq!(s.tags.get("cost").map(String::as_str), Some("42"));
}

#[test]
fn the_seeds_python_literal_form_is_accepted() {
    let s = parse(
        r#"{'AMI': 'ami-1', 'INSTANCE_TYPE': 't3.small', 'SUBNET': "['subnet-a','subnet-b']", 'SG': 'sg-1', 'EIP': None}"#,
    )
    .unwrap();
    assert_eq!(s.subnets, ["subnet-a", "subnet-b"]);
    assert!(s.elastic_ips.is_empty());
}

#[test]
fn python_literals_with_booleans_tuples_and_numbers() {
    let s = parse(
        "{'AMI': 'ami-1', 'INSTANCE_TYPE': 't3.small', 'SUBNET': ('subnet-a',), 'SG': ['sg-1'], 'COUNT': 3, 'KEY_NAME': None, 'TAGS': {'Spot': 'False'}}",
    )
    .unwrap();
    assert_eq!(s.count, 3);
    assert_eq!(s.subnets, ["subnet-a"]);
    assert!(spec(&s).key_name.is_none());
}

#[test]
fn python_string_holding_a_list_of_eips() {
    let s = parse(
        r#"{'AMI':'ami-1','INSTANCE_TYPE':'t3.small','SUBNET':'subnet-a','SG':'sg-1','EIP':"['eipalloc-0f']"}"#,
    )
    .unwrap();
    assert_eq!(s.elastic_ips, ["eipalloc-0f"]);
}

#[test]
fn json_string_holding_a_json_list() {
    let s = parse(r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"[\"subnet-a\", \"subnet-b\"]","SG":"sg-1"}"#).unwrap();
    assert_eq!(s.subnets, ["subnet-a", "subnet-b"]);
}

#[test]
fn not_an_object_at_all() {
    refused(
        "{not json or python",
        None,
        "neither a JSON object nor a Python dict",
    );
}

#[test]
fn a_list_instead_of_an_object() {
    let error = ServiceSettings::parse(VAR, "[1, 2]").unwrap_err();
    assert!(error.to_string().contains("must be an object"), "{error}");
}

#[test]
fn missing_ami() {
    refused(
        r#"{"INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1"}"#,
        Some("AMI"),
        "required",
    );
}

#[test]
fn missing_instance_type() {
    refused(
        r#"{"AMI":"ami-1","SUBNET":"subnet-a","SG":"sg-1"}"#,
        Some("INSTANCE_TYPE"),
        "required",
    );
}

#[test]
fn missing_subnet() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SG":"sg-1"}"#,
        Some("SUBNET"),
        "required",
    );
}

#[test]
fn missing_security_group() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a"}"#,
        Some("SG"),
        "required",
    );
}

#[test]
fn null_required_value_counts_as_missing() {
    refused(
        "{'AMI': None, 'INSTANCE_TYPE': 't3.small', 'SUBNET': 'subnet-a', 'SG': 'sg-1'}",
        Some("AMI"),
        "required",
    );
}

#[test]
fn ami_with_the_wrong_prefix() {
    refused(
        r#"{"AMI":"img-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1"}"#,
        Some("AMI"),
        "ami-<hex>",
    );
}

#[test]
fn ami_that_is_a_number() {
    refused(
        r#"{"AMI":12,"INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1"}"#,
        Some("AMI"),
        "must be a string",
    );
}

#[test]
fn subnet_with_non_hex_suffix() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":["subnet-xyz"],"SG":"sg-1"}"#,
        Some("SUBNET"),
        "subnet-xyz",
    );
}

#[test]
fn empty_subnet_list() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":[],"SG":"sg-1"}"#,
        Some("SUBNET"),
        "empty list",
    );
}

#[test]
fn empty_subnet_list_in_a_python_string() {
    refused(
        r#"{'AMI':'ami-1','INSTANCE_TYPE':'t3.small','SUBNET':"[]",'SG':'sg-1'}"#,
        Some("SUBNET"),
        "empty list",
    );
}

#[test]
fn subnet_string_that_is_not_a_list() {
    refused(
        r#"{'AMI':'ami-1','INSTANCE_TYPE':'t3.small','SUBNET':"['subnet-a'",'SG':'sg-1'}"#,
        Some("SUBNET"),
        "not a list literal",
    );
}

#[test]
fn duplicate_subnet() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":["subnet-a","subnet-a"],"SG":"sg-1"}"#,
        Some("SUBNET"),
        "twice",
    );
}

#[test]
fn security_group_as_an_object() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":{"id":"sg-1"}}"#,
        Some("SG"),
        "found an object",
    );
}

#[test]
fn security_group_with_wrong_prefix() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":["sg-1","group-2"]}"#,
        Some("SG"),
        "group-2",
    );
}

#[test]
fn eip_that_is_a_public_ip_not_an_allocation() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1","EIP":"3.3.3.3"}"#,
        Some("EIP"),
        "eipalloc-<hex>",
    );
}

#[test]
fn more_eips_than_instances() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1","EIP":["eipalloc-1","eipalloc-2"]}"#,
        Some("EIP"),
        "at most one per instance",
    );
}

#[test]
fn count_zero() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1","COUNT":0}"#,
        Some("COUNT"),
        "outside 1..=50",
    );
}

#[test]
fn count_too_large() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1","COUNT":51}"#,
        Some("COUNT"),
        "outside 1..=50",
    );
}

#[test]
fn count_negative_or_fractional() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1","COUNT":-1}"#,
        Some("COUNT"),
        "whole number",
    );
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1","COUNT":1.5}"#,
        Some("COUNT"),
        "whole number",
    );
}

#[test]
fn count_as_a_word() {
    refused(
        "{'AMI':'ami-1','INSTANCE_TYPE':'t3.small','SUBNET':'subnet-a','SG':'sg-1','COUNT':'two'}",
        Some("COUNT"),
        "whole number",
    );
}

#[test]
fn instance_type_without_a_size() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3","SUBNET":"subnet-a","SG":"sg-1"}"#,
        Some("INSTANCE_TYPE"),
        "t3.small",
    );
}

#[test]
fn instance_type_empty() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"  ","SUBNET":"subnet-a","SG":"sg-1"}"#,
        Some("INSTANCE_TYPE"),
        "must not be empty",
    );
}

#[test]
fn unknown_key_is_a_typo() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1","SUBNETS":"subnet-b"}"#,
        Some("SUBNETS"),
        "unknown key",
    );
}

#[test]
fn dns_zone_that_is_a_domain_name() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1","DNS_ZONE":"example.internal"}"#,
        Some("DNS_ZONE"),
        "hosted zone id",
    );
}

#[test]
fn health_timeout_zero() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1","HEALTH_TIMEOUT_S":0}"#,
        Some("HEALTH_TIMEOUT_S"),
        "outside",
    );
}

#[test]
fn bake_longer_than_thirty_days() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1","BAKE_S":99999999}"#,
        Some("BAKE_S"),
        "outside",
    );
}

#[test]
fn tags_as_a_list() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1","TAGS":["team"]}"#,
        Some("TAGS"),
        "object of tag names",
    );
}

#[test]
fn tags_that_would_overwrite_cutovers_own() {
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1","TAGS":{"cutover:stage":"product"}}"#,
        Some("TAGS"),
        "reserved",
    );
    refused(
        r#"{"AMI":"ami-1","INSTANCE_TYPE":"t3.small","SUBNET":"subnet-a","SG":"sg-1","TAGS":{"Name":"x"}}"#,
        Some("TAGS"),
        "reserved",
    );
}

#[test]
fn registry_keeps_one_bad_service_from_breaking_another() {
    let registry = Registry::from_vars([
        ("MOBILE_ZUM_API".to_owned(), MINIMAL.to_owned()),
        ("MOBILE_ZUM_WEB".to_owned(), r#"{"AMI":"nope"}"#.to_owned()),
        ("PATH".to_owned(), "/usr/bin".to_owned()),
        ("AWS_REGION".to_owned(), "{\"AMI\":\"ami-1\"}".to_owned()),
    ]);
    let api = ServiceName::parse("mobile-zum-api").unwrap();
    let web = ServiceName::parse("mobile-zum-web").unwrap();
    let unknown = ServiceName::parse("search").unwrap();
    assert_eq!(registry.get(&api).unwrap().ami, "ami-0abc");
    let bad = registry.get(&web).unwrap_err().to_string();
    assert!(
        bad.contains("MOBILE_ZUM_WEB") && bad.contains("AMI"),
        "{bad}"
    );
    let missing = registry.get(&unknown).unwrap_err().to_string();
    assert!(
        missing.contains("unknown service `search`") && missing.contains("SEARCH"),
        "{missing}"
    );
    assert_eq!(
        registry.variables().count(),
        2,
        "PATH and AWS_REGION are never settings"
    );
}

#[test]
fn an_asg_fleet_names_the_teams_template_and_takes_the_rest_from_it() {
    let s = parse(
        r#"{"FLEET":"asg","LAUNCH_TEMPLATE":"lt-0abc123","AMI":"ami-1","SUBNET":["subnet-a"],"COUNT":3}"#,
    )
    .unwrap();
    assert_eq!(
        s.fleet,
        Fleet::Group {
            launch_template: "lt-0abc123".into()
        }
    );
    assert_eq!(s.count, 3);
    assert!(matches!(parse(MINIMAL).unwrap().fleet, Fleet::Instances(_)));
    let named =
        r#"{"FLEET":"asg","LAUNCH_TEMPLATE":"web/api_v2","AMI":"ami-1","SUBNET":"subnet-a"}"#;
    assert!(parse(named).unwrap().fleet.is_group());
}

#[test]
fn an_asg_fleet_refuses_what_its_template_sets_and_needs_a_template() {
    let asg = |extra: &str| {
        format!(
            r#"{{"FLEET":"asg","LAUNCH_TEMPLATE":"api-web","AMI":"ami-1","SUBNET":"subnet-a"{extra}}}"#
        )
    };
    for key in [
        "INSTANCE_TYPE",
        "SG",
        "INSTANCE_PROFILE",
        "KEY_NAME",
        "USER_DATA",
        "EIP",
    ] {
        let value = match key {
            "INSTANCE_TYPE" => "\"t3.small\"",
            "SG" => "\"sg-1\"",
            "EIP" => "\"eipalloc-1\"",
            _ => "\"x\"",
        };
        refused(
            &asg(&format!(r#","{key}":{value}"#)),
            Some(key),
            "FLEET=asg",
        );
    }
    refused(
        r#"{"FLEET":"asg","AMI":"ami-1","SUBNET":"subnet-a"}"#,
        Some("LAUNCH_TEMPLATE"),
        "required with FLEET=asg",
    );
    refused(
        &asg("").replace("api-web", "a b"),
        Some("LAUNCH_TEMPLATE"),
        "neither a launch template id",
    );
    refused(
        &MINIMAL.replace('}', r#","LAUNCH_TEMPLATE":"api-web"}"#),
        Some("LAUNCH_TEMPLATE"),
        "only with FLEET=asg",
    );
    refused(
        &MINIMAL.replace('}', r#","FLEET":"spot"}"#),
        Some("FLEET"),
        "neither `instances` nor `asg`",
    );
}

#[test]
fn the_install_mark_is_a_boolean_of_instance_fleets() {
    assert!(!parse(MINIMAL).unwrap().require_install_mark);
    let marked = MINIMAL.replace('}', r#","INSTALL_MARK":true}"#);
    assert!(parse(&marked).unwrap().require_install_mark);
    refused(
        &MINIMAL.replace('}', r#","INSTALL_MARK":"yes"}"#),
        Some("INSTALL_MARK"),
        "true or false",
    );
    refused(
        r#"{"FLEET":"asg","LAUNCH_TEMPLATE":"web","AMI":"ami-1","SUBNET":"subnet-a","INSTALL_MARK":true}"#,
        Some("INSTALL_MARK"),
        "FLEET=asg",
    );
}

#[test]
fn the_listener_is_a_listeners_arn() {
    assert_eq!(parse(MINIMAL).unwrap().listener, None);
    let arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/web/50dc6c495c0c9188/f2f7dc8efc522ab2";
    let hinted = MINIMAL.replace('}', &format!(r#","LISTENER":"{arn}"}}"#));
    assert_eq!(parse(&hinted).unwrap().listener.as_deref(), Some(arn));
    refused(
        &MINIMAL.replace(
            '}',
            r#","LISTENER":"arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/web/1"}"#,
        ),
        Some("LISTENER"),
        "listener's ARN",
    );
}
