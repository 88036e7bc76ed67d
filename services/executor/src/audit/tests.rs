use std::sync::Arc;

use execbridge_api::v1;

use super::*;

fn entries(n: u64) -> Vec<Entry> {
    (1..=n)
        .map(|lsn| Entry {
            lsn,
            time: prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: lsn as i32,
            },
            payload: Payload::Update(Arc::new(v1::OrderUpdate {
                shard: "s0".into(),
                sequence: lsn,
                event: v1::OrderEventType::Accepted as i32,
                order: Some(v1::Order {
                    order_id: format!("s0-{lsn}"),
                    ..Default::default()
                }),
                ..Default::default()
            })),
        })
        .collect()
}

fn chained(n: u64) -> Vec<AuditEntry> {
    Chain {
        last_lsn: 0,
        last_hash: GENESIS.into(),
    }
    .link(&entries(n))
}

#[test]
fn an_untouched_chain_verifies() {
    let v = verify_entries(&chained(5));
    assert_eq!(
        v,
        Verdict {
            entries: 5,
            first_bad: None
        }
    );
}

#[test]
fn an_edited_entry_is_named() {
    let mut chain = chained(5);
    chain[2].payload = r#"{"status":"FILLED"}"#.into();
    let v = verify_entries(&chain);
    assert_eq!(v.first_bad.map(|b| b.0), Some(3));
}

#[test]
fn a_removed_entry_is_named() {
    let mut chain = chained(5);
    chain.remove(1);
    assert_eq!(verify_entries(&chain).first_bad.map(|b| b.0), Some(3));
}

#[test]
fn the_sqlite_sink_keeps_the_chain_and_verify_finds_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.sqlite");
    let mut sink = SqliteSink::open(&path, "execbridge_audit").unwrap();
    sink.write(&chained(4)).unwrap();
    assert_eq!(sink.last().unwrap().map(|l| l.0), Some(4));
    let target = path.to_str().unwrap();
    assert_eq!(verify(target, "execbridge_audit").unwrap().first_bad, None);
    sink.connection()
        .execute(
            "UPDATE execbridge_audit SET account = 'mallory' WHERE lsn = 2",
            [],
        )
        .unwrap();
    let v = verify(target, "execbridge_audit").unwrap();
    assert_eq!(v.first_bad.map(|b| b.0), Some(2));
}

#[test]
fn the_postgres_sink_against_the_real_server() {
    let Ok(url) = std::env::var("EXECBRIDGE_TEST_POSTGRES_URL") else {
        println!(
            "SKIPPED: EXECBRIDGE_TEST_POSTGRES_URL is not set; the PostgreSQL audit sink was not tested"
        );
        return;
    };
    let table = format!("audit_test_{}", std::process::id());
    let mut sink = PostgresSink::connect(&url, &table).unwrap();
    sink.write(&chained(3)).unwrap();
    assert_eq!(sink.last().unwrap().map(|l| l.0), Some(3));
    assert_eq!(
        verify(&url, &table).unwrap(),
        Verdict {
            entries: 3,
            first_bad: None
        }
    );
    sink.execute(&format!(
        "UPDATE {table} SET payload = '{{}}' WHERE lsn = 3"
    ))
    .unwrap();
    assert_eq!(
        verify(&url, &table).unwrap().first_bad.map(|b| b.0),
        Some(3)
    );
    sink.execute(&format!("DROP TABLE {table}")).unwrap();
}

#[test]
fn the_postgres_sink_reconnects_after_losing_its_connection() {
    let Ok(url) = std::env::var("EXECBRIDGE_TEST_POSTGRES_URL") else {
        println!(
            "SKIPPED: EXECBRIDGE_TEST_POSTGRES_URL is not set; the PostgreSQL audit sink was not tested"
        );
        return;
    };
    let table = format!("audit_reconnect_{}", std::process::id());
    let mut sink = PostgresSink::connect(&url, &table).unwrap();
    let all = chained(6);
    sink.write(&all[..3]).unwrap();
    // Another session ends the sink's server process, as a server restart would.
    let pid = sink.backend_pid().unwrap();
    let mut admin = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let row = admin
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    assert!(row.get::<_, bool>(0), "the backend was terminated");
    // The next batch goes through on a new connection, and repeating a batch that is
    // already there neither duplicates nor breaks the chain.
    sink.write(&all[3..]).unwrap();
    assert_ne!(sink.backend_pid().unwrap(), pid, "a new connection");
    sink.write(&all[3..]).unwrap();
    assert_eq!(
        verify(&url, &table).unwrap(),
        Verdict {
            entries: 6,
            first_bad: None
        }
    );
    sink.execute(&format!("DROP TABLE {table}")).unwrap();
}

#[cfg(feature = "questdb")]
#[test]
fn the_questdb_sink_sends_line_protocol_rows() {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let reader = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        let mut out = Vec::new();
        conn.read_to_end(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    });
    let dir = tempfile::tempdir().unwrap();
    let mut sink =
        QuestdbSink::connect(&addr, "execbridge_audit", &dir.path().join("state")).unwrap();
    sink.write(&chained(2)).unwrap();
    assert_eq!(sink.last().unwrap().map(|l| l.0), Some(2));
    drop(sink);
    let text = reader.join().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with(
            "execbridge_audit,kind=ORDER_ACCEPTED,account= lsn=1i,sequence=1i,order_id=\"s0-1\""
        ),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains(&format!("prev_hash=\"{}\"", chained(2)[0].hash)));
    assert!(lines[0].ends_with("1700000000000000001"), "{}", lines[0]);
}
