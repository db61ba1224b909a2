//! Root tier: `cluster-lab probe` against real DHCP servers on a lab segment — dnsmasq and kea-dhcp4 as foreign
//! servers, `cluster-lab dhcpd` as this cluster's master or another cluster's — and against silence.

mod support;

use std::net::Ipv4Addr;
use std::time::Duration;

use support::servers::{self, probe, Dhcpd, MASTER};
use support::{Lab, Netns};

const DNSMASQ_RANGE: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(192, 168, 200, 51),
    Ipv4Addr::new(192, 168, 200, 60),
);
const KEA_RANGE: (Ipv4Addr, Ipv4Addr) = (
    Ipv4Addr::new(192, 168, 200, 61),
    Ipv4Addr::new(192, 168, 200, 70),
);

/// A segment with a probing client `c1` (eth0) and server namespaces plugged in as `lab0` with the given
/// addresses.
fn segment(lab: &mut Lab, servers: &[(&str, &str)]) -> (Netns, Vec<Netns>) {
    let sw = lab.switch("sw");
    let client = lab.netns("c1");
    lab.plug(&sw, "p-c1", &client, "eth0");
    let mut nss = Vec::new();
    for (role, cidr) in servers {
        let ns = lab.netns(role);
        lab.plug(&sw, &format!("p-{role}"), &ns, "lab0");
        ns.add_addr("lab0", cidr);
        nss.push(ns);
    }
    (client, nss)
}

fn assert_foreign(run: &servers::ProbeRun, server_id: &str, range: (Ipv4Addr, Ipv4Addr)) {
    let s = run
        .server(server_id)
        .unwrap_or_else(|| panic!("no offer from {server_id} reported\n{run}"));
    assert_eq!(s["kind"], "foreign", "{server_id}\n{run}");
    assert_eq!(s["cluster"], serde_json::Value::Null, "{server_id}\n{run}");
    let offered: Ipv4Addr = s["offered"].as_str().unwrap().parse().unwrap();
    assert!(
        (range.0..=range.1).contains(&offered),
        "{server_id} offered {offered}, outside its range {range:?}\n{run}"
    );
}

#[test]
fn probe_reports_dnsmasq_and_kea_as_foreign_servers() {
    let mut lab = Lab::new("prbfor");
    let (client, srv) = segment(
        &mut lab,
        &[("dns", "192.168.200.2/24"), ("kea", "192.168.200.3/24")],
    );
    let dnsmasq = servers::dnsmasq(&lab, &srv[0], "lab0", DNSMASQ_RANGE.0, DNSMASQ_RANGE.1);
    let kea = servers::kea(&lab, &srv[1], "lab0", KEA_RANGE.0, KEA_RANGE.1);

    let run = probe(&client, "eth0", "lab", 4);
    let ctx = || format!("{run}\n{}\n{}", dnsmasq.report(), kea.report());
    assert_eq!(
        run.code,
        Some(1),
        "no master of this cluster: exit 1\n{}",
        ctx()
    );
    let json = run.json();
    assert_eq!(json["master_found"], false, "{}", ctx());
    assert_eq!(
        json["servers"].as_array().map(Vec::len),
        Some(2),
        "{}",
        ctx()
    );
    assert_foreign(&run, "192.168.200.2", DNSMASQ_RANGE);
    assert_foreign(&run, "192.168.200.3", KEA_RANGE);

    // The probe only DISCOVERs: neither server has handed out a lease.
    let dnsmasq_leases =
        std::fs::read_to_string(lab.dir().join("dnsmasq/leases")).unwrap_or_default();
    assert_eq!(
        dnsmasq_leases.trim(),
        "",
        "dnsmasq recorded a lease\n{}",
        ctx()
    );
    assert!(
        dnsmasq.log().contains("DHCPDISCOVER") && !dnsmasq.log().contains("DHCPREQUEST"),
        "dnsmasq should have seen DISCOVERs only\n{}",
        ctx()
    );
    let kea_leases = std::fs::read_to_string(lab.dir().join("kea/leases4.csv")).unwrap_or_default();
    assert!(
        kea_leases.lines().skip(1).all(|l| l.trim().is_empty()),
        "kea recorded a lease:\n{kea_leases}\n{}",
        ctx()
    );
    assert!(dnsmasq.is_running() && kea.is_running(), "{}", ctx());
}

#[test]
fn probe_finds_this_clusters_master_among_foreign_servers() {
    let mut lab = Lab::new("prbmst");
    let (client, srv) = segment(
        &mut lab,
        &[
            ("srv", MASTER),
            ("dns", "192.168.200.2/24"),
            ("kea", "192.168.200.3/24"),
        ],
    );
    let dhcpd = Dhcpd::start(&lab, "dhcpd", &srv[0], "lab0", "lab");
    let dnsmasq = servers::dnsmasq(&lab, &srv[1], "lab0", DNSMASQ_RANGE.0, DNSMASQ_RANGE.1);
    let kea = servers::kea(&lab, &srv[2], "lab0", KEA_RANGE.0, KEA_RANGE.1);

    let run = probe(&client, "eth0", "lab", 4);
    let ctx = || {
        format!(
            "{run}\n{}\n{}\n{}",
            dhcpd.report(),
            dnsmasq.report(),
            kea.report()
        )
    };
    assert_eq!(
        run.code,
        Some(0),
        "a master of this cluster answered: exit 0\n{}",
        ctx()
    );
    assert_eq!(run.json()["master_found"], true, "{}", ctx());
    assert_eq!(
        run.json()["servers"].as_array().map(Vec::len),
        Some(3),
        "{}",
        ctx()
    );
    let master = run
        .server("192.168.200.1")
        .unwrap_or_else(|| panic!("cluster-lab dhcpd not reported\n{}", ctx()));
    assert_eq!(master["kind"], "this-cluster", "{}", ctx());
    assert_eq!(master["cluster"], "lab", "{}", ctx());
    let offered: Ipv4Addr = master["offered"].as_str().unwrap().parse().unwrap();
    assert!(
        (servers::RANGE.0..=servers::RANGE.1).contains(&offered),
        "{}",
        ctx()
    );
    assert_foreign(&run, "192.168.200.2", DNSMASQ_RANGE);
    assert_foreign(&run, "192.168.200.3", KEA_RANGE);

    // Human output, one line per server; the cluster name comes from a cluster-lab.toml this time (the
    // master's own).
    let mut cmd = client.command(
        support::cluster_lab_bin(),
        [
            "probe",
            "--interface",
            "eth0",
            "--config",
            dhcpd.config.to_str().unwrap(),
            "--timeout",
            "3",
        ],
    );
    let out = cmd.output().expect("running cluster-lab probe");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}\n{}", ctx());
    assert_eq!(text.lines().count(), 3, "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("192.168.200.1 offered ")
            && l.ends_with("cluster-lab master of this cluster (lab)")),
        "{text}"
    );

    // No lease was taken from the master either.
    let mac = client.mac("eth0");
    assert_eq!(dhcpd.leases().address_of(&mac), None, "{}", ctx());
}

/// A DHCP server that copies the master's marker (vendor class `cluster-lab`, the cluster name in option 43) but
/// cannot make its tag: to a probe that knows the cluster secret it is an impostor, not the master; the real master,
/// which signs its marker with the secret, is found beside it.
#[test]
fn a_server_copying_the_marker_is_not_the_master() {
    const SECRET: &str = "root-probe-secret-0123456789abcdef";
    let mut lab = Lab::new("prbfake");
    let (client, srv) = segment(&mut lab, &[("srv", MASTER), ("fake", "192.168.200.2/24")]);
    // "lab" in option 43: sub-option 1, length 3.
    let copycat = servers::dnsmasq_with(
        &lab,
        &srv[1],
        "lab0",
        DNSMASQ_RANGE.0,
        DNSMASQ_RANGE.1,
        &[
            "--dhcp-option-force=60,cluster-lab",
            "--dhcp-option-force=43,01:03:6c:61:62",
        ],
    );
    // The probe reads the cluster name and the secret from a cluster-lab.toml, as first boot's does.
    let node_config = lab.dir().join("node.toml");
    std::fs::write(
        &node_config,
        format!("[cluster]\nname = \"lab\"\nsecret = \"{SECRET}\"\n"),
    )
    .unwrap();
    let probe_with_secret = || {
        let out = client
            .command(
                support::cluster_lab_bin(),
                [
                    "probe",
                    "--interface",
                    "eth0",
                    "--config",
                    node_config.to_str().unwrap(),
                    "--timeout",
                    "4",
                    "--json",
                ],
            )
            .output()
            .expect("running cluster-lab probe");
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), json)
    };
    let server = |json: &serde_json::Value, id: &str| {
        json["servers"]
            .as_array()
            .and_then(|a| a.iter().find(|s| s["server_id"] == id).cloned())
            .unwrap_or_else(|| panic!("{id} not reported: {json}"))
    };

    // The copycat alone: its name matches, its marker does not verify. Without the secret it would pass.
    let (code, json) = probe_with_secret();
    assert_eq!(code, Some(1), "{json}\n{}", copycat.report());
    assert_eq!(server(&json, "192.168.200.2")["kind"], "impostor", "{json}");
    let unchecked = probe(&client, "eth0", "lab", 4);
    assert_eq!(
        unchecked.code,
        Some(0),
        "a name alone is all a probe without the secret can check: {unchecked}"
    );

    // The real master, holding the secret, beside it: found, and the copycat still an impostor.
    let dhcpd = Dhcpd::start_with_secret(&lab, "dhcpd", &srv[0], "lab0", "lab", Some(SECRET));
    let (code, json) = probe_with_secret();
    assert_eq!(code, Some(0), "{json}\n{}", dhcpd.report());
    assert_eq!(
        server(&json, "192.168.200.1")["kind"],
        "this-cluster",
        "{json}"
    );
    assert_eq!(server(&json, "192.168.200.2")["kind"], "impostor", "{json}");
}

#[test]
fn probe_reports_a_master_of_another_cluster_but_exits_1() {
    let mut lab = Lab::new("prboth");
    let (client, srv) = segment(&mut lab, &[("srv", MASTER)]);
    let dhcpd = Dhcpd::start(&lab, "dhcpd", &srv[0], "lab0", "other");

    let run = probe(&client, "eth0", "lab", 4);
    assert_eq!(
        run.code,
        Some(1),
        "another cluster's master: exit 1\n{run}\n{}",
        dhcpd.report()
    );
    let s = run.server("192.168.200.1").unwrap_or_else(|| {
        panic!(
            "the other cluster's master not reported\n{run}\n{}",
            dhcpd.report()
        )
    });
    assert_eq!(s["kind"], "other-cluster", "{run}");
    assert_eq!(s["cluster"], "other", "{run}");
    assert_eq!(run.json()["master_found"], false, "{run}");

    // The same server is this cluster's master for a node of cluster "other".
    let run = probe(&client, "eth0", "other", 4);
    assert_eq!(run.code, Some(0), "{run}\n{}", dhcpd.report());
}

#[test]
fn probe_with_no_server_exits_1_within_the_timeout() {
    let mut lab = Lab::new("prbnone");
    let (client, _) = segment(&mut lab, &[("quiet", "192.168.200.9/24")]);

    let timeout = 2;
    let run = probe(&client, "eth0", "lab", timeout);
    assert_eq!(run.code, Some(1), "{run}");
    assert_eq!(run.json()["servers"], serde_json::json!([]), "{run}");
    // It waits the whole timeout (a server may answer late) and not much longer. The slack covers process
    // start-up on a loaded machine.
    let slack = Duration::from_secs(2);
    assert!(
        run.elapsed >= Duration::from_secs(timeout)
            && run.elapsed <= Duration::from_secs(timeout) + slack,
        "probe took {:.2} s with --timeout {timeout}\n{run}",
        run.elapsed.as_secs_f64()
    );
}

#[test]
fn probe_of_a_missing_interface_is_an_error() {
    let mut lab = Lab::new("prberr");
    let client = lab.netns("c1");
    let run = probe(&client, "nosuch0", "lab", 1);
    assert_eq!(run.code, Some(2), "{run}");
    assert!(
        run.stderr.contains("nosuch0"),
        "the error names the interface\n{run}"
    );
}

#[test]
fn probe_hears_a_server_that_starts_late() {
    let mut lab = Lab::new("prblate");
    let (client, srv) = segment(&mut lab, &[("dns", "192.168.200.2/24")]);
    // The probe repeats its DISCOVER every second, so a server that comes up mid-probe is still heard.
    let mut cmd = client.command(
        support::cluster_lab_bin(),
        [
            "probe",
            "--interface",
            "eth0",
            "--cluster",
            "lab",
            "--timeout",
            "8",
            "--json",
        ],
    );
    let command = support::describe(&cmd);
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("`{command}`: cannot start: {e}"));
    std::thread::sleep(Duration::from_secs(2));
    let dnsmasq = servers::dnsmasq(&lab, &srv[0], "lab0", DNSMASQ_RANGE.0, DNSMASQ_RANGE.1);
    let out = child.wait_with_output().expect("waiting for the probe");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let ctx = format!(
        "`{command}` exited {:?}\nstdout:\n{stdout}\nstderr:\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr),
        dnsmasq.report()
    );
    assert_eq!(out.status.code(), Some(1), "{ctx}");
    let json: serde_json::Value = serde_json::from_str(&stdout).expect(&ctx);
    assert_eq!(json["servers"][0]["server_id"], "192.168.200.2", "{ctx}");
    assert_eq!(json["servers"][0]["kind"], "foreign", "{ctx}");
}

#[test]
fn probe_works_next_to_a_dhcp_client_on_the_same_interface() {
    let mut lab = Lab::new("prbcli");
    let (client, srv) = segment(&mut lab, &[("dns", "192.168.200.2/24")]);
    let dnsmasq = servers::dnsmasq(&lab, &srv[0], "lab0", DNSMASQ_RANGE.0, DNSMASQ_RANGE.1);
    // dhclient holds UDP port 68 on the interface, as a node's own DHCP client would.
    let dhc = support::clients::dhclient::start(&lab, "dhclient", &client, "eth0");
    dhc.wait_event(support::LEASE_TIMEOUT, 0, &["BOUND"], || dnsmasq.report());
    assert!(client.udp_listening(68), "{}", dhc.report());

    let run = probe(&client, "eth0", "lab", 3);
    assert_eq!(run.code, Some(1), "{run}\n{}", dnsmasq.report());
    assert_foreign(&run, "192.168.200.2", DNSMASQ_RANGE);
}
