//! Child processes that never outlive the stack that started them.
//!
//! Each emulator runs in its own process group, so a drop can stop the whole
//! tree (LocalStack forks helpers). On Linux the child also gets
//! `PR_SET_PDEATHSIG`, so a test binary that exits without dropping its
//! shared stack (statics are never dropped) still takes the emulators with it.
//! The death signal fires when the *thread* that spawned the child exits, so
//! every spawn goes through one long-lived spawner thread.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use crate::StackError;

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("courier-stack-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    let _ = reply.send(command.spawn());
                }
                // The channel lives in a static, so this thread never gets here
                // while the process runs: children keep their parent thread.
                loop {
                    std::thread::park();
                }
            })
            .expect("spawning the stack's spawner thread");
        Mutex::new(tx)
    })
}

/// A running emulator process, stopped (with its process group) on drop.
#[derive(Debug)]
pub struct ManagedProcess {
    name: String,
    child: Child,
    /// Files the process works in, removed once it has stopped.
    scratch: Vec<PathBuf>,
}

impl ManagedProcess {
    /// Starts `command` with stdout and stderr appended to `log_file`.
    pub fn spawn(name: &str, mut command: Command, log_file: &Path) -> Result<Self, StackError> {
        let log = File::create(log_file).map_err(|source| StackError::Io {
            context: format!("creating log file {}", log_file.display()),
            source,
        })?;
        let log_err = log.try_clone().map_err(|source| StackError::Io {
            context: format!("cloning log file {}", log_file.display()),
            source,
        })?;
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err));
        #[cfg(unix)]
        {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
            #[cfg(target_os = "linux")]
            unsafe {
                command.pre_exec(|| {
                    // SAFETY: prctl is async-signal-safe; it only sets a flag on this process.
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let (reply_tx, reply_rx) = mpsc::channel();
        spawner()
            .lock()
            .expect("spawner lock poisoned")
            .send((command, reply_tx))
            .map_err(|_| StackError::Spawn {
                process: name.to_string(),
                reason: "the spawner thread has gone".into(),
            })?;
        let child = reply_rx
            .recv()
            .map_err(|_| StackError::Spawn {
                process: name.to_string(),
                reason: "the spawner thread has gone".into(),
            })?
            .map_err(|e| StackError::Spawn {
                process: name.to_string(),
                reason: e.to_string(),
            })?;
        tracing::info!(process = name, pid = child.id(), log = %log_file.display(), "started emulator");
        Ok(Self {
            scratch: Vec::new(),
            name: name.to_string(),
            child,
        })
    }

    /// `Some(exit status)` once the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn signal_group(&self, signal: i32) {
        #[cfg(unix)]
        unsafe {
            // SAFETY: plain syscall; a negative pid addresses the process group we created.
            libc::kill(-(self.child.id() as i32), signal);
        }
    }

    /// Pauses (SIGSTOP) or resumes (SIGCONT) the whole process group.
    pub fn set_paused(&self, paused: bool) {
        self.signal_group(if paused { libc::SIGSTOP } else { libc::SIGCONT });
    }
}

impl Drop for ManagedProcess {
    fn drop(&mut self) {
        self.stop();
        for file in &self.scratch {
            let _ = std::fs::remove_file(file);
        }
    }
}

impl ManagedProcess {
    /// Removes `files` when the process has stopped (with the stack).
    pub fn remove_on_stop(&mut self, files: impl IntoIterator<Item = PathBuf>) {
        self.scratch.extend(files);
    }

    fn stop(&mut self) {
        if self.exited().is_some() {
            return;
        }
        self.signal_group(libc::SIGCONT);
        self.signal_group(libc::SIGTERM);
        for _ in 0..50 {
            if self.exited().is_some() {
                tracing::debug!(process = %self.name, "emulator stopped");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.signal_group(libc::SIGKILL);
        let _ = self.child.wait();
        tracing::debug!(process = %self.name, "emulator killed after grace period");
    }
}
