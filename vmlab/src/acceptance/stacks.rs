//! One-command stacks on the master: `cluster-lab stack list` shows the built-in `web-demo`, `stack deploy web-demo`
//! waits until every task runs and the stack works (the routing mesh answers, the client on a node fetches the web
//! server on the master by name over the overlay); a user's stack in /etc/cluster-lab/stacks is listed, and bad
//! input (an unknown stack, a compose file Docker refuses, an image no archive holds) is refused with a message that
//! says what is wrong and nothing deployed; `stack rm` removes it.

use std::time::Duration;

use anyhow::Result;

use super::lab::Lab;
use super::report::Check;

pub const WEB_DEMO_PORT: u16 = 8088;

/// `(exit ok, stdout + stderr)` of `cluster-lab …` as root on the master.
fn cluster_lab(lab: &Lab, args: &str) -> Result<(bool, String)> {
    let out = lab.sh(
        lab.master(),
        &format!("cluster-lab {args} 2>&1; echo \"exit=$?\""),
    )?;
    let ok = out.trim_end().ends_with("exit=0");
    Ok((ok, out.trim().to_string()))
}

pub fn web_demo_and_user_stacks(lab: &Lab) -> Check {
    let name = format!(
        "stacks: `cluster-lab stack deploy web-demo` on the master waits until every task runs; :{WEB_DEMO_PORT} \
         answers on every machine and the client on a node fetches the master's web server by name; a user's stack \
         is listed; an unknown stack, a broken compose file and a missing image archive are refused with nothing \
         deployed; `stack rm` removes web-demo"
    );
    Check::from_result(&name, inner(lab, &name))
}

fn inner(lab: &Lab, name: &str) -> Result<Check> {
    let master = lab.master();
    let mut ev = String::new();
    let mut ok = true;
    // Two user stacks that must be refused, and one that is only listed.
    lab.sh(
        master,
        "mkdir -p /etc/cluster-lab/stacks/broken /etc/cluster-lab/stacks/no-archive /etc/cluster-lab/stacks/mine && \
         printf 'services:\\n  app:\\n    image: x\\n   bad: [\\n' > /etc/cluster-lab/stacks/broken/stack.yml && \
         printf '# Needs an image nobody packed.\\nversion: \"3.8\"\\nservices:\\n  app:\\n    image: ${REGISTRY}/me/app:1\\n' \
           > /etc/cluster-lab/stacks/no-archive/stack.yml && \
         printf '# My own stack.\\nversion: \"3.8\"\\nservices:\\n  app:\\n    image: ${REGISTRY}/cluster-lab/busybox:latest\\n' \
           > /etc/cluster-lab/stacks/mine/stack.yml",
    )?;
    let (_, list) = cluster_lab(lab, "stack list")?;
    let listed = ["web-demo", "mine", "broken", "no-archive"]
        .iter()
        .all(|s| list.lines().any(|l| l.starts_with(s)));
    ok &= listed;
    ev.push_str(&format!("stack list:\n{list}\n"));

    let refused = |args: &str, want: &str| -> Result<(bool, String)> {
        let (exit_ok, out) = cluster_lab(lab, args)?;
        Ok((!exit_ok && out.contains(want), out))
    };
    for (args, want) in [
        ("stack deploy nosuch", "no stack named \"nosuch\"; there are:"),
        (
            "stack deploy broken",
            "/etc/cluster-lab/stacks/broken/stack.yml: docker's compose loader refuses it",
        ),
        (
            "stack deploy no-archive",
            "service app needs image 192.168.200.1:5000/me/app:1, which no archive in /etc/cluster-lab/stacks/no-archive/images holds",
        ),
    ] {
        let (good, out) = refused(args, want)?;
        ok &= good;
        ev.push_str(&format!(
            "{args}: {} {}\n",
            if good { "refused:" } else { "NOT refused as expected:" },
            out.replace('\n', " | ")
        ));
    }
    let stacks = lab.sh(master, "docker stack ls --format '{{.Name}}'")?;
    let none_deployed = !stacks
        .lines()
        .any(|l| ["broken", "no-archive", "nosuch"].contains(&l.trim()));
    ok &= none_deployed;
    ev.push_str(&format!(
        "deployed after the refusals: {:?}\n",
        stacks.lines().collect::<Vec<_>>()
    ));

    let start = std::time::Instant::now();
    let (deployed, out) = cluster_lab(lab, "stack deploy web-demo")?;
    ok &= deployed;
    ev.push_str(&format!(
        "stack deploy web-demo ({:.1} s): {}\n",
        start.elapsed().as_secs_f64(),
        out.replace('\n', " | ")
    ));
    let (answered, answered_ev) = super::usecase::answers_on_every_machine(
        lab,
        WEB_DEMO_PORT,
        "hello from web-demo_mesh",
        Duration::from_secs(120),
    );
    ok &= answered;
    ev.push_str(&answered_ev);
    // The last logs seen, for the evidence when the client never got the page.
    let mut last = String::new();
    let fetched = lab.poll(Duration::from_secs(90), || {
        let logs = lab.sh(
            master,
            "docker service logs --raw --tail 5 web-demo_client 2>&1; \
             docker service ps web-demo_client web-demo_web --filter desired-state=running --format '{{.Name}} on {{.Node}}'",
        )?;
        last = logs.clone();
        Ok(logs.contains("hello from web-demo_web").then_some(logs))
    });
    ok &= fetched.is_ok();
    ev.push_str(&format!(
        "the client's log: {}\n",
        match fetched {
            Ok(l) => l.trim().replace('\n', " | "),
            Err(e) => format!("{e:#}; last seen: {}", last.trim().replace('\n', " | ")),
        }
    ));
    let (removed, out) = cluster_lab(lab, "stack rm web-demo")?;
    let gone = lab.poll(Duration::from_secs(60), || {
        let s = lab.sh(master, "docker stack ls --format '{{.Name}}'")?;
        Ok((!s.lines().any(|l| l.trim() == "web-demo")).then_some(()))
    });
    ok &= removed && gone.is_ok();
    ev.push_str(&format!(
        "stack rm web-demo: {}\n",
        out.replace('\n', " | ")
    ));
    lab.sh(
        master,
        "rm -rf /etc/cluster-lab/stacks/broken /etc/cluster-lab/stacks/no-archive /etc/cluster-lab/stacks/mine",
    )?;
    Ok(Check::verdict(name, ok, ev))
}
