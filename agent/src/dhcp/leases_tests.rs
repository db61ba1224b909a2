use std::io::Write as _;

use super::*;

fn lease(last: u8, expires: u64) -> Record {
    Record::Lease {
        ip: Ipv4Addr::new(192, 168, 200, last),
        client: format!("hw:02:00:00:00:00:{last:02x}"),
        hw: format!("02:00:00:00:00:{last:02x}"),
        hostname: Some(format!("node{last}")),
        expires,
    }
}

#[test]
fn committed_records_are_read_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/leases");
    let (mut log, loaded) = LeaseLog::open(&path).unwrap();
    assert!(loaded.records.is_empty());
    log.append(&lease(101, 10));
    log.append(&Record::Release {
        ip: Ipv4Addr::new(192, 168, 200, 101),
        client: "hw:02:00:00:00:00:65".into(),
        at: 5,
    });
    log.append(&Record::Decline {
        ip: Ipv4Addr::new(192, 168, 200, 102),
        until: 99,
    });
    assert!(log.dirty());
    log.commit().unwrap();
    assert!(!log.dirty());
    drop(log);
    let (_, loaded) = LeaseLog::open(&path).unwrap();
    assert_eq!(loaded.records.len(), 3);
    assert_eq!(loaded.records[0], lease(101, 10));
    assert!(!loaded.torn_tail);
}

#[test]
fn uncommitted_records_are_not_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases");
    let (mut log, _) = LeaseLog::open(&path).unwrap();
    log.append(&lease(101, 10));
    assert_eq!(std::fs::read(&path).unwrap().len(), 0);
    log.commit().unwrap();
    assert!(!std::fs::read(&path).unwrap().is_empty());
}

#[test]
fn compaction_replaces_the_log_with_the_live_state() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases");
    let (mut log, _) = LeaseLog::open(&path).unwrap();
    for i in 0..50 {
        log.append(&lease(101, i));
    }
    log.commit().unwrap();
    assert_eq!(log.lines(), 50);
    log.compact(vec![lease(101, 49)]).unwrap();
    assert_eq!(log.lines(), 2, "header + one record");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["leases"], "no temporary file left behind");
    // Appends after compaction go to the new file.
    log.append(&lease(102, 7));
    log.commit().unwrap();
    drop(log);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("{\"kind\":\"format\""), "{text}");
    let (_, loaded) = LeaseLog::open(&path).unwrap();
    assert_eq!(loaded.records, vec![lease(101, 49), lease(102, 7)]);
}

#[test]
fn torn_last_line_is_ignored_and_compaction_drops_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leases");
    let (mut log, _) = LeaseLog::open(&path).unwrap();
    log.append(&lease(101, 10));
    log.commit().unwrap();
    drop(log);
    // A crash in the middle of the next write.
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(br#"{"kind":"lease","ip":"192.168.200.1"#)
        .unwrap();
    drop(f);
    let (mut log, loaded) = LeaseLog::open(&path).unwrap();
    assert!(loaded.torn_tail);
    assert_eq!(loaded.records, vec![lease(101, 10)]);
    log.compact(loaded.records.clone()).unwrap();
    log.append(&lease(102, 20));
    log.commit().unwrap();
    drop(log);
    let (_, loaded) = LeaseLog::open(&path).unwrap();
    assert!(!loaded.torn_tail);
    assert_eq!(loaded.records, vec![lease(101, 10), lease(102, 20)]);
}

#[test]
fn garbage_lines_are_skipped_and_reported() {
    let text = b"{\"kind\":\"lease\"}\nnot json\n\n{\"kind\":\"decline\",\"ip\":\"10.0.0.1\",\"until\":5}\n";
    let loaded = read(&text[..]).unwrap();
    assert_eq!(loaded.bad_lines, vec![1, 2]);
    assert_eq!(loaded.records.len(), 1);
}
