use super::*;

fn report(node: NodeId, chunks: Vec<u128>) -> Heartbeat {
    Heartbeat {
        node_id: node,
        addr: format!("n{node}"),
        capacity: 100,
        free: 50,
        pid: 2,
        chunks: Some(
            chunks
                .into_iter()
                .map(|c| ChunkMeta {
                    id: ChunkId(c),
                    len: 1,
                    crc32c: 0,
                })
                .collect(),
        ),
        ..Default::default()
    }
}

#[test]
fn placement_uses_distinct_live_nodes_with_room() {
    let mut r = Registry::new(Duration::from_secs(60), 10);
    r.register(1, "a".into(), 100, 50, 1, String::new());
    r.register(2, "b".into(), 100, 50, 2, String::new());
    r.register(3, "c".into(), 100, 5, 3, String::new()); // below the reserve
    for _ in 0..50 {
        let p = r.place(3, 2, &[]).unwrap();
        assert_eq!(p.len(), 2);
        assert_ne!(p[0].id, p[1].id);
        assert!(p.iter().all(|n| n.id != 3));
    }
    assert!(r.place(3, 3, &[]).is_none());
    // A node the caller saw fail is avoided while others suffice.
    r.register(4, "d".into(), 100, 50, 4, String::new());
    for _ in 0..20 {
        let p = r.place(2, 2, &[1]).unwrap();
        assert!(p.iter().all(|n| n.id != 1));
    }
    assert_eq!(r.place(3, 3, &[1]).unwrap().len(), 3);
    // A draining node takes nothing new.
    r.set_draining([4].into());
    for _ in 0..20 {
        assert!(r.place(3, 2, &[]).unwrap().iter().all(|n| n.id != 4));
        assert_ne!(r.pick_target(&[], &[]).unwrap().id, 4);
    }
    assert!(r.place(3, 3, &[]).is_none());
}

#[test]
fn placement_spreads_replicas_over_zones() {
    let mut r = Registry::new(Duration::from_secs(60), 0);
    // Zone "a" has far more free space, so weighting alone would favour it.
    r.register(1, "a1".into(), 1000, 900, 1, "a".into());
    r.register(2, "a2".into(), 1000, 900, 2, "a".into());
    r.register(3, "b1".into(), 1000, 10, 3, "b".into());
    r.register(4, "c1".into(), 1000, 10, 4, "c".into());
    for _ in 0..50 {
        let p = r.place(3, 2, &[]).unwrap();
        let zones: HashSet<&str> = p
            .iter()
            .map(|n| r.node(n.id).unwrap().zone.as_str())
            .collect();
        assert_eq!(zones.len(), 3, "{p:?}");
        // A repair copy goes to a zone that has no copy yet.
        assert_eq!(r.pick_target(&[1], &["a", "b"]).unwrap().id, 4);
    }
}

#[test]
fn reports_judge_garbage_and_keep_fresh_replicas() {
    let mut r = Registry::new(Duration::from_secs(60), 10);
    r.register(1, "a".into(), 100, 50, 1, String::new());
    r.register(2, "b".into(), 100, 50, 2, String::new());
    r.add_replicas(ChunkId(9), &[1, 2]);
    assert_eq!(r.live_copies(&ChunkId(9)), 2);
    // A report taken before the pipeline stored chunk 9 does not erase it...
    let del = r
        .heartbeat(&report(2, vec![5]), true, true, |_| false)
        .unwrap();
    assert!(del.is_empty());
    assert_eq!(r.live_copies(&ChunkId(9)), 2);
    assert_eq!(r.live_copies(&ChunkId(5)), 1);
    // ...but a chunk known only from reports goes when a report no longer lists it.
    r.heartbeat(&report(2, vec![]), true, true, |_| false)
        .unwrap();
    assert_eq!(r.live_copies(&ChunkId(5)), 0);
    // Garbage and stale copies never count as replicas; they are ordered deleted only out
    // of safe mode.
    let judge = |c: &ChunkMeta| c.id == ChunkId(6);
    let del = r
        .heartbeat(&report(2, vec![6, 7]), false, true, judge)
        .unwrap();
    assert!(del.is_empty());
    assert_eq!(r.live_copies(&ChunkId(6)), 0);
    let del = r
        .heartbeat(&report(2, vec![6, 7]), true, true, judge)
        .unwrap();
    assert_eq!(del, vec![ChunkId(6)]);
    assert_eq!(r.live_copies(&ChunkId(7)), 1);
    // Surplus copies ordered deleted go with the next heartbeat, once; a report taken
    // before the node deleted it does not bring the copy back, and no repair picks it.
    r.order_delete(2, ChunkId(7));
    assert_eq!(r.live_copies(&ChunkId(7)), 0);
    assert_eq!(r.deleting(&ChunkId(7)), vec![2]);
    let mut hb = report(2, vec![7]);
    assert_eq!(
        r.heartbeat(&hb, true, true, |_| false).unwrap(),
        vec![ChunkId(7)]
    );
    assert_eq!(r.live_copies(&ChunkId(7)), 0);
    assert!(r.heartbeat(&hb, true, true, |_| false).unwrap().is_empty());
    assert_eq!(r.live_copies(&ChunkId(7)), 0);
    assert_eq!(r.deleting(&ChunkId(7)), vec![2]);
    hb.chunks = None;
    // Once every live node has reported...
    assert!(!r.all_reported());
    r.heartbeat(&report(1, vec![9]), true, true, |_| false)
        .unwrap();
    assert!(r.all_reported());
    // ...and a new term wants every report again, but keeps the nodes alive.
    r.reset(5);
    assert_eq!(r.live_count(), 2);
    assert!(!r.all_reported());
    assert!(r.report_wanted(1) && r.report_wanted(2));
    r.register(2, "b".into(), 100, 50, 2, String::new());
    assert!(!r.all_reported());
    // A replica reported lost stops counting at once and is remembered for fsck.
    r.register(1, "a".into(), 100, 50, 1, String::new());
    r.add_replicas(ChunkId(9), &[1, 2]);
    hb.lost = vec![ChunkId(9)];
    r.heartbeat(&hb, true, true, |_| false).unwrap();
    assert_eq!(r.holders(&ChunkId(9)), vec![1]);
    assert!(r.lost_lately(&ChunkId(9)));
    // An unknown node must register again.
    assert!(r
        .heartbeat(&report(77, vec![]), true, true, |_| false)
        .is_none());
}

#[test]
fn write_rate_is_measured_over_the_window_and_restarts_reset_it() {
    let mut r = Registry::new(Duration::from_secs(60), 0);
    r.register(1, "a".into(), 100, 50, 1, String::new());
    let n = r.nodes.get_mut(&1).unwrap();
    let t = Instant::now();
    n.record_written(1000, t);
    assert_eq!(n.write_rate(), 0, "one sample is no rate");
    n.record_written(3000, t + Duration::from_secs(2));
    assert_eq!(n.write_rate(), 1000);
    // Samples older than the window are dropped.
    n.record_written(3000, t + THROUGHPUT_WINDOW + Duration::from_secs(1));
    assert_eq!(n.written.len(), 2);
    assert_eq!(n.write_rate(), 0);
    // A smaller counter: the chunkserver restarted.
    n.record_written(10, t + THROUGHPUT_WINDOW + Duration::from_secs(2));
    assert_eq!(n.written.len(), 1);
}

#[test]
fn a_new_term_places_at_once_but_counts_replicas_only_from_its_own_reports() {
    let mut r = Registry::new(Duration::from_secs(60), 10);
    // A follower hears every node's heartbeats (adopted, never registered) and their reports.
    for n in 1..=3 {
        let mut hb = report(n, vec![100 + u128::from(n)]);
        hb.beats_every_master = true;
        r.adopt(&hb);
        r.heartbeat(&hb, false, false, |_| false).unwrap();
    }
    // A pipeline write the old term learnt lately on node 1.
    r.add_replicas(ChunkId(50), &[1]);
    // Chunks nodes say they stored since their last report, garbage left out.
    let meta = |id| ChunkMeta {
        id: ChunkId(id),
        len: 1,
        crc32c: 0,
    };
    r.note_added(2, &[meta(60), meta(61)], |c| c.id == ChunkId(61));
    r.note_added(99, &[meta(62)], |_| false);
    assert_eq!(r.holders(&ChunkId(60)), vec![2]);
    assert!(r.holders(&ChunkId(61)).is_empty() && r.holders(&ChunkId(62)).is_empty());
    // Elected: the nodes are alive, so chunks can be placed before any node beats again...
    r.reset(7);
    assert_eq!(r.live_count(), 3);
    assert!(r.place(3, 2, &[]).is_some());
    // ...reads still find what was reported or noted before...
    assert_eq!(r.holders(&ChunkId(101)), vec![1]);
    assert_eq!(r.holders(&ChunkId(60)), vec![2]);
    // ...but no deletion may be judged until every node reports in this term, and a replica
    // the old term learnt lately does not outlive a report that no longer lists it.
    assert!(!r.all_reported());
    assert!(r.report_wanted(1));
    r.heartbeat(&report(1, vec![101]), false, true, |_| false)
        .unwrap();
    assert!(!r.report_wanted(1));
    assert!(r.holders(&ChunkId(50)).is_empty());
    r.heartbeat(&report(2, vec![102]), false, true, |_| false)
        .unwrap();
    // (a full report replaces what was noted)
    assert!(r.holders(&ChunkId(60)).is_empty());
    r.heartbeat(&report(3, vec![103]), false, true, |_| false)
        .unwrap();
    assert!(r.all_reported());
    // A report the node sent before it knew of this leader does not count.
    r.reset(8);
    r.heartbeat(&report(1, vec![101]), false, false, |_| false)
        .unwrap();
    assert!(r.report_wanted(1));
    // Adopting a node already known changes nothing.
    let before = r.node(1).map(|n| n.chunk_count);
    r.adopt(&report(1, vec![]));
    assert_eq!(r.node(1).map(|n| n.chunk_count), before);
}
