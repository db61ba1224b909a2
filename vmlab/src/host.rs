//! Running host programs, on the host or inside the cluster's network namespace: one helper whose
//! errors name the command line and carry its stderr.

use std::ffi::OsStr;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A command line rendered for messages.
pub fn render(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        let a = a.to_string_lossy();
        if a.is_empty() || a.contains(char::is_whitespace) {
            s.push_str(&format!("'{a}'"));
        } else {
            s.push_str(&a);
        }
    }
    s
}

/// `program args…` on the host.
pub fn command<S: AsRef<OsStr>>(program: &str, args: &[S]) -> Command {
    let mut cmd = Command::new(program);
    cmd.args(args);
    cmd
}

/// `ip netns exec NETNS program args…`: the program sees only the cluster's virtual network.
pub fn in_netns<S: AsRef<OsStr>>(netns: &str, program: &str, args: &[S]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", netns, program]);
    cmd.args(args);
    cmd
}

/// Run to completion; a non-zero exit is an error naming the command and its stderr. Returns stdout.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = output(cmd)?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            render(cmd),
            out.status,
            failure_text(&out)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Run to completion and return the output whatever the exit status.
pub fn output(cmd: &mut Command) -> Result<Output> {
    cmd.stdin(Stdio::null());
    cmd.output()
        .with_context(|| format!("starting `{}`", render(cmd)))
}

/// Run with a time limit (the child is killed when it runs over). Returns the output whatever the
/// exit status; running over is an error.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Result<Output> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting `{}`", render(cmd)))?;
    let start = std::time::Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return child
                .wait_with_output()
                .with_context(|| format!("reading the output of `{}`", render(cmd)));
        }
        if start.elapsed() > limit {
            child.kill().ok();
            let out = child.wait_with_output().ok();
            bail!(
                "`{}` did not finish within {} s{}",
                render(cmd),
                limit.as_secs(),
                out.map(|o| format!(": {}", failure_text(&o)))
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The most useful text of a failed command: its stderr, else its stdout, trimmed to the last lines.
pub fn failure_text(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr);
    let text = if err.trim().is_empty() {
        String::from_utf8_lossy(&out.stdout).into_owned()
    } else {
        err.into_owned()
    };
    let text = cluster_lab_image::host_tools::tail(text.trim(), 15);
    if text.is_empty() {
        "(no output)".to_string()
    } else {
        text
    }
}

/// Whether a process with this pid exists (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

/// Send a signal with kill(1) (xtask has no libc binding); `Ok(false)` when the process was gone.
pub fn signal(pid: u32, sig: &str) -> Result<bool> {
    if !alive(pid) {
        return Ok(false);
    }
    let out = output(&mut command("kill", &[format!("-{sig}"), pid.to_string()]))?;
    Ok(out.status.success())
}

/// Stop a process: SIGTERM, wait up to `grace`, then SIGKILL. Returns an error only when it survives.
pub fn stop(pid: u32, grace: Duration) -> Result<()> {
    if !signal(pid, "TERM")? {
        return Ok(());
    }
    let start = std::time::Instant::now();
    while start.elapsed() < grace {
        if !alive(pid) {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    signal(pid, "KILL")?;
    std::thread::sleep(Duration::from_millis(300));
    if alive(pid) {
        bail!("process {pid} survived SIGKILL");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_quoted_arguments() {
        let cmd = in_netns("clvm-lab", "curl", &["-m", "5", "a b"]);
        assert_eq!(render(&cmd), "ip netns exec clvm-lab curl -m 5 'a b'");
    }

    #[test]
    fn failure_names_the_command_and_stderr() {
        let err = run(&mut command("sh", &["-c", "echo boom >&2; exit 3"])).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("sh -c"), "{msg}");
        assert!(msg.contains("boom"), "{msg}");
    }

    #[test]
    fn output_within_kills_a_slow_command() {
        let err = output_within(&mut command("sleep", &["5"]), Duration::from_millis(200))
            .unwrap_err()
            .to_string();
        assert!(err.contains("did not finish within"), "{err}");
    }

    #[test]
    fn own_process_is_alive() {
        assert!(alive(std::process::id()));
        assert!(!alive(u32::MAX - 1));
    }
}
