//! DNS resilience: a server whose name resolves nowhere at start becomes
//! usable once the test's own DNS server answers, and an address change
//! takes effect without a restart.

use crate::common::*;
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

type Zone = Arc<Mutex<HashMap<String, Ipv4Addr>>>;

/// A tiny authoritative DNS server on UDP: A records from `zone`, NXDOMAIN otherwise.
async fn dns_server(zone: Zone) -> u16 {
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = sock.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        loop {
            let Ok((n, peer)) = sock.recv_from(&mut buf).await else { continue };
            let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
            let mut resp = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
            resp.metadata.authoritative = true;
            resp.metadata.recursion_desired = query.metadata.recursion_desired;
            for q in &query.queries {
                resp.add_query(q.clone());
                let name = q.name().to_string().trim_end_matches('.').to_string();
                let ip = zone.lock().unwrap().get(&name).copied();
                match (ip, q.query_type()) {
                    (Some(ip), RecordType::A) => {
                        resp.add_answer(Record::from_rdata(q.name().clone(), 1, RData::A(A(ip))));
                    }
                    (Some(_), _) => {}
                    (None, _) => resp.metadata.response_code = ResponseCode::NXDomain,
                }
            }
            if let Ok(bytes) = resp.to_vec() {
                let _ = sock.send_to(&bytes, peer).await;
            }
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unresolvable_server_comes_up_when_dns_answers_and_follows_address_changes() {
    let lab = shared_lab().await;
    let zone: Zone = Arc::default();
    let dns = dns_server(zone.clone()).await;
    let cfg = format!(
        "resolvers testdns\n    nameserver ns1 127.0.0.1:{dns}\n    hold valid 200ms\n    timeout resolve 200ms\n    timeout retry 200ms\n\
         listen pg\n    bind 127.0.0.1:0\n    timeout connect 1s\n    timeout check 1s\n    option pgsql-check user postgres\n\
         \x20   server db db.pglb.test:{} check inter 200ms resolvers testdns init-addr none\n",
        lab.primary().port
    );
    let pglb = start(&cfg).await;
    let port = pglb.addr("pg").unwrap().port();
    let be = pglb.runtime().backend("pg").unwrap().clone();
    let srv = be.server("db").unwrap().clone();
    poll("reported unresolvable", Duration::from_secs(5), || async {
        (srv.check.lock().unwrap().status == pglb::state::check::CheckStatus::Unresolvable).then_some(())
    })
    .await;
    let Err(err) = connect(port, "appdb").await else { panic!("no server should be usable yet") };
    let msg = err.as_db_error().map(|e| e.message().to_string()).unwrap_or_default();
    assert!(msg.contains("1 unresolved"), "{err}");

    zone.lock().unwrap().insert("db.pglb.test".into(), Ipv4Addr::LOCALHOST);
    let c = poll("usable once DNS answers", Duration::from_secs(10), || async { connect(port, "appdb").await.ok() }).await;
    let p: i32 = c.query_one("select inet_server_port()", &[]).await.unwrap().get(0);
    assert_eq!(p, i32::from(lab.primary().port));

    zone.lock().unwrap().insert("db.pglb.test".into(), Ipv4Addr::new(127, 0, 0, 2));
    poll("new address taken", Duration::from_secs(10), || async {
        (srv.addr().map(|a| a.ip().to_string()) == Some("127.0.0.2".into())).then_some(())
    })
    .await;
}
