//! The `register-target` Lambda function: see `cutover::run`.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    cutover::serve(cutover::Function::RegisterTarget).await
}
