use super::*;

const NOW: u64 = 1_000_000;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 168, 200, last)
}

fn client(n: u8) -> Client {
    Client {
        key: ClientKey::Hw(vec![2, 0, 0, 0, 0, n]),
        hw: vec![2, 0, 0, 0, 0, n],
        hostname: None,
    }
}

fn pool() -> Pool {
    Pool::new(ip(101), ip(110), &[ip(1)])
}

#[test]
fn client_keys_print_and_parse() {
    let k = ClientKey::Id(vec![1, 0xaa, 0xbb]);
    assert_eq!(k.to_string(), "id:01:aa:bb");
    assert_eq!("id:01:aa:bb".parse::<ClientKey>(), Ok(k));
    assert_eq!(
        "hw:02:00".parse::<ClientKey>(),
        Ok(ClientKey::Hw(vec![2, 0]))
    );
    assert!("xx:02".parse::<ClientKey>().is_err());
    assert!("hw:zz".parse::<ClientKey>().is_err());
    assert!("hw".parse::<ClientKey>().is_err());
}

#[test]
fn allocation_is_deterministic_per_client() {
    let a = pool().choose(&client(1), None, NOW).unwrap();
    let b = pool().choose(&client(1), None, NOW).unwrap();
    assert_eq!(a, b, "same client, fresh pool, same address");
    assert!(pool().contains(a));
}

#[test]
fn client_gets_its_address_back_even_after_expiry() {
    let mut p = pool();
    let c = client(1);
    p.bind(&c, ip(107), NOW + 10);
    assert_eq!(p.choose(&c, None, NOW), Some(ip(107)));
    assert_eq!(p.choose(&c, None, NOW + 1000), Some(ip(107)));
    // Another client does not get it while it is bound...
    assert!(!p.available_for(ip(107), &client(2).key, NOW));
    // ...and prefers never-used addresses over a remembered one after expiry.
    assert_ne!(p.choose(&client(2), None, NOW + 1000), Some(ip(107)));
}

#[test]
fn requested_address_honoured_only_when_untouched() {
    let mut p = pool();
    assert_eq!(p.choose(&client(1), Some(ip(105)), NOW), Some(ip(105)));
    p.bind(&client(3), ip(105), NOW - 10); // expired, but remembered for client 3
    assert_ne!(p.choose(&client(1), Some(ip(105)), NOW), Some(ip(105)));
    // Outside the range or the server's own address: ignored.
    assert_ne!(p.choose(&client(1), Some(ip(50)), NOW), Some(ip(50)));
    assert_ne!(p.choose(&client(1), Some(ip(1)), NOW), Some(ip(1)));
}

#[test]
fn reflashed_card_gets_the_address_of_its_hostname() {
    let mut p = pool();
    let old = Client {
        key: ClientKey::Id(vec![0xff, 1, 2, 3]),
        hw: vec![2, 0, 0, 0, 0, 9],
        hostname: Some("node1".into()),
    };
    p.bind(&old, ip(104), NOW + 3600);
    // Same card, same Pi, re-flashed: new client id, same MAC, same hostname; old lease still running.
    let new = Client {
        key: ClientKey::Id(vec![0xff, 9, 9, 9]),
        ..old.clone()
    };
    assert_eq!(p.choose(&new, None, NOW), Some(ip(104)));
    // Same hostname on different hardware while the old lease runs: no takeover (could be a second machine).
    let other = Client {
        key: ClientKey::Hw(vec![2, 0, 0, 0, 0, 7]),
        hw: vec![2, 0, 0, 0, 0, 7],
        hostname: Some("node1".into()),
    };
    assert_ne!(p.choose(&other, None, NOW), Some(ip(104)));
    // Once the old lease has ended, the hostname wins.
    assert_eq!(p.choose(&other, None, NOW + 7200), Some(ip(104)));
    // Binding moves the address to the new client and forgets the old one.
    p.bind(&new, ip(104), NOW + 3600);
    assert_eq!(p.lease_of(&new.key).map(|(a, _)| a), Some(ip(104)));
    assert!(p.lease_of(&old.key).is_none());
}

#[test]
fn same_hardware_new_client_id_takes_over_only_ended_lease() {
    let mut p = pool();
    let a = Client {
        key: ClientKey::Id(vec![1]),
        hw: vec![2, 0, 0, 0, 0, 5],
        hostname: None,
    };
    p.bind(&a, ip(103), NOW + 100);
    let b = Client {
        key: ClientKey::Id(vec![2]),
        ..a.clone()
    };
    assert_ne!(p.choose(&b, None, NOW), Some(ip(103)));
    assert_eq!(p.choose(&b, None, NOW + 200), Some(ip(103)));
}

#[test]
fn probing_wraps_and_exhausts() {
    let mut p = pool();
    assert_eq!(p.capacity(), 10);
    let mut seen = std::collections::HashSet::new();
    for n in 0..10 {
        let c = client(n);
        let a = p.choose(&c, None, NOW).expect("pool has room");
        assert!(seen.insert(a), "{a} handed out twice");
        p.offer(&c, a, NOW + 30);
    }
    assert_eq!(
        seen.len(),
        10,
        "every address of the range used, wrapping past the end"
    );
    assert_eq!(p.choose(&client(99), None, NOW), None, "exhausted");
    // Offers lapse: the address offered longest ago is reused.
    assert!(p.choose(&client(99), None, NOW + 31).is_some());
}

#[test]
fn exhausted_pool_reclaims_the_oldest_ended_lease() {
    let mut p = Pool::new(ip(101), ip(103), &[]);
    p.bind(&client(1), ip(101), NOW - 50);
    p.bind(&client(2), ip(102), NOW - 500);
    p.bind(&client(3), ip(103), NOW + 500);
    assert_eq!(p.choose(&client(9), None, NOW), Some(ip(102)));
}

#[test]
fn quarantine_expires() {
    let mut p = Pool::new(ip(101), ip(101), &[]);
    let c = client(1);
    p.bind(&c, ip(101), NOW + 100);
    p.quarantine(ip(101), NOW + 600);
    assert!(
        p.lease_of(&c.key).is_none(),
        "declining client forgets the address"
    );
    assert_eq!(p.choose(&c, None, NOW), None);
    assert!(!p.available_for(ip(101), &c.key, NOW + 599));
    assert_eq!(p.choose(&c, None, NOW + 600), Some(ip(101)));
    assert_eq!(p.quarantined(NOW).count(), 1);
    assert_eq!(p.quarantined(NOW + 600).count(), 0);
}

#[test]
fn release_keeps_the_address_remembered() {
    let mut p = pool();
    let c = client(4);
    p.bind(&c, ip(108), NOW + 3600);
    assert!(
        !p.release(&client(5).key, ip(108), NOW),
        "only the holder releases"
    );
    assert!(p.release(&c.key, ip(108), NOW));
    assert_eq!(p.active(NOW), 0);
    assert_eq!(p.choose(&c, None, NOW + 10), Some(ip(108)));
}

#[test]
fn rebinding_elsewhere_drops_the_old_address() {
    let mut p = pool();
    let c = client(1);
    p.bind(&c, ip(101), NOW + 10);
    p.bind(&c, ip(102), NOW + 10);
    assert!(p.lease_at(ip(101)).is_none());
    assert_eq!(p.leases().count(), 1);
}

#[test]
fn degenerate_ranges_do_not_panic() {
    let p = Pool::new(ip(1), ip(1), &[ip(1), ip(1), ip(1)]);
    assert_eq!(p.capacity(), 0);
    assert_eq!(p.choose(&client(1), None, NOW), None);
    let p = Pool::new(
        Ipv4Addr::new(0, 0, 0, 0),
        Ipv4Addr::new(255, 255, 255, 255),
        &[],
    );
    assert!(p.choose(&client(1), None, NOW).is_some());
    // Reversed bounds are the same range.
    assert_eq!(Pool::new(ip(110), ip(101), &[]).capacity(), 10);
}

#[test]
fn a_flood_of_new_clients_cannot_grow_memory() {
    let mut p = pool();
    for n in 0..5000u32 {
        let b = n.to_be_bytes();
        let c = Client {
            key: ClientKey::Hw(vec![2, 0, b[0], b[1], b[2], b[3]]),
            hw: vec![2, 0, b[0], b[1], b[2], b[3]],
            hostname: Some(format!("h{n}")),
        };
        // Each offer lapses before the next client comes.
        let now = NOW + u64::from(n) * 100;
        if let Some(a) = p.choose(&c, None, now) {
            p.offer(&c, a, now + 30);
        }
    }
    for size in p.table_sizes() {
        assert!(size <= 10, "{:?}", p.table_sizes());
    }
}

#[test]
fn clients_without_hardware_address_are_told_apart_by_client_id() {
    let mut p = pool();
    let a = Client {
        key: ClientKey::Id(vec![1]),
        hw: vec![],
        hostname: Some("same".into()),
    };
    p.bind(&a, ip(104), NOW + 100);
    let b = Client {
        key: ClientKey::Id(vec![2]),
        ..a.clone()
    };
    assert_ne!(p.choose(&b, None, NOW), Some(ip(104)), "active lease kept");
    let c = Client {
        key: ClientKey::Id(vec![3]),
        hw: vec![],
        hostname: None,
    };
    assert_ne!(
        p.choose(&c, None, NOW + 200),
        Some(ip(104)),
        "no takeover through the empty hardware address"
    );
}
