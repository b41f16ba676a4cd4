//! The library's error type. Every AWS error keeps its operation, code and message.

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{operation} failed: {code}: {message}")]
    Aws {
        operation: &'static str,
        code: String,
        message: String,
    },
    /// The tagged resources are missing, duplicated or inconsistent.
    #[error("{0}")]
    World(String),
    #[error(transparent)]
    BadEvent(#[from] crate::event::BadEvent),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// A short machine-readable kind, for the Lambda error response.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Aws { .. } => "AwsError",
            Error::World(_) => "WorldError",
            Error::BadEvent(_) => "BadEvent",
            Error::Internal(_) => "InternalError",
        }
    }
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(error: Error) -> Self {
        lambda_runtime::Diagnostic {
            error_type: error.kind().into(),
            error_message: error.to_string(),
        }
    }
}
