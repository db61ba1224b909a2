//! The one bounded poll: ask again every so often until the answer is there or the deadline has passed. Every
//! wait of the agent (an address on the VLAN, Consul's leader, the sealed join token, the swarm's ingress
//! network) goes through it, so each one ends with the same kind of message: what it waited for, how long, and
//! what it saw last.

use std::future::Future;
use std::time::{Duration, Instant};

/// How a bounded wait ended without its value.
#[derive(Debug, PartialEq, Eq)]
pub enum Waited<E> {
    /// The check failed in a way asking again cannot mend.
    Failed(E),
    /// The deadline passed; `last` is what the check saw the last time.
    TimedOut { waited: Duration, last: String },
}

/// Call `check` every `every` until it gives `Ok(Ok(value))`. `Ok(Err(seen))` means "not yet" (`seen` says what it
/// saw, for the timeout message); `Err(e)` stops the wait at once. The check runs at least once, and once more
/// after the deadline would otherwise pass between two checks.
pub async fn poll<T, E, F, Fut>(
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> Result<T, Waited<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Result<T, String>, E>>,
{
    let started = Instant::now();
    loop {
        match check().await {
            Ok(Ok(value)) => return Ok(value),
            Err(e) => return Err(Waited::Failed(e)),
            Ok(Err(last)) if started.elapsed() >= timeout => {
                return Err(Waited::TimedOut {
                    waited: started.elapsed(),
                    last,
                })
            }
            Ok(Err(_)) => tokio::time::sleep(every).await,
        }
    }
}

/// [`poll`] for checks whose errors are worth retrying (a service still starting): an error counts as "not yet",
/// and the timeout error names `what` and the last failure.
pub async fn until<T, F, Fut>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let waited = poll(timeout, every, || {
        let attempt = check();
        async move {
            Ok::<_, std::convert::Infallible>(match attempt.await {
                Ok(Some(v)) => Ok(v),
                Ok(None) => Err("not yet".to_string()),
                Err(e) => Err(format!("{e:#}")),
            })
        }
    })
    .await;
    match waited {
        Ok(v) => Ok(v),
        Err(Waited::TimedOut { waited, last }) => {
            anyhow::bail!("{what}: still waiting after {waited:.0?}: {last}")
        }
        Err(Waited::Failed(never)) => match never {},
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn gives_the_value_once_the_check_has_it() {
        let n = Cell::new(0);
        let v = poll::<_, (), _, _>(Duration::from_secs(5), MS, || {
            n.set(n.get() + 1);
            let k = n.get();
            async move {
                Ok(if k >= 3 {
                    Ok(k)
                } else {
                    Err(format!("try {k}"))
                })
            }
        })
        .await;
        assert_eq!(v, Ok(3));
    }

    #[tokio::test]
    async fn times_out_with_what_it_saw_last() {
        let n = Cell::new(0);
        let r = poll::<(), (), _, _>(Duration::from_millis(20), MS, || {
            n.set(n.get() + 1);
            let k = n.get();
            async move { Ok(Err(format!("seen {k}"))) }
        })
        .await;
        match r {
            Err(Waited::TimedOut { waited, last }) => {
                assert!(waited >= Duration::from_millis(20));
                assert_eq!(last, format!("seen {}", n.get()));
            }
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn a_hard_failure_stops_at_once() {
        let n = Cell::new(0);
        let r = poll::<(), &str, _, _>(Duration::from_secs(5), MS, || {
            n.set(n.get() + 1);
            async { Err("broken") }
        })
        .await;
        assert_eq!(r, Err(Waited::Failed("broken")));
        assert_eq!(n.get(), 1);
    }

    #[tokio::test]
    async fn until_retries_errors_and_names_what_it_waited_for() {
        let n = Cell::new(0);
        let v = until("the leader", Duration::from_secs(5), MS, || {
            n.set(n.get() + 1);
            let k = n.get();
            async move {
                match k {
                    1 => anyhow::bail!("connection refused"),
                    2 => Ok(None),
                    _ => Ok(Some(k)),
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
        let err = until::<(), _, _>("the leader", Duration::ZERO, MS, || async {
            anyhow::bail!("connection refused")
        })
        .await
        .unwrap_err()
        .to_string();
        assert!(
            err.starts_with("the leader: still waiting after")
                && err.ends_with("connection refused"),
            "{err}"
        );
    }
}
