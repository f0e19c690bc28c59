//! Exit codes and the error type commands return.

use std::process::ExitCode;

pub const FAILED: u8 = 1;
pub const CONFIG: u8 = 2;
pub const INCOMPLETE: u8 = 3;

/// Why a command ended unsuccessfully. Messages never carry a secret: they are
/// built from record keys, key ids and error kinds only.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub error: Option<anyhow::Error>,
}

impl Failure {
    pub fn config(msg: impl Into<String>) -> Self {
        Self {
            code: CONFIG,
            error: Some(anyhow::anyhow!(msg.into())),
        }
    }
    pub fn error(e: anyhow::Error) -> Self {
        Self {
            code: FAILED,
            error: Some(e),
        }
    }
    pub fn msg(msg: impl Into<String>) -> Self {
        Self {
            code: FAILED,
            error: Some(anyhow::anyhow!(msg.into())),
        }
    }
    /// The command already reported what went wrong; only the exit code is left.
    pub fn silent(code: u8) -> Self {
        Self { code, error: None }
    }
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(self.code)
    }
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::error(e.into())
    }
}
