//! The offline checker of a recorded S3 history: what every client asked, when, and what it
//! saw. Each key is a register (an object or nothing); the history of each key must be
//! linearizable — some order of the operations, each taking effect at one instant between its
//! invocation and its answer, explains every answer (Wing & Gong's search, with Lowe's cache of
//! visited configurations). A write whose outcome the client does not know (timeout, 5xx,
//! connection reset) may or may not have taken effect, at any instant after its invocation.
//! Also checked: every object read holds bytes some writer wrote to that key, and every LIST
//! agrees with the writes around it.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// What a client asked.
#[derive(Clone, Debug)]
pub enum Call {
    Put {
        key: String,
        value: Vec<u8>,
    },
    Delete {
        key: String,
    },
    Get {
        key: String,
    },
    Head {
        key: String,
    },
    /// A listing of every key of the workload.
    List,
}

/// What the client saw.
#[derive(Clone, Debug, PartialEq)]
pub enum Seen {
    /// A write or delete acknowledged.
    Done,
    /// A GET's object (`None`: NoSuchKey).
    Read(Option<Vec<u8>>),
    /// A HEAD's answer: the object exists.
    Exists(bool),
    Listed(BTreeSet<String>),
    /// No answer, or an error that does not say whether the call took effect.
    Unknown,
}

/// One operation of the history; times in nanoseconds since the workload started.
#[derive(Clone, Debug)]
pub struct Event {
    pub call: Call,
    pub invoked: u64,
    pub returned: u64,
    pub seen: Seen,
}

/// Operations of one key, as the search sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    /// Sets the register (None: deleted).
    Write(Option<u32>),
    Read(Option<u32>),
    Exists(bool),
}

#[derive(Clone, Copy, Debug)]
struct KeyOp {
    invoked: u64,
    /// `u64::MAX` for a write of unknown outcome: it may take effect any time after invocation,
    /// or never.
    returned: u64,
    kind: Kind,
    /// Index in the whole history, for reports.
    event: usize,
}

/// Configurations the search may visit per key before it gives up (and says so).
const SEARCH_LIMIT: usize = 2_000_000;

/// Every anomaly found in `history`, described for a human; empty when the history is
/// consistent.
pub fn check(history: &[Event]) -> Vec<String> {
    let mut anomalies = Vec::new();
    // Each key's written values, numbered.
    let mut values: BTreeMap<&str, HashMap<&[u8], u32>> = BTreeMap::new();
    for e in history {
        if let Call::Put { key, value } = &e.call {
            let per_key = values.entry(key).or_default();
            let next = per_key.len() as u32;
            per_key.entry(value.as_slice()).or_insert(next);
        }
    }
    let mut ops: BTreeMap<&str, Vec<KeyOp>> = BTreeMap::new();
    for (i, e) in history.iter().enumerate() {
        let known = e.seen != Seen::Unknown;
        let returned = if known { e.returned } else { u64::MAX };
        let op = |kind| KeyOp {
            invoked: e.invoked,
            returned,
            kind,
            event: i,
        };
        match (&e.call, &e.seen) {
            (Call::Put { key, value }, _) => {
                let id = values[key.as_str()][value.as_slice()];
                ops.entry(key).or_default().push(op(Kind::Write(Some(id))));
            }
            (Call::Delete { key }, _) => ops.entry(key).or_default().push(op(Kind::Write(None))),
            (Call::Get { key }, Seen::Read(got)) => {
                let id = match got {
                    None => None,
                    Some(bytes) => {
                        match values
                            .get(key.as_str())
                            .and_then(|v| v.get(bytes.as_slice()))
                        {
                            Some(id) => Some(*id),
                            None => {
                                anomalies.push(format!(
                                    "event {i}: GET {key} returned {} bytes no writer wrote to it",
                                    bytes.len()
                                ));
                                continue;
                            }
                        }
                    }
                };
                ops.entry(key).or_default().push(op(Kind::Read(id)));
            }
            (Call::Head { key }, Seen::Exists(b)) => {
                ops.entry(key).or_default().push(op(Kind::Exists(*b)))
            }
            // A read that failed says nothing.
            _ => {}
        }
    }
    for (key, key_ops) in &ops {
        match linearizable(key_ops) {
            Some(true) => {}
            Some(false) => {
                anomalies.push(format!("{key}: not linearizable: {}", describe(key_ops)))
            }
            None => anomalies.push(format!(
                "{key}: undecided after {SEARCH_LIMIT} configurations ({} operations)",
                key_ops.len()
            )),
        }
    }
    anomalies.extend(check_lists(history));
    anomalies
}

/// The events of a key in invocation order, for a report.
fn describe(ops: &[KeyOp]) -> String {
    let mut lines: Vec<String> = ops
        .iter()
        .map(|o| {
            let returned = if o.returned == u64::MAX {
                "?".to_string()
            } else {
                format!("{:.3}", o.returned as f64 / 1e9)
            };
            format!("[{:.3}..{returned}s {:?}]", o.invoked as f64 / 1e9, o.kind)
        })
        .collect();
    lines.sort();
    lines.join(" ")
}

/// Whether one key's operations are linearizable from an absent object (None: the search was
/// cut off). Writes of unknown outcome whose value no read saw are left out: taking effect or
/// not, nobody could tell them apart from a write overwritten at once.
fn linearizable(ops: &[KeyOp]) -> Option<bool> {
    let seen: HashSet<u32> = ops
        .iter()
        .filter_map(|o| match o.kind {
            Kind::Read(Some(v)) => Some(v),
            _ => None,
        })
        .collect();
    let mut ops: Vec<KeyOp> = ops
        .iter()
        .copied()
        .filter(|o| {
            !(o.returned == u64::MAX
                && matches!(o.kind, Kind::Write(Some(v)) if !seen.contains(&v)))
        })
        .collect();
    ops.sort_by_key(|o| o.invoked);
    let known = ops.iter().filter(|o| o.returned != u64::MAX).count();
    let mut search = Search {
        ops: &ops,
        done: vec![0u64; ops.len().div_ceil(64)],
        visited: HashSet::new(),
    };
    search.run(None, known)
}

struct Search<'a> {
    ops: &'a [KeyOp],
    done: Vec<u64>,
    visited: HashSet<(Vec<u64>, Option<u32>)>,
}

impl Search<'_> {
    fn is_done(&self, i: usize) -> bool {
        self.done[i / 64] >> (i % 64) & 1 == 1
    }

    fn flip(&mut self, i: usize) {
        self.done[i / 64] ^= 1 << (i % 64);
    }

    /// Whether the operations not yet done can be ordered from `state` so that every one of
    /// known outcome (`known` of them left) takes effect.
    fn run(&mut self, state: Option<u32>, known: usize) -> Option<bool> {
        if known == 0 {
            return Some(true);
        }
        if self.visited.len() > SEARCH_LIMIT {
            return None;
        }
        // The next operation to take effect must have started before the earliest answer
        // still pending: that operation had taken effect by its answer.
        let horizon = (0..self.ops.len())
            .filter(|&i| !self.is_done(i))
            .map(|i| self.ops[i].returned)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..self.ops.len() {
            let op = self.ops[i];
            if op.invoked >= horizon {
                break;
            }
            if self.is_done(i) {
                continue;
            }
            let next = match op.kind {
                Kind::Write(v) => v,
                Kind::Read(v) if v == state => state,
                Kind::Exists(b) if b == state.is_some() => state,
                Kind::Read(_) | Kind::Exists(_) => continue,
            };
            self.flip(i);
            let left = known - usize::from(op.returned != u64::MAX);
            if self.visited.insert((self.done.clone(), next)) {
                match self.run(next, left) {
                    Some(false) => {}
                    other => {
                        self.flip(i);
                        return other;
                    }
                }
            }
            self.flip(i);
        }
        Some(false)
    }
}

/// A LIST must show a key that some PUT may have created by then and not a deletion since, and
/// must not miss a key acknowledged as written before it started and not deleted since.
fn check_lists(history: &[Event]) -> Vec<String> {
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    for e in history {
        match (&e.call, &e.seen) {
            (Call::Put { key, .. } | Call::Delete { key }, _) => {
                keys.insert(key);
            }
            // A listed key nobody wrote is checked too (and found never created).
            (Call::List, Seen::Listed(listed)) => keys.extend(listed.iter().map(String::as_str)),
            _ => {}
        }
    }
    let ends = |e: &Event| {
        if e.seen == Seen::Unknown {
            u64::MAX
        } else {
            e.returned
        }
    };
    let mut puts: HashMap<&str, Vec<&Event>> = HashMap::new();
    let mut deletes: HashMap<&str, Vec<&Event>> = HashMap::new();
    for e in history {
        match &e.call {
            Call::Put { key, .. } => puts.entry(key).or_default().push(e),
            Call::Delete { key } => deletes.entry(key).or_default().push(e),
            _ => {}
        }
    }
    let puts = |key: &str| puts.get(key).into_iter().flatten().copied();
    let deletes = |key: &str| deletes.get(key).into_iter().flatten().copied();
    let mut anomalies = Vec::new();
    for (i, list) in history.iter().enumerate() {
        let (Call::List, Seen::Listed(listed)) = (&list.call, &list.seen) else {
            continue;
        };
        for key in &keys {
            if listed.contains(*key) {
                let created = puts(key).any(|p| p.invoked < list.returned);
                let deleted_for_good = deletes(key).any(|d| {
                    d.seen == Seen::Done
                        && d.returned < list.invoked
                        && !puts(key).any(|p| p.invoked < list.returned && ends(p) > d.invoked)
                });
                if !created || deleted_for_good {
                    anomalies.push(format!("event {i}: LIST showed {key}, which was not there"));
                }
            } else {
                let missed = puts(key).any(|p| {
                    p.seen == Seen::Done
                        && p.returned < list.invoked
                        && !deletes(key).any(|d| d.invoked < list.returned && ends(d) > p.invoked)
                });
                if missed {
                    anomalies.push(format!("event {i}: LIST missed {key}, written before it"));
                }
            }
        }
    }
    anomalies
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, v: &[u8], invoked: u64, returned: u64, seen: Seen) -> Event {
        Event {
            call: Call::Put {
                key: key.into(),
                value: v.to_vec(),
            },
            invoked,
            returned,
            seen,
        }
    }

    fn get(key: &str, got: Option<&[u8]>, invoked: u64, returned: u64) -> Event {
        Event {
            call: Call::Get { key: key.into() },
            invoked,
            returned,
            seen: Seen::Read(got.map(<[u8]>::to_vec)),
        }
    }

    fn del(key: &str, invoked: u64, returned: u64, seen: Seen) -> Event {
        Event {
            call: Call::Delete { key: key.into() },
            invoked,
            returned,
            seen,
        }
    }

    fn list(keys: &[&str], invoked: u64, returned: u64) -> Event {
        Event {
            call: Call::List,
            invoked,
            returned,
            seen: Seen::Listed(keys.iter().map(|k| k.to_string()).collect()),
        }
    }

    #[test]
    fn sequential_and_concurrent_histories_pass() {
        let h = vec![
            put("k", b"a", 0, 10, Seen::Done),
            get("k", Some(b"a"), 11, 20),
            // Concurrent with the PUT of b: either value may be read.
            put("k", b"b", 21, 40, Seen::Done),
            get("k", Some(b"a"), 22, 30),
            get("k", Some(b"b"), 31, 39),
            get("k", Some(b"b"), 41, 50),
            del("k", 51, 60, Seen::Done),
            get("k", None, 61, 70),
            list(&[], 71, 80),
        ];
        assert_eq!(check(&h), Vec::<String>::new());
    }

    #[test]
    fn a_stale_read_is_found() {
        let h = vec![
            put("k", b"a", 0, 10, Seen::Done),
            put("k", b"b", 11, 20, Seen::Done),
            get("k", Some(b"a"), 21, 30),
        ];
        let found = check(&h);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("k: not linearizable"), "{found:?}");
    }

    #[test]
    fn an_acknowledged_write_lost_is_found() {
        let h = vec![put("k", b"a", 0, 10, Seen::Done), get("k", None, 20, 30)];
        assert_eq!(check(&h).len(), 1);
    }

    #[test]
    fn a_write_of_unknown_outcome_may_or_may_not_take_effect() {
        // Took effect, seen long after the client gave up.
        let h = vec![
            put("k", b"a", 0, 10, Seen::Done),
            put("k", b"b", 20, 25, Seen::Unknown),
            get("k", Some(b"b"), 100, 110),
        ];
        assert_eq!(check(&h), Vec::<String>::new());
        // Did not take effect.
        let h = vec![
            put("k", b"a", 0, 10, Seen::Done),
            put("k", b"b", 20, 25, Seen::Unknown),
            get("k", Some(b"a"), 100, 110),
        ];
        assert_eq!(check(&h), Vec::<String>::new());
        // But not before it was sent.
        let h = vec![
            get("k", Some(b"b"), 0, 10),
            put("k", b"b", 20, 25, Seen::Unknown),
        ];
        assert_eq!(check(&h).len(), 1);
        // A read flipping back to an older value after the unknown write was seen is stale.
        let h = vec![
            put("k", b"a", 0, 10, Seen::Done),
            put("k", b"b", 20, 25, Seen::Unknown),
            get("k", Some(b"b"), 30, 40),
            get("k", Some(b"a"), 50, 60),
        ];
        assert_eq!(check(&h).len(), 1);
    }

    #[test]
    fn bytes_no_writer_wrote_are_found() {
        let h = vec![
            put("k", b"a", 0, 10, Seen::Done),
            get("k", Some(b"a\0"), 20, 30),
        ];
        let found = check(&h);
        assert!(
            found.iter().any(|a| a.contains("no writer wrote")),
            "{found:?}"
        );
    }

    #[test]
    fn lists_that_disagree_with_the_writes_are_found() {
        let h = vec![
            put("k", b"a", 0, 10, Seen::Done),
            list(&[], 20, 30),
            list(&["k", "ghost"], 40, 50),
        ];
        let found = check(&h);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found[0].contains("missed k"), "{found:?}");
        assert!(found[1].contains("showed ghost"), "{found:?}");
        let h = vec![
            put("k", b"a", 0, 10, Seen::Done),
            del("k", 20, 30, Seen::Done),
            list(&["k"], 40, 50),
        ];
        assert_eq!(check(&h).len(), 1);
        // A delete of unknown outcome excuses both answers.
        let h = vec![
            put("k", b"a", 0, 10, Seen::Done),
            del("k", 20, 30, Seen::Unknown),
            list(&["k"], 40, 50),
            list(&[], 60, 70),
        ];
        assert_eq!(check(&h), Vec::<String>::new());
    }

    #[test]
    fn many_concurrent_unknown_writes_are_decided_quickly() {
        let mut h = Vec::new();
        for i in 0..60u64 {
            h.push(put(
                "k",
                format!("v{i}").as_bytes(),
                i * 10,
                i * 10 + 5,
                Seen::Unknown,
            ));
            h.push(get(
                "k",
                Some(format!("v{i}").as_bytes()),
                i * 10 + 6,
                i * 10 + 9,
            ));
        }
        assert_eq!(check(&h), Vec::<String>::new());
    }
}
