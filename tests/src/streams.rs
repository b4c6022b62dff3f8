//! The contract of [`wsu::cluster::Streams`], as one test body every engine runs (the memory
//! engine in tests/tests/cluster_memory.rs, Redis and NATS in their crates).

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use wsu::cluster::{EngineSink, SinkEvent, StreamLimits, StreamPos};

use crate::cluster::EngineFactory;

async fn entries(
    rx: &mut wsu::cluster::EngineReceiver,
    n: usize,
) -> Vec<(String, StreamPos, Bytes)> {
    let mut out = Vec::new();
    while out.len() < n {
        let ev = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("timed out waiting for stream entries")
            .expect("sink open");
        if let SinkEvent::Entry {
            stream,
            pos,
            payload,
        } = ev
        {
            out.push((stream.to_string(), pos, payload));
        }
    }
    out
}

/// Appends from two engines, delivery to both, reads, trimming, and the session store.
pub async fn streams_contract(factory: EngineFactory, prefix: &str) {
    let a = factory().await;
    let b = factory().await;
    let (sa, mut ra) = EngineSink::channel(1024);
    let (sb, mut rb) = EngineSink::channel(1024);
    let (xa, xb) = (a.streams().expect("streams"), b.streams().expect("streams"));
    xa.start(prefix, sa).await.expect("start a");
    xb.start(prefix, sb).await.expect("start b");
    let limits = StreamLimits::new(100, Duration::from_secs(60));

    // Appends from both nodes to two streams (names with any characters).
    let mut pos = Vec::new();
    for i in 0..3 {
        pos.push(
            xa.append("/x", Bytes::from(format!("x{i}")), limits)
                .await
                .expect("append"),
        );
    }
    let y0 = xb
        .append("/chat room:ü", Bytes::from_static(b"y0"), limits)
        .await
        .expect("append");
    let x3 = xb
        .append("/x", Bytes::from_static(b"x3\n{}"), limits)
        .await
        .expect("append");
    pos.push(x3);
    assert_eq!(pos[0].prev, 0, "first of its epoch: {pos:?}");
    for w in pos.windows(2) {
        assert!(w[1].offset > w[0].offset, "{pos:?}");
        assert_eq!(w[1].prev, w[0].offset, "prev chains the stream: {pos:?}");
        assert_eq!(w[1].epoch, w[0].epoch);
    }
    assert_eq!(y0.prev, 0);

    // Both sinks get all five, in offset order per stream, byte for byte.
    for rx in [&mut ra, &mut rb] {
        let got = entries(rx, 5).await;
        let mut per: BTreeMap<String, Vec<(StreamPos, Bytes)>> = BTreeMap::new();
        for (s, p, b) in got {
            per.entry(s).or_default().push((p, b));
        }
        let x: Vec<_> = per["/x"]
            .iter()
            .map(|(p, b)| (p.clone(), b.clone()))
            .collect();
        assert_eq!(x.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(), pos);
        assert_eq!(&x[3].1[..], b"x3\n{}");
        assert_eq!(per["/chat room:ü"][0].0, y0);
    }

    // Reads.
    let all = xa.read("/x", 0, 10).await.expect("read");
    assert_eq!(
        (all.top, all.epoch.as_str()),
        (pos[3].offset, pos[0].epoch.as_str())
    );
    assert_eq!(
        all.entries
            .iter()
            .map(|(p, _)| p.clone())
            .collect::<Vec<_>>(),
        pos
    );
    assert_eq!(&all.entries[0].1[..], b"x0");
    let after = xb.read("/x", pos[1].offset, 10).await.expect("read");
    assert_eq!(after.entries.len(), 2);
    assert_eq!(after.entries[0].0.prev, pos[1].offset);
    let limited = xb.read("/x", 0, 2).await.expect("read");
    assert_eq!(limited.entries.len(), 2);
    let none = xa.read("/x", pos[3].offset, 10).await.expect("read");
    assert!(none.entries.is_empty());
    assert_eq!(none.top, pos[3].offset);
    let unknown = xa.read("/nothing-here", 0, 10).await.expect("read");
    assert_eq!((unknown.top, unknown.entries.len()), (0, 0));

    // Trimming keeps at least `keep`, and a reader can tell something is missing.
    let small = StreamLimits::new(3, Duration::from_secs(60));
    let mut z = Vec::new();
    for i in 0..20 {
        z.push(
            xa.append("/z", Bytes::from(format!("z{i}")), small)
                .await
                .expect("append"),
        );
    }
    let kept = xa.read("/z", 0, 100).await.expect("read");
    assert!(
        kept.entries.len() >= 3 && kept.entries.len() < 20,
        "{}",
        kept.entries.len()
    );
    assert_ne!(
        kept.entries[0].0.prev, 0,
        "the first kept entry shows a gap after 0"
    );
    assert_eq!(kept.entries.last().expect("last").0, z[19]);
    entries(&mut ra, 20).await;
    entries(&mut rb, 20).await;

    // The session store: take is get-and-delete, once.
    let ttl = Duration::from_secs(1);
    xa.put("s1", Bytes::from_static(b"v1"), ttl)
        .await
        .expect("put");
    assert_eq!(
        xb.take("s1").await.expect("take").as_deref(),
        Some(&b"v1"[..])
    );
    assert_eq!(xa.take("s1").await.expect("take"), None);
    assert_eq!(xa.take("never").await.expect("take"), None);
    xa.put("s2", Bytes::from_static(b"v2"), ttl)
        .await
        .expect("put");
    let (t1, t2) = tokio::join!(xa.take("s2"), xb.take("s2"));
    let got = [t1.expect("take"), t2.expect("take")];
    assert_eq!(got.iter().filter(|v| v.is_some()).count(), 1, "{got:?}");
    xa.put("s3", Bytes::from_static(b"v3"), ttl)
        .await
        .expect("put");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(xb.take("s3").await.expect("take"), None, "expired");
    a.close().await;
    b.close().await;
}
