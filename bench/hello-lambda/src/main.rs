//! A bare `lambda_runtime` function that answers every event with `{}`: what the bench measures
//! the four functions' init against, built with the same profile in the same run.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(lambda_runtime::service_fn(
        |_: lambda_runtime::LambdaEvent<serde_json::Value>| async {
            Ok::<_, lambda_runtime::Error>(serde_json::json!({}))
        },
    ))
    .await
}
