//! Running external programs (systemctl, networkctl, arping): every failure names the command and its stderr.

use std::ffi::OsStr;
use std::process::Output;

/// A command that failed to start or exited unsuccessfully.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("running {command}: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("{command} failed ({status}): {stderr}")]
    Failed {
        command: String,
        status: std::process::ExitStatus,
        stderr: String,
    },
}

/// The command line as a person would type it.
pub fn display<I, S>(program: &str, args: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut line = program.to_string();
    for a in args {
        line.push(' ');
        line.push_str(&a.as_ref().to_string_lossy());
    }
    line
}

/// Run `program args…` and return its output, whatever the exit status.
pub async fn output<I, S>(program: &str, args: I) -> Result<(String, Output), CommandError>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    output_with_env(program, args, &[]).await
}

/// [`output`], with `env` added to the program's environment.
pub async fn output_with_env<I, S>(
    program: &str,
    args: I,
    env: &[(&str, &str)],
) -> Result<(String, Output), CommandError>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    let mut command = display(program, args.clone());
    for (k, v) in env.iter().rev() {
        command = format!("{k}={v} {command}");
    }
    let out = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|source| CommandError::Spawn {
            command: command.clone(),
            source,
        })?;
    Ok((command, out))
}

/// Run `program args…`; a non-zero exit is an error carrying stderr. Returns stdout.
pub async fn run<I, S>(program: &str, args: I) -> Result<String, CommandError>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    run_with_env(program, args, &[]).await
}

/// [`run`], with `env` added to the program's environment.
pub async fn run_with_env<I, S>(
    program: &str,
    args: I,
    env: &[(&str, &str)],
) -> Result<String, CommandError>
where
    I: IntoIterator<Item = S> + Clone,
    S: AsRef<OsStr>,
{
    let (command, out) = output_with_env(program, args, env).await?;
    if !out.status.success() {
        return Err(CommandError::Failed {
            command,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failure_carries_command_and_stderr() {
        let err = run("sh", ["-c", "echo oops >&2; exit 3"])
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "sh -c echo oops >&2; exit 3 failed (exit status: 3): oops"
        );
        let err = run("/nonexistent/tool", ["x"]).await.unwrap_err();
        assert!(
            err.to_string().starts_with("running /nonexistent/tool x: "),
            "{err}"
        );
        assert_eq!(run("echo", ["hi"]).await.unwrap(), "hi\n");
    }
}
