//! A Chrome DevTools Protocol client over `--remote-debugging-pipe`: the browser reads commands on
//! its fd 3 and writes answers and events on its fd 4, each message JSON ended by a NUL byte.
//!
//! A pipe rather than `--remote-debugging-port` because the browser runs inside the cluster's network
//! namespace, where a debugging port would sit on the namespace's own loopback.

use std::fs::File;
use std::io::{BufRead, BufReader, PipeWriter, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use command_fds::{CommandFdExt, FdMapping};
use serde_json::{json, Value};

use crate::host;

/// A browser started with `--remote-debugging-pipe`, and the client end of its pipe. Dropping it
/// kills the browser's whole process group.
pub struct Browser {
    child: Child,
    to_browser: PipeWriter,
    from_browser: Receiver<Result<Value, String>>,
    next_id: u64,
    command_line: String,
    log: PathBuf,
}

impl Browser {
    /// Spawn `cmd` (which must carry `--remote-debugging-pipe`) with the pipe on its fds 3 and 4, in
    /// a process group of its own, stdout discarded and stderr kept in `log`.
    pub fn spawn(mut cmd: Command, log: &Path) -> Result<Browser> {
        let command_line = host::render(&cmd);
        let (from_us, to_browser) = std::io::pipe().context("creating the command pipe")?;
        let (from_browser, to_us) = std::io::pipe().context("creating the answer pipe")?;
        let stderr = File::create(log).with_context(|| format!("creating {}", log.display()))?;
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0)
            .fd_mappings(vec![
                FdMapping {
                    parent_fd: from_us.into(),
                    child_fd: 3,
                },
                FdMapping {
                    parent_fd: to_us.into(),
                    child_fd: 4,
                },
            ])
            .context("mapping the pipe to fds 3 and 4")?;
        let child = cmd
            .spawn()
            .with_context(|| format!("starting `{command_line}`"))?;
        // The command owns the browser's ends of the pipes: close ours so that the answer pipe ends
        // (and the reader below stops) when the browser exits.
        drop(cmd);

        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(from_browser);
            loop {
                let mut buf = Vec::new();
                let msg = match reader.read_until(0, &mut buf) {
                    Ok(0) => Err("the browser closed its end of the pipe".to_string()),
                    Ok(_) => {
                        if buf.last() == Some(&0) {
                            buf.pop();
                        }
                        serde_json::from_slice(&buf).map_err(|e| {
                            format!("the browser sent a message that is not JSON: {e}")
                        })
                    }
                    Err(e) => Err(format!("reading the browser's pipe: {e}")),
                };
                let end = msg.is_err();
                if tx.send(msg).is_err() || end {
                    break;
                }
            }
        });
        Ok(Browser {
            child,
            to_browser,
            from_browser: rx,
            next_id: 0,
            command_line,
            log: log.to_path_buf(),
        })
    }

    /// Call `method` (in `session` when given) and return its result, skipping the events that come
    /// before it. An error answer, a closed pipe or no answer within `limit` is an error naming the
    /// method.
    pub fn send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
        limit: Duration,
    ) -> Result<Value> {
        self.call(method, params, session, limit)?
            .map_err(|e| anyhow!("{method} failed: {e}"))
    }

    /// Like [`Browser::send`], but an error answer from the browser (for example "execution context
    /// was destroyed" during a navigation) is the inner `Err`, apart from a broken pipe (the outer).
    pub fn call(
        &mut self,
        method: &str,
        params: Value,
        session: Option<&str>,
        limit: Duration,
    ) -> Result<Result<Value, String>> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({ "id": id, "method": method, "params": params });
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        let mut bytes = serde_json::to_vec(&msg)?;
        bytes.push(0);
        if let Err(e) = self.to_browser.write_all(&bytes) {
            bail!("sending {method} to the browser: {e}{}", self.stderr_tail());
        }
        let deadline = Instant::now() + limit;
        loop {
            let wait = deadline.saturating_duration_since(Instant::now());
            let answer = match self.from_browser.recv_timeout(wait) {
                Ok(Ok(v)) => v,
                Ok(Err(e)) => bail!(
                    "waiting for the answer to {method}: {e}{}",
                    self.stderr_tail()
                ),
                Err(RecvTimeoutError::Timeout) => {
                    bail!("no answer to {method} within {} s", limit.as_secs())
                }
                Err(RecvTimeoutError::Disconnected) => bail!(
                    "waiting for the answer to {method}: the browser's pipe is closed{}",
                    self.stderr_tail()
                ),
            };
            if answer["id"].as_u64() != Some(id) {
                continue; // an event, or the late answer to an earlier call that timed out
            }
            return Ok(match answer.get("error") {
                Some(err) => Err(err["message"].as_str().unwrap_or("no message").to_string()),
                None => Ok(answer["result"].clone()),
            });
        }
    }

    /// Ask the browser to close, wait up to `grace` for it to exit, then kill its process group.
    pub fn close(mut self, grace: Duration) -> Result<()> {
        // The browser may exit before it answers: only its exit counts.
        self.send("Browser.close", json!({}), None, grace).ok();
        let start = Instant::now();
        while start.elapsed() < grace {
            if self
                .child
                .try_wait()
                .with_context(|| format!("waiting for `{}`", self.command_line))?
                .is_some()
            {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!(
            "`{}` was still running {} s after Browser.close; killed it",
            self.command_line,
            grace.as_secs()
        )
    }

    /// The last lines of the browser's stderr, for errors.
    fn stderr_tail(&self) -> String {
        let mut text = String::new();
        File::open(&self.log)
            .and_then(|mut f| f.read_to_string(&mut text))
            .ok();
        let text = cluster_lab_image::host_tools::tail(text.trim(), 10);
        if text.is_empty() {
            String::new()
        } else {
            format!("\n`{}` stderr:\n{text}", self.command_line)
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // The group holds the renderer and GPU processes too (and `ip netns exec`'s exec'd child).
            let group = format!("-{}", self.child.id());
            host::output(&mut host::command("kill", &["-KILL", "--", &group])).ok();
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}
