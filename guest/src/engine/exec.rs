//! `exec`: processes run inside a running container by its monitor. Exec
//! instances live in memory, like Docker's.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::sync::Mutex;

use super::{ContainerHandle, Engine, EngineError};
use crate::model::{null_default, string_or_vec};
use crate::runtime::monitor::client::{self, Session};
use crate::runtime::monitor::protocol::{ExecSpec, Request};

/// The body of `POST /containers/{id}/exec`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    pub attach_stdin: bool,
    pub attach_stdout: bool,
    pub attach_stderr: bool,
    pub tty: bool,
    #[serde(deserialize_with = "null_default")]
    pub env: Vec<String>,
    #[serde(deserialize_with = "string_or_vec")]
    pub cmd: Option<Vec<String>>,
    pub user: String,
    pub working_dir: String,
    pub privileged: bool,
    /// The SDKs write `detachKeys` (dockerd reads JSON keys in any case).
    #[serde(alias = "detachKeys")]
    pub detach_keys: String,
    pub console_size: Option<[u16; 2]>,
}

impl ExecConfig {
    /// What `exec_create` refuses before it looks at the container: an exec
    /// without a command. (The `exec_body` fuzz target in fuzz/ runs it too.)
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.cmd.as_ref().is_none_or(|c| c.is_empty()) {
            return Err(EngineError::InvalidParameter(
                "No exec command specified".to_owned(),
            ));
        }
        Ok(())
    }
}

/// One exec instance.
#[derive(Debug, Clone)]
pub struct ExecRecord {
    pub id: String,
    pub container_id: String,
    pub config: ExecConfig,
    pub running: bool,
    pub started: bool,
    pub exit_code: Option<i64>,
    pub pid: i32,
}

/// Exec instances by id.
#[derive(Debug, Default)]
pub struct ExecRegistry {
    pub by_id: Mutex<HashMap<String, ExecRecord>>,
}

impl Engine {
    /// Creates an exec instance in a running container.
    pub async fn exec_create(&self, key: &str, config: ExecConfig) -> Result<String, EngineError> {
        let handle = self.container(key).await?;
        let record = handle.record.lock().await;
        if !record.state.running || record.state.status == "restarting" {
            return Err(EngineError::NotRunning(record.id.clone()));
        }
        if record.state.paused {
            return Err(EngineError::Conflict(format!(
                "Container {key} is paused, unpause the container before exec"
            )));
        }
        config.validate()?;
        if !config.detach_keys.is_empty()
            && super::attach::parse_detach_keys(&config.detach_keys).is_err()
        {
            return Err(EngineError::InvalidParameter(format!(
                "Invalid escape keys ({}) provided",
                config.detach_keys
            )));
        }
        let id = super::names::new_id();
        self.execs.by_id.lock().await.insert(
            id.clone(),
            ExecRecord {
                id: id.clone(),
                container_id: record.id.clone(),
                config,
                running: false,
                started: false,
                exit_code: None,
                pid: 0,
            },
        );
        self.publish_container(
            &record,
            "exec_create",
            std::collections::BTreeMap::from([("execID".to_owned(), id.clone())]),
        );
        Ok(id)
    }

    /// The uid and gid of an exec: its `User` (else the container's)
    /// resolved against the container's own passwd and group files, read
    /// on a blocking thread with no lock held, so a hostile file there
    /// cannot stall the engine or the container's other callers.
    async fn exec_user(
        &self,
        handle: &ContainerHandle,
        exec: &ExecRecord,
    ) -> Result<(Option<u32>, Option<u32>), EngineError> {
        let (user, rootfs) = {
            let record = handle.record.lock().await;
            if !record.state.running {
                return Err(EngineError::NotRunning(record.id.clone()));
            }
            let user = if exec.config.user.is_empty() {
                record.config.user.clone()
            } else {
                exec.config.user.clone()
            };
            (user, self.layout.container(&record.id).join("rootfs"))
        };
        let resolved =
            tokio::task::spawn_blocking(move || crate::runtime::user::resolve(&rootfs, &user, &[]))
                .await
                .map_err(|e| EngineError::Runtime(format!("user resolution stopped: {e}")))?;
        // As in Docker, the process was not invoked: the reason goes to the
        // client on the stream and the exec exits 126.
        match resolved {
            Ok(user) => Ok((Some(user.uid), Some(user.gid))),
            Err(e) => Err(EngineError::Runtime(crate::state::error_chain(&e))),
        }
    }

    /// What an exec's stream will be (`tty`, `stdin`), for an exec that can
    /// still start: unknown ones are 404, started ones 409, as `exec_start`
    /// would answer.
    pub async fn exec_stream(&self, exec_id: &str) -> Result<(bool, bool), EngineError> {
        let execs = self.execs.by_id.lock().await;
        let exec = execs
            .get(exec_id)
            .ok_or_else(|| EngineError::NoSuchExec(exec_id.to_owned()))?;
        if exec.started {
            return Err(EngineError::Conflict(format!(
                "Error: Exec command {exec_id} has already run"
            )));
        }
        Ok((exec.config.tty, exec.config.attach_stdin))
    }

    /// Starts an exec instance; the session carries its stream.
    pub async fn exec_start(&self, exec_id: &str) -> Result<(ExecRecord, Session), EngineError> {
        let mut execs = self.execs.by_id.lock().await;
        let exec = execs
            .get_mut(exec_id)
            .ok_or_else(|| EngineError::NoSuchExec(exec_id.to_owned()))?;
        if exec.started {
            return Err(EngineError::Conflict(format!(
                "Error: Exec command {exec_id} has already run"
            )));
        }
        exec.started = true;
        let snapshot = exec.clone();
        drop(execs);
        let handle = self.container(&snapshot.container_id).await?;
        let (uid, gid) = match self.exec_user(&handle, &snapshot).await {
            Ok(ids) => ids,
            Err(e) => {
                // Docker's code for a process that could not be invoked.
                if let Some(exec) = self.execs.by_id.lock().await.get_mut(exec_id) {
                    exec.exit_code = Some(126);
                }
                return Err(e);
            }
        };
        let (spec, socket) = {
            let record = handle.record.lock().await;
            if !record.state.running {
                return Err(EngineError::NotRunning(record.id.clone()));
            }
            // The monitor merges these over the container's own environment.
            let mut env = snapshot.config.env.clone();
            if snapshot.config.tty && !env.iter().any(|e| e.starts_with("TERM=")) {
                env.push("TERM=xterm".to_owned());
            }
            let cwd = if snapshot.config.working_dir.is_empty() {
                record.config.working_dir.clone()
            } else {
                snapshot.config.working_dir.clone()
            };
            let spec = ExecSpec {
                args: snapshot.config.cmd.clone().unwrap_or_default(),
                env,
                cwd,
                uid,
                gid,
                tty: snapshot.config.tty,
                stdin: snapshot.config.attach_stdin,
                privileged: snapshot.config.privileged,
                // As dockerd: the keys detach from an exec with a TTY only.
                detach_keys: if snapshot.config.tty && snapshot.config.attach_stdin {
                    super::attach::parse_detach_keys(&snapshot.config.detach_keys)
                        .unwrap_or_default()
                } else {
                    Vec::new()
                },
            };
            self.publish_container(
                &record,
                "exec_start",
                std::collections::BTreeMap::from([("execID".to_owned(), snapshot.id.clone())]),
            );
            (spec, self.layout.monitor_socket(&record.id))
        };
        let session = client::open(
            &socket,
            &Request::Exec {
                exec_id: snapshot.id.clone(),
                spec,
            },
        )
        .await;
        let mut execs = self.execs.by_id.lock().await;
        let exec = execs
            .get_mut(exec_id)
            .ok_or_else(|| EngineError::NoSuchExec(exec_id.to_owned()))?;
        match session {
            Ok(session) => {
                exec.running = true;
                exec.pid = session.reply.pid;
                Ok((exec.clone(), session))
            }
            Err(e) => {
                let message = e.to_string();
                exec.exit_code = Some(
                    if message.contains("not found")
                        || message.contains("no such file or directory")
                    {
                        127
                    } else {
                        126
                    },
                );
                Err(EngineError::Runtime(message))
            }
        }
    }

    /// Records the end of an exec.
    pub async fn exec_finished(&self, exec_id: &str, code: i64) {
        let mut execs = self.execs.by_id.lock().await;
        if let Some(exec) = execs.get_mut(exec_id) {
            exec.running = false;
            exec.exit_code = Some(code);
            let container_id = exec.container_id.clone();
            drop(execs);
            if let Ok(handle) = self.container(&container_id).await {
                let record = handle.record.lock().await;
                self.publish_container(
                    &record,
                    "exec_die",
                    std::collections::BTreeMap::from([
                        ("execID".to_owned(), exec_id.to_owned()),
                        ("exitCode".to_owned(), code.to_string()),
                    ]),
                );
            }
        }
    }

    /// `GET /exec/{id}/json`.
    pub async fn exec_inspect(&self, exec_id: &str) -> Result<Value, EngineError> {
        let execs = self.execs.by_id.lock().await;
        let exec = execs
            .get(exec_id)
            .ok_or_else(|| EngineError::NoSuchExec(exec_id.to_owned()))?;
        let cmd = exec.config.cmd.clone().unwrap_or_default();
        Ok(json!({
            "ID": exec.id,
            "Running": exec.running,
            "ExitCode": exec.exit_code,
            "ProcessConfig": {
                "tty": exec.config.tty,
                "entrypoint": cmd.first().cloned().unwrap_or_default(),
                "arguments": cmd.get(1..).unwrap_or_default(),
                "privileged": exec.config.privileged,
                "user": exec.config.user,
            },
            "OpenStdin": exec.config.attach_stdin,
            "OpenStderr": exec.config.attach_stderr,
            "OpenStdout": exec.config.attach_stdout,
            "CanRemove": false,
            "ContainerID": exec.container_id,
            "DetachKeys": exec.config.detach_keys,
            "Pid": exec.pid,
        }))
    }

    /// Resizes the terminal of an exec.
    pub async fn exec_resize(
        &self,
        exec_id: &str,
        height: u16,
        width: u16,
    ) -> Result<(), EngineError> {
        let container_id = {
            let execs = self.execs.by_id.lock().await;
            let exec = execs
                .get(exec_id)
                .ok_or_else(|| EngineError::NoSuchExec(exec_id.to_owned()))?;
            exec.container_id.clone()
        };
        let socket = self.layout.monitor_socket(&container_id);
        client::call(
            &socket,
            &Request::Resize {
                exec_id: Some(exec_id.to_owned()),
                height,
                width,
            },
        )
        .await
        .map(|_| ())
        .map_err(|e| EngineError::Conflict(e.to_string()))
    }

    /// Resizes the container's own terminal.
    pub async fn resize(&self, key: &str, height: u16, width: u16) -> Result<(), EngineError> {
        let handle = self.container(key).await?;
        let record = handle.record.lock().await;
        if !record.state.running {
            return Err(EngineError::Conflict(format!(
                "Container {} is not running",
                record.id
            )));
        }
        let socket = self.layout.monitor_socket(&record.id);
        drop(record);
        client::call(
            &socket,
            &Request::Resize {
                exec_id: None,
                height,
                width,
            },
        )
        .await
        .map(|_| ())
        .map_err(|e| EngineError::Conflict(e.to_string()))
    }
}

/// Keeps the registry from growing without bound: forget finished execs of
/// removed containers.
pub async fn forget_container(engine: &Arc<Engine>, container_id: &str) {
    engine
        .execs
        .by_id
        .lock()
        .await
        .retain(|_, exec| exec.container_id != container_id);
}
