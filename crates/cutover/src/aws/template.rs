//! A launch template's data as `DescribeLaunchTemplateVersions` answers it, written back as
//! `CreateLaunchTemplate` takes it, with the release's image. EC2 has two shapes for the same
//! data and no call that copies a version into another template.

use aws_sdk_ec2::types as ec2t;

use crate::error::Error;

/// The fields a release's copy carries over (`refuse_what_is_not_copied` names the rest).
pub(super) fn request_data(
    data: &ec2t::ResponseLaunchTemplateData,
    source: &str,
    ami: &str,
) -> Result<ec2t::RequestLaunchTemplateData, Error> {
    refuse_what_is_not_copied(data, source)?;
    let profile = data.iam_instance_profile().map(|p| {
        ec2t::LaunchTemplateIamInstanceProfileSpecificationRequest::builder()
            .set_arn(p.arn().map(str::to_owned))
            .set_name(p.name().map(str::to_owned))
            .build()
    });
    let block_devices = block_devices(data);
    let metadata = data.metadata_options().map(|o| {
        ec2t::LaunchTemplateInstanceMetadataOptionsRequest::builder()
            .set_http_tokens(o.http_tokens().cloned())
            .set_http_put_response_hop_limit(o.http_put_response_hop_limit())
            .set_http_endpoint(o.http_endpoint().cloned())
            .set_instance_metadata_tags(o.instance_metadata_tags().cloned())
            .build()
    });
    let tag_specifications = data
        .tag_specifications()
        .iter()
        .map(|t| {
            ec2t::LaunchTemplateTagSpecificationRequest::builder()
                .set_resource_type(t.resource_type().cloned())
                .set_tags(Some(t.tags().to_vec()))
                .build()
        })
        .collect();
    Ok(ec2t::RequestLaunchTemplateData::builder()
        .image_id(ami)
        .set_instance_type(data.instance_type().cloned())
        .set_key_name(data.key_name().map(str::to_owned))
        .set_iam_instance_profile(profile)
        .set_security_group_ids(Some(data.security_group_ids().to_vec()))
        .set_security_groups(Some(data.security_groups().to_vec()))
        .set_user_data(data.user_data().map(str::to_owned))
        .set_block_device_mappings(Some(block_devices))
        .set_monitoring(data.monitoring().map(|m| {
            ec2t::LaunchTemplatesMonitoringRequest::builder()
                .set_enabled(m.enabled())
                .build()
        }))
        .set_ebs_optimized(data.ebs_optimized())
        .set_metadata_options(metadata)
        .set_tag_specifications(Some(tag_specifications))
        .set_disable_api_termination(data.disable_api_termination())
        .set_instance_initiated_shutdown_behavior(
            data.instance_initiated_shutdown_behavior().cloned(),
        )
        .set_credit_specification(data.credit_specification().map(|c| {
            ec2t::CreditSpecificationRequest::builder()
                .set_cpu_credits(c.cpu_credits().map(str::to_owned))
                .build()
        }))
        .build())
}

/// A template that uses a field the copy does not carry is refused by name rather than copied
/// without it (a group launching from a copy that silently lost its placement or network
/// interfaces would serve differently from the team's).
fn refuse_what_is_not_copied(
    data: &ec2t::ResponseLaunchTemplateData,
    source: &str,
) -> Result<(), Error> {
    let not_copied = [
        ("NetworkInterfaces", !data.network_interfaces().is_empty()),
        ("Placement", data.placement().is_some()),
        ("KernelId", data.kernel_id().is_some()),
        ("RamDiskId", data.ram_disk_id().is_some()),
        (
            "InstanceMarketOptions",
            data.instance_market_options().is_some(),
        ),
        ("CpuOptions", data.cpu_options().is_some()),
        (
            "CapacityReservationSpecification",
            data.capacity_reservation_specification().is_some(),
        ),
        (
            "LicenseSpecifications",
            !data.license_specifications().is_empty(),
        ),
        ("HibernationOptions", data.hibernation_options().is_some()),
        ("EnclaveOptions", data.enclave_options().is_some()),
        (
            "InstanceRequirements",
            data.instance_requirements().is_some(),
        ),
        (
            "ElasticGpuSpecifications",
            !data.elastic_gpu_specifications().is_empty(),
        ),
        (
            "PrivateDnsNameOptions",
            data.private_dns_name_options().is_some(),
        ),
        ("MaintenanceOptions", data.maintenance_options().is_some()),
    ];
    if let Some((field, _)) = not_copied.iter().find(|(_, used)| *used) {
        return Err(Error::World(format!(
            "launch template {source} (LAUNCH_TEMPLATE) sets {field}, which cutover does not copy \
             into a release's template; remove it from the template, or use FLEET=instances"
        )));
    }
    Ok(())
}

fn block_devices(
    data: &ec2t::ResponseLaunchTemplateData,
) -> Vec<ec2t::LaunchTemplateBlockDeviceMappingRequest> {
    data.block_device_mappings()
        .iter()
        .map(|m| {
            let ebs = m.ebs().map(|e| {
                ec2t::LaunchTemplateEbsBlockDeviceRequest::builder()
                    .set_encrypted(e.encrypted())
                    .set_delete_on_termination(e.delete_on_termination())
                    .set_iops(e.iops())
                    .set_kms_key_id(e.kms_key_id().map(str::to_owned))
                    .set_snapshot_id(e.snapshot_id().map(str::to_owned))
                    .set_volume_size(e.volume_size())
                    .set_volume_type(e.volume_type().cloned())
                    .set_throughput(e.throughput())
                    .build()
            });
            ec2t::LaunchTemplateBlockDeviceMappingRequest::builder()
                .set_device_name(m.device_name().map(str::to_owned))
                .set_virtual_name(m.virtual_name().map(str::to_owned))
                .set_no_device(m.no_device().map(str::to_owned))
                .set_ebs(ebs)
                .build()
        })
        .collect()
}
