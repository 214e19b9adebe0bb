use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

fn sample() -> (AuthEvent, EventId) {
    let ev = AuthEvent {
        alias: None,
        time: EventTime::from_millis(1_772_459_736_120),
        source: 0,
        token: Some(TokenId::new("fp:9f2c4e1a0b3d5c7e")),
        ip: Some(IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9))),
        user: Some("alice".into()),
        outcome: Outcome::Rejected(Reason::Expired),
        status: Some(401),
    };
    let id = EventId {
        edge: "gw-1".into(),
        file: 0x1234_5678_9abc_def0,
        offset: 123_456,
    };
    (ev, id)
}

#[test]
fn typical_record_is_small_and_round_trips() {
    let (ev, id) = sample();
    let mut buf = Vec::new();
    encode(&ev, "gateway", id.id_ref(), &mut buf);
    assert!((60..=80).contains(&buf.len()), "{} bytes", buf.len());
    let back = decode(&buf).unwrap();
    assert_eq!(back.event, ev);
    assert_eq!(&*back.source_name, "gateway");
    assert_eq!(back.id, id);
    assert_eq!(id.to_string(), "gw-1/123456789abcdef0/123456");
}

#[test]
fn a_vault_accessor_travels_as_the_alias() {
    let (mut ev, id) = sample();
    ev.token = Some(TokenId::new(
        "hmac-sha256:5b9141d10910a63ad8decbb52463642402be8ee760ee27ecde02011021719a90",
    ));
    ev.alias = Some(TokenId::new("ak_4ce00c08d0bb"));
    let mut buf = Vec::new();
    encode(&ev, "vault", id.id_ref(), &mut buf);
    assert_eq!(decode(&buf).unwrap().event, ev);
    for n in 0..buf.len() {
        assert!(decode(&buf[..n]).is_err(), "{n}");
    }
}

#[test]
fn every_truncation_and_extension_is_an_error() {
    let (ev, id) = sample();
    let mut buf = Vec::new();
    encode(&ev, "gateway", id.id_ref(), &mut buf);
    for n in 0..buf.len() {
        assert!(decode(&buf[..n]).is_err(), "prefix of {n} bytes decoded");
    }
    buf.push(0);
    assert_eq!(decode(&buf), Err(WireError::Trailing(1)));
    buf[0] = 2;
    assert_eq!(decode(&buf), Err(WireError::Version(2)));
    assert_eq!(decode(&[]), Err(WireError::Empty));
}

#[test]
fn keys() {
    let fp = Fingerprinter::new(b"k");
    let t = TokenId::new("ak_3f9c2b11d0aa");
    let k = token_key(&fp, &t);
    assert!(k.as_str().starts_with("fp:"));
    assert_eq!(k, token_key(&fp, &t));
    assert!(!k.as_str().contains("3f9c2b11"));
    let mut s = String::new();
    ip_key("2001:db8:1:2:3:4:5:6".parse().unwrap(), 64, &mut s);
    assert_eq!(s, "2001:db8:1:2::");
    ip_key("::ffff:10.1.2.3".parse().unwrap(), 64, &mut s);
    assert_eq!(s, "10.1.2.3");
}

#[test]
fn long_user_is_cut_at_a_char_boundary() {
    let u = "é".repeat(40); // 80 bytes
    let c = cap_user(&u);
    assert_eq!(c.len(), 64);
    let u = format!("a{}", "é".repeat(40));
    assert_eq!(cap_user(&u).len(), 63);
}

fn any_ip() -> impl Strategy<Value = Option<IpAddr>> {
    prop_oneof![
        Just(None),
        any::<u32>().prop_map(|v| Some(IpAddr::V4(Ipv4Addr::from(v)))),
        any::<u128>().prop_map(|v| Some(IpAddr::V6(Ipv6Addr::from(v)))),
    ]
}

fn any_outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Accepted),
        (0usize..5).prop_map(|i| Outcome::Rejected(Reason::ALL[i])),
    ]
}

proptest! {
    #[test]
    fn round_trip(
        time in any::<i64>(),
        source in any::<u16>(),
        token in proptest::option::of("[ -~]{0,80}|\\PC{0,30}"),
        ip in any_ip(),
        user in proptest::option::of("\\PC{0,80}"),
        outcome in any_outcome(),
        status in proptest::option::of(any::<u16>()),
        name in "[a-z0-9_.-]{1,64}",
        edge in "[a-zA-Z0-9_.-]{1,64}",
        file in any::<u64>(),
        offset in any::<u64>(),
    ) {
        let ev = AuthEvent {
            alias: None,
            time: EventTime::from_millis(time),
            source,
            token: token.map(TokenId::new),
            ip,
            user: user.map(|u| u.into_boxed_str()),
            outcome,
            status,
        };
        let id = EventId { edge: edge.into(), file, offset };
        let mut buf = vec![0xAA];
        encode(&ev, &name, id.id_ref(), &mut buf);
        let back = decode(&buf[1..]).unwrap();
        let mut want = ev.clone();
        want.user = ev.user.as_deref().map(|u| cap_user(u).into());
        prop_assert_eq!(back.event, want);
        prop_assert_eq!(&*back.source_name, name.as_str());
        prop_assert_eq!(back.id, id);
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = decode(&bytes);
        // Garbage behind a valid header too.
        let mut v = vec![VERSION, 0x1f, 1];
        v.extend_from_slice(&bytes);
        let _ = decode(&v);
    }
}
