//! Root tier: the lab the other root tests build on cleans up after itself and after crashed runs, and leaves
//! a concurrent run of the same test alone.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use support::{cmd, run, wait_for, Lab};

fn netns_exists(name: &str) -> bool {
    run(&mut cmd("ip", ["netns", "list"]))
        .lines()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn leftovers_of_a_dead_run_are_removed_and_a_live_run_is_left_alone() {
    support::require_root();
    // A run that crashed: its process is gone, its namespace and a program inside it are still there.
    let mut gone = Command::new("true").spawn().expect("running true");
    let dead_pid = gone.id();
    gone.wait().expect("reaping true");
    let stale = format!("cl-lftovr-{dead_pid}-srv");
    // A run that is still going: its process is alive.
    let mut live_owner = Command::new("sleep")
        .arg("600")
        .spawn()
        .expect("running sleep");
    let live = format!("cl-lftovr-{}-srv", live_owner.id());
    for ns in [&stale, &live] {
        let _ = support::try_run(&mut cmd("ip", ["netns", "del", ns.as_str()]));
        run(&mut cmd("ip", ["netns", "add", ns.as_str()]));
    }
    let mut inside = Command::new("ip")
        .args(["netns", "exec", &stale, "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .expect("starting a program in the stale namespace");
    wait_for(
        Duration::from_secs(10),
        "the program to enter the stale namespace",
        || {
            (!run(&mut cmd("ip", ["netns", "pids", &stale]))
                .trim()
                .is_empty())
            .then_some(())
        },
        String::new,
    );

    let mut lab = Lab::new("lftovr");
    let stale_gone = !netns_exists(&stale);
    let live_kept = netns_exists(&live);
    let killed = wait_for(
        Duration::from_secs(10),
        "the program in the stale namespace to be killed",
        || inside.try_wait().expect("waiting").map(|_| true),
        String::new,
    );

    // This lab's own namespaces go away with it.
    let own = lab.netns("c1");
    let own_name = own.name.clone();
    assert!(netns_exists(&own_name));
    drop(lab);
    let own_gone = !netns_exists(&own_name);

    let _ = support::try_run(&mut cmd("ip", ["netns", "del", live.as_str()]));
    let _ = live_owner.kill();
    let _ = live_owner.wait();

    assert!(stale_gone, "{stale} should have been removed");
    assert!(killed, "the program in {stale} should have been killed");
    assert!(live_kept, "{live} belongs to a live run and must be kept");
    assert!(
        own_gone,
        "{own_name} should be removed when the lab is dropped"
    );
}
