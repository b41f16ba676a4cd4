//! cutover: blue/green releases of EC2 fleets behind an Application Load Balancer, one Lambda
//! function per CodePipeline stage.
//!
//! `settings` and `event` parse what comes in, `aws` sees and changes the world, `plan` decides,
//! `run` ties them together for the four functions and keeps the CodePipeline contract.

pub mod aws;
pub mod error;
pub mod event;
pub mod function;
pub mod names;
pub mod plan;
pub mod port;
pub mod progress;
pub mod run;
pub mod settings;
pub mod world;

pub use error::Error;
pub use function::Function;

/// The functions' application on AWS: `run::App` with the AWS adapter.
pub type App = run::App<aws::Aws>;

/// JSON logs (or text, per `AWS_LAMBDA_LOG_FORMAT`), filtered by `RUST_LOG` / `AWS_LAMBDA_LOG_LEVEL`.
pub fn init_logging() {
    lambda_runtime::tracing::init_default_subscriber();
}

/// The whole of a function's `main`: build everything once at cold start, then serve invocations.
pub async fn serve(function: Function) -> Result<(), lambda_runtime::Error> {
    init_logging();
    let config = aws::load_config().await;
    let app = App::from_env(function, aws::Aws::new(&config));
    let app = &app;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<serde_json::Value>| async move {
            let deadline =
                std::time::UNIX_EPOCH + std::time::Duration::from_millis(event.context.deadline);
            // Boxed: the handler's future is deep enough to overflow the compiler's layout limit.
            Box::pin(app.handle_until(function, event.payload, Some(deadline))).await
        },
    ))
    .await
}
