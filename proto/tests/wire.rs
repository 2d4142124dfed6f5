//! The generated messages put etcd 3.4's bytes on the wire: requests checked against encodings
//! worked out by hand from the protobuf encoding rules, responses against the bytes etcd 3.4.23
//! itself produced (captured with Debian's `etcdctl -w protobuf` from a one-member etcd 3.4.23,
//! after `put foo bar`, a txn, a delete and a watch; the capture is described at each test).

use detcd_proto::etcdserverpb as pb;
use detcd_proto::mvccpb;
use prost::Message;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Decode `bytes` as `M`, check it equals `want`, and that encoding it gives `bytes` back.
fn round_trip<M: Message + Default + PartialEq + std::fmt::Debug>(bytes: &[u8], want: &M) {
    let got = M::decode(bytes).expect("decodes");
    assert_eq!(&got, want);
    assert_eq!(got.encode_to_vec(), bytes, "re-encoding {got:?}");
}

fn kv(key: &[u8], create: i64, modr: i64, version: i64, value: &[u8]) -> mvccpb::KeyValue {
    mvccpb::KeyValue {
        key: key.to_vec(),
        create_revision: create,
        mod_revision: modr,
        version,
        value: value.to_vec(),
        lease: 0,
    }
}

/// The header every response of the captured member carried, at `revision`.
fn header(revision: i64) -> Option<pb::ResponseHeader> {
    Some(pb::ResponseHeader {
        cluster_id: 15875391935852295136,
        member_id: 7383792418829112008,
        revision,
        raft_term: 2,
    })
}

/// `ResponseHeader` as etcd encoded it (cluster_id, member_id, revision 2, raft_term 2).
const HEADER_REV2: &str = "0a1908e0e7cef4aa9baea8dc0110c8a5a0dcd782a0bc6618022002";

#[test]
fn put_request_encodes_as_the_protobuf_rules_say() {
    // key (1, bytes) "foo", value (2) "bar", lease (3, varint) 7587 = 0x1da3 -> a3 3b,
    // prev_kv (4, bool) true. Tags are field << 3 | wire type: 0a, 12, 18, 20.
    let bytes = hex("0a03666f6f120362617218a33b2001");
    let req = pb::PutRequest {
        key: b"foo".to_vec(),
        value: b"bar".to_vec(),
        lease: 7587,
        prev_kv: true,
        ignore_value: false,
        ignore_lease: false,
    };
    round_trip(&bytes, &req);
    // ignore_value (5) and ignore_lease (6) alone.
    let flags = pb::PutRequest {
        key: b"k".to_vec(),
        ignore_value: true,
        ignore_lease: true,
        ..Default::default()
    };
    round_trip(&hex("0a016b28013001"), &flags);
}

#[test]
fn range_request_negative_revision_and_enums_encode_as_the_rules_say() {
    // key "a", range_end "\0", limit 10, revision -1 (ten bytes: int64 is not zigzag),
    // sort_order DESCEND (2), sort_target MOD (3), serializable, max_create_revision (13) 300.
    let bytes = hex("0a0161120100180a20ffffffffffffffffff0128023003380168ac02");
    let req = pb::RangeRequest {
        key: b"a".to_vec(),
        range_end: vec![0],
        limit: 10,
        revision: -1,
        sort_order: pb::range_request::SortOrder::Descend as i32,
        sort_target: pb::range_request::SortTarget::Mod as i32,
        serializable: true,
        max_create_revision: 300,
        ..Default::default()
    };
    round_trip(&bytes, &req);
}

#[test]
fn compare_range_end_is_field_64_and_the_target_a_oneof() {
    // result GREATER (1), target MOD (2), key "a", mod_revision (6, in the oneof) 5 and
    // range_end (64: tag 64 << 3 | 2 = 514 = 82 04) "b", written in field-number order as Go
    // does. Decoding does not depend on the order; check the fields, then what prost writes.
    let bytes = hex("080110021a0161300582040162");
    let want = pb::Compare {
        result: pb::compare::CompareResult::Greater as i32,
        target: pb::compare::CompareTarget::Mod as i32,
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        target_union: Some(pb::compare::TargetUnion::ModRevision(5)),
    };
    assert_eq!(pb::Compare::decode(&bytes[..]).expect("decodes"), want);
    let again = want.encode_to_vec();
    assert_eq!(again.len(), bytes.len());
    assert_eq!(pb::Compare::decode(&again[..]).expect("decodes"), want);
}

#[test]
fn etcd_put_and_range_responses_decode_and_encode_byte_for_byte() {
    // `etcdctl put foo bar -w protobuf` on a fresh member: the header alone.
    round_trip(
        &hex(HEADER_REV2),
        &pb::PutResponse {
            header: header(2),
            prev_kv: None,
        },
    );
    // `etcdctl get foo -w protobuf` then: one kv (create 2, mod 2, version 1) and count 1.
    let bytes = hex(&format!(
        "{HEADER_REV2}12100a03666f6f1002180220012a03626172{}",
        "2001"
    ));
    round_trip(
        &bytes,
        &pb::RangeResponse {
            header: header(2),
            kvs: vec![kv(b"foo", 2, 2, 1, b"bar")],
            more: false,
            count: 1,
        },
    );
}

#[test]
fn etcd_txn_response_with_nested_ops_decodes_and_encodes_byte_for_byte() {
    // `etcdctl txn -w protobuf`: if mod("foo") = 2 then put foo baz --prev-kv; get foo.
    let bytes = hex(concat!(
        "0a1908e0e7cef4aa9baea8dc0110c8a5a0dcd782a0bc6618032002",
        "1001",
        "1a1812160a02180312100a03666f6f1002180220012a03626172",
        "1a1a0a180a02180312100a03666f6f1002180320022a0362617a2001",
    ));
    let sub_header = Some(pb::ResponseHeader {
        revision: 3,
        ..Default::default()
    });
    let want = pb::TxnResponse {
        header: header(3),
        succeeded: true,
        responses: vec![
            pb::ResponseOp {
                response: Some(pb::response_op::Response::ResponsePut(pb::PutResponse {
                    header: sub_header,
                    prev_kv: Some(kv(b"foo", 2, 2, 1, b"bar")),
                })),
            },
            pb::ResponseOp {
                response: Some(pb::response_op::Response::ResponseRange(
                    pb::RangeResponse {
                        header: sub_header,
                        kvs: vec![kv(b"foo", 2, 3, 2, b"baz")],
                        more: false,
                        count: 1,
                    },
                )),
            },
        ],
    };
    round_trip(&bytes, &want);
}

#[test]
fn etcd_delete_and_watch_responses_decode_and_encode_byte_for_byte() {
    // `etcdctl del foo --prev-kv -w protobuf` after the txn: deleted 1 and the old kv.
    let bytes = hex(concat!(
        "0a1908e0e7cef4aa9baea8dc0110c8a5a0dcd782a0bc6618042002",
        "1001",
        "1a100a03666f6f1002180320022a0362617a",
    ));
    round_trip(
        &bytes,
        &pb::DeleteRangeResponse {
            header: header(4),
            deleted: 1,
            prev_kvs: vec![kv(b"foo", 2, 3, 2, b"baz")],
        },
    );
    // `etcdctl watch foo --rev=2 --prev-kv -w protobuf`: the three events in one response
    // (events are field 11), the delete carrying only the key and its mod revision.
    let bytes = hex(concat!(
        "0a1908e0e7cef4aa9baea8dc0110c8a5a0dcd782a0bc6618042002",
        "5a1212100a03666f6f1002180220012a03626172",
        "5a2412100a03666f6f1002180320022a0362617a1a100a03666f6f1002180220012a03626172",
        "5a1d080112070a03666f6f18041a100a03666f6f1002180320022a0362617a",
    ));
    let put = |kv, prev| mvccpb::Event {
        r#type: mvccpb::event::EventType::Put as i32,
        kv: Some(kv),
        prev_kv: prev,
    };
    let want = pb::WatchResponse {
        header: header(4),
        events: vec![
            put(kv(b"foo", 2, 2, 1, b"bar"), None),
            put(
                kv(b"foo", 2, 3, 2, b"baz"),
                Some(kv(b"foo", 2, 2, 1, b"bar")),
            ),
            mvccpb::Event {
                r#type: mvccpb::event::EventType::Delete as i32,
                kv: Some(kv(b"foo", 0, 4, 0, b"")),
                prev_kv: Some(kv(b"foo", 2, 3, 2, b"baz")),
            },
        ],
        ..Default::default()
    };
    round_trip(&bytes, &want);
}

#[test]
fn watch_request_oneof_and_packed_filters_encode_as_the_rules_say() {
    // create_request (1, 12 bytes) { key "k", start_revision (3) 7, filters (5, packed:
    // 2a, length 1) [NODELETE = 1], prev_kv (6), watch_id (7) 3 }.
    let bytes = hex("0a0c0a016b18072a010130013803");
    let want = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
            pb::WatchCreateRequest {
                key: b"k".to_vec(),
                start_revision: 7,
                filters: vec![pb::watch_create_request::FilterType::Nodelete as i32],
                prev_kv: true,
                watch_id: 3,
                ..Default::default()
            },
        )),
    };
    round_trip(&bytes, &want);
    // A cancel (2) of watch 3 and a progress request (3, empty).
    let cancel = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::CancelRequest(
            pb::WatchCancelRequest { watch_id: 3 },
        )),
    };
    round_trip(&hex("12020803"), &cancel);
    let progress = pb::WatchRequest {
        request_union: Some(pb::watch_request::RequestUnion::ProgressRequest(
            pb::WatchProgressRequest {},
        )),
    };
    round_trip(&hex("1a00"), &progress);
}

#[test]
fn services_carry_etcds_names() {
    // A method's path is /<package>.<service>/<method>: these names are on the wire.
    assert_eq!(pb::kv_server::SERVICE_NAME, "etcdserverpb.KV");
    assert_eq!(pb::watch_server::SERVICE_NAME, "etcdserverpb.Watch");
    assert_eq!(pb::lease_server::SERVICE_NAME, "etcdserverpb.Lease");
    assert_eq!(pb::cluster_server::SERVICE_NAME, "etcdserverpb.Cluster");
    assert_eq!(
        pb::maintenance_server::SERVICE_NAME,
        "etcdserverpb.Maintenance"
    );
    assert_eq!(pb::auth_server::SERVICE_NAME, "etcdserverpb.Auth");
}
