//! The CodePipeline job acknowledgement and SNS.

use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};

use super::*;

impl Aws {
    /// `Ok(false)` when CodePipeline says the job was already acknowledged (or is gone).
    pub async fn put_job_success(
        &self,
        job_id: &str,
        summary: &str,
        continuation_token: Option<String>,
        output_variables: &BTreeMap<String, String>,
    ) -> Result<bool, Error> {
        let details = aws_sdk_codepipeline::types::ExecutionDetails::builder()
            .summary(truncate(summary, 2048))
            .build();
        let mut request = self
            .codepipeline
            .put_job_success_result()
            .job_id(job_id)
            .execution_details(details)
            .set_continuation_token(continuation_token);
        for (key, value) in output_variables {
            request = request.output_variables(key, value);
        }
        acknowledged(request.send().await.map(|_| ()), "PutJobSuccessResult")
    }

    /// The status of one execution; one that is not found (or whose pipeline is gone) has ended.
    pub async fn pipeline_execution(
        &self,
        pipeline: &str,
        execution_id: &str,
    ) -> Result<Execution, Error> {
        let read = self
            .codepipeline
            .get_pipeline_execution()
            .pipeline_name(pipeline)
            .pipeline_execution_id(execution_id)
            .send()
            .await;
        match read {
            Ok(out) => {
                let status = out
                    .pipeline_execution()
                    .and_then(|e| e.status())
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default();
                Ok(match status.as_str() {
                    "InProgress" | "Stopping" => Execution::Running(status),
                    _ => Execution::Ended(status),
                })
            }
            Err(SdkError::ServiceError(e))
                if matches!(
                    e.err().code(),
                    Some("PipelineExecutionNotFoundException" | "PipelineNotFoundException")
                ) =>
            {
                Ok(Execution::Ended(
                    e.err().code().unwrap_or_default().to_owned(),
                ))
            }
            Err(e) => Err(aws_error("GetPipelineExecution")(e)),
        }
    }

    pub async fn put_job_failure(&self, job_id: &str, message: &str) -> Result<bool, Error> {
        let details = aws_sdk_codepipeline::types::FailureDetails::builder()
            .r#type(aws_sdk_codepipeline::types::FailureType::JobFailed)
            .message(truncate(message, 5000))
            .build()
            .map_err(build_error("FailureDetails"))?;
        let sent = self
            .codepipeline
            .put_job_failure_result()
            .job_id(job_id)
            .failure_details(details)
            .send()
            .await;
        acknowledged(sent.map(|_| ()), "PutJobFailureResult")
    }

    pub async fn publish(
        &self,
        topic_arn: &str,
        subject: &str,
        message: &str,
    ) -> Result<(), Error> {
        self.sns
            .publish()
            .topic_arn(topic_arn)
            .subject(truncate(subject, 100))
            // `message` is a JSON object of one message per protocol, `default` for the rest.
            .message_structure("json")
            .message(message)
            .send()
            .await
            .map_err(aws_error("Publish"))?;
        Ok(())
    }
}

fn acknowledged<E, R>(
    sent: Result<(), SdkError<E, R>>,
    operation: &'static str,
) -> Result<bool, Error>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match sent {
        Ok(()) => Ok(true),
        Err(err)
            if matches!(
                err.code(),
                Some("InvalidJobStateException" | "JobNotFoundException")
            ) =>
        {
            Ok(false)
        }
        Err(err) => Err(aws_error(operation)(err)),
    }
}

fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}
