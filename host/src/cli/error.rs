//! Errors of the container verbs, printed as the docker CLI prints them.

use super::machine::MachineCliError;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The engine refused: its message, as `docker` shows it.
    #[error("Error response from daemon: {message}")]
    Daemon { message: String },
    #[error("cannot talk to the engine")]
    Engine(#[source] bollard::errors::Error),
    #[error(transparent)]
    Machine(#[from] MachineCliError),
    #[error("{0}")]
    Usage(String),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl From<bollard::errors::Error> for CliError {
    fn from(e: bollard::errors::Error) -> Self {
        match e {
            bollard::errors::Error::DockerResponseServerError { message, .. } => {
                CliError::Daemon { message }
            }
            other => CliError::Engine(other),
        }
    }
}

impl CliError {
    /// Whether the engine said the object does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, CliError::Daemon { message } if message.starts_with("No such"))
    }
}
