//! A bucket's objects in key order, packed so that a million of them cost little memory.
//!
//! A `BTreeMap<Box<str>, Box<Object>>` spends about 180 bytes on an object with a 40-byte key:
//! two heap allocations (the key and the record) and a node slot in a tree whose nodes are about
//! half full when keys arrive in order. [`Objects`] keeps instead leaves of up to `LEAF_MAX`
//! objects in one vector each, with their keys front-coded in one byte vector (each key as the
//! length it shares with the one before and the rest of its bytes, the way LevelDB's blocks and
//! HBase's key encoders store sorted keys); a `BTreeMap` finds the leaf by its first key. Keys
//! that share prefixes — which S3 keys almost always do — then cost a few bytes, the record its 64
//! bytes, and the tree a few bytes per object.
//!
//! A lookup scans one leaf's keys, decoding as it goes: a few hundred bytes. Iteration yields
//! owned keys (the leaf holds no key whole to lend).

use crate::object::Object;
use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::collections::{btree_map, BTreeMap};
use std::ops::{Bound, Index};
use tinydfs_proto::ObjectRecord;

/// Most objects in a leaf: the tree's cost per leaf is spread over many objects, and a scan of
/// a leaf's keys stays short.
const LEAF_MAX: usize = 64;

/// A leaf smaller than this after a removal is merged into a neighbour that has room, so that
/// deleting most keys does not leave a tree of nearly empty leaves.
const LEAF_MERGE: usize = LEAF_MAX / 4;

/// Slots a full leaf vector grows by (a `Vec` doubling would leave up to half a leaf unused).
const GROW: usize = 8;

/// Bytes a full key vector grows by, for the same reason.
const GROW_KEYS: usize = 64;

/// Objects by key, in UTF-8 byte order (the order S3 lists them in).
#[derive(Clone, Debug, Default)]
pub struct Objects {
    /// Leaves by their first key.
    leaves: BTreeMap<Box<str>, Leaf>,
    len: usize,
}

/// Up to [`LEAF_MAX`] objects with their keys in order.
#[derive(Clone, Debug, Default)]
struct Leaf {
    /// For each key in order: the length of the prefix it shares with the key before (0 for the
    /// first) and the length of the rest, as LEB128 varints, then the rest's bytes.
    keys: Vec<u8>,
    objects: Vec<Object>,
}

/// Where a key is or would go in a leaf.
struct Spot {
    /// Its index among the leaf's objects.
    index: usize,
    /// Whether the key is there.
    hit: bool,
    /// The byte range of the entry at `index` (empty at the end).
    at: usize,
    end: usize,
    /// The key before `index` (empty at the start).
    prev: Vec<u8>,
    /// The key at `index` (when `index` is inside the leaf).
    here: Vec<u8>,
}

fn put_varint(out: &mut Vec<u8>, mut n: usize) {
    while n >= 0x80 {
        out.push(n as u8 | 0x80);
        n >>= 7;
    }
    out.push(n as u8);
}

fn get_varint(bytes: &[u8], pos: &mut usize) -> usize {
    let mut n = 0usize;
    let mut shift = 0;
    while let Some(&b) = bytes.get(*pos) {
        *pos += 1;
        n |= usize::from(b & 0x7f) << shift;
        if b < 0x80 || shift >= 56 {
            break;
        }
        shift += 7;
    }
    n
}

/// Appends `key` encoded after `prev`.
fn encode(out: &mut Vec<u8>, prev: &[u8], key: &[u8]) {
    let shared = prev.iter().zip(key).take_while(|(a, b)| a == b).count();
    put_varint(out, shared);
    put_varint(out, key.len() - shared);
    out.extend_from_slice(&key[shared..]);
}

/// Decodes the entry at `pos` into `key`, which holds the key before it; returns the entry's end.
fn decode(bytes: &[u8], pos: usize, key: &mut Vec<u8>) -> usize {
    let mut p = pos;
    let shared = get_varint(bytes, &mut p);
    let len = get_varint(bytes, &mut p);
    let end = p.saturating_add(len).min(bytes.len());
    key.truncate(shared);
    key.extend_from_slice(&bytes[p.min(end)..end]);
    end
}

fn text(key: &[u8]) -> String {
    // Keys went in as `str`; the lossy form is only a guard against a bug.
    String::from_utf8_lossy(key).into_owned()
}

impl Leaf {
    fn of(key: &[u8], object: Object) -> Leaf {
        let mut leaf = Leaf::default();
        leaf.push(&[], key, object);
        leaf
    }

    fn len(&self) -> usize {
        self.objects.len()
    }

    /// Appends `key`, which sorts after `last`, the leaf's last key.
    fn push(&mut self, last: &[u8], key: &[u8], object: Object) {
        self.reserve(key.len() + 4);
        encode(&mut self.keys, last, key);
        self.objects.push(object);
    }

    /// Room for one more object and `bytes` more key bytes, grown by steps rather than doubled.
    fn reserve(&mut self, bytes: usize) {
        if self.objects.len() == self.objects.capacity() {
            self.objects.reserve_exact(GROW);
        }
        if self.keys.capacity() - self.keys.len() < bytes {
            self.keys.reserve_exact(bytes + GROW_KEYS);
        }
    }

    /// Gives back what removals left unused beyond one step of growth.
    fn trim(&mut self) {
        if self.objects.capacity() - self.objects.len() > 2 * GROW {
            self.objects.shrink_to(self.objects.len() + GROW);
        }
        if self.keys.capacity() - self.keys.len() > 2 * GROW_KEYS {
            self.keys.shrink_to(self.keys.len() + GROW_KEYS);
        }
    }

    fn find(&self, key: &[u8]) -> Spot {
        let mut prev = Vec::new();
        let mut here = Vec::new();
        let mut at = 0;
        for index in 0..self.objects.len() {
            prev.clone_from(&here);
            let end = decode(&self.keys, at, &mut here);
            match here.as_slice().cmp(key) {
                Ordering::Less => at = end,
                found => {
                    return Spot {
                        index,
                        hit: found == Ordering::Equal,
                        at,
                        end,
                        prev,
                        here,
                    }
                }
            }
        }
        Spot {
            index: self.objects.len(),
            hit: false,
            at,
            end: at,
            prev: here,
            here: Vec::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Option<usize> {
        let mut here = Vec::new();
        let mut at = 0;
        for index in 0..self.objects.len() {
            at = decode(&self.keys, at, &mut here);
            match here.as_slice().cmp(key) {
                Ordering::Less => {}
                Ordering::Equal => return Some(index),
                Ordering::Greater => return None,
            }
        }
        None
    }

    /// Inserts `key` where `spot` (a miss) says it goes.
    fn insert_at(&mut self, spot: &Spot, key: &[u8], object: Object) {
        let mut bytes = Vec::with_capacity(key.len() + spot.here.len() + 8);
        encode(&mut bytes, &spot.prev, key);
        if spot.index < self.len() {
            encode(&mut bytes, key, &spot.here);
        }
        self.reserve(bytes.len().saturating_sub(spot.end - spot.at));
        self.keys.splice(spot.at..spot.end, bytes);
        self.objects.insert(spot.index, object);
    }

    /// Removes the object `spot` (a hit) names.
    fn remove_at(&mut self, spot: &Spot) -> Object {
        let mut bytes = Vec::new();
        let mut end = spot.end;
        if spot.index + 1 < self.len() {
            let mut next = spot.here.clone();
            end = decode(&self.keys, spot.end, &mut next);
            encode(&mut bytes, &spot.prev, &next);
        }
        self.keys.splice(spot.at..end, bytes);
        let object = self.objects.remove(spot.index);
        self.trim();
        object
    }

    /// The key at `index`, and the byte range of its entry.
    fn key_at(&self, index: usize) -> (Vec<u8>, usize, usize) {
        let (mut key, mut at) = (Vec::new(), 0);
        for i in 0..self.len() {
            let end = decode(&self.keys, at, &mut key);
            if i == index {
                return (key, at, end);
            }
            at = end;
        }
        (key, at, at)
    }

    fn first_key(&self) -> Vec<u8> {
        self.key_at(0).0
    }

    fn last_key(&self) -> Vec<u8> {
        self.key_at(self.len().saturating_sub(1)).0
    }

    /// Moves the objects from `index` on to a new leaf; returns its first key and the leaf.
    fn split_off(&mut self, index: usize) -> (Vec<u8>, Leaf) {
        let (first, at, end) = self.key_at(index);
        let mut keys = Vec::with_capacity(self.keys.len() - at + first.len() + GROW_KEYS);
        encode(&mut keys, &[], &first);
        keys.extend_from_slice(&self.keys[end..]);
        let mut objects = Vec::with_capacity(self.len() - index + GROW);
        objects.extend(self.objects.drain(index..));
        self.keys.truncate(at);
        self.trim();
        (first, Leaf { keys, objects })
    }

    /// Appends the objects of `next`, whose keys all sort after this leaf's.
    fn append(&mut self, next: Leaf) {
        let last = self.last_key();
        let (first, _, end) = next.key_at(0);
        let mut bytes = Vec::new();
        encode(&mut bytes, &last, &first);
        bytes.extend_from_slice(&next.keys[end..]);
        self.keys.reserve_exact(bytes.len());
        self.keys.extend_from_slice(&bytes);
        self.objects.reserve_exact(next.objects.len());
        self.objects.extend(next.objects);
    }
}

impl Objects {
    pub fn new() -> Objects {
        Objects::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The leaf that holds `key` if any does: the last whose first key is not after it.
    fn leaf(&self, key: &str) -> Option<&Leaf> {
        self.leaves
            .range::<str, _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .map(|(_, l)| l)
    }

    pub fn get(&self, key: &str) -> Option<&Object> {
        let leaf = self.leaf(key)?;
        leaf.get(key.as_bytes()).map(|i| &leaf.objects[i])
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Object> {
        let (_, leaf) = self
            .leaves
            .range_mut::<str, _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let i = leaf.get(key.as_bytes())?;
        Some(&mut leaf.objects[i])
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// Inserts or replaces; returns the object replaced.
    pub fn insert(&mut self, key: &str, object: Object) -> Option<Object> {
        let k = key.as_bytes();
        loop {
            // The leaf whose first key is the last not after `key`, or the first leaf.
            let first: Box<str> = match self
                .leaves
                .range::<str, _>((Bound::Unbounded, Bound::Included(key)))
                .next_back()
                .or_else(|| self.leaves.iter().next())
            {
                Some((f, _)) => f.clone(),
                None => {
                    self.leaves.insert(key.into(), Leaf::of(k, object));
                    self.len += 1;
                    return None;
                }
            };
            let Some(leaf) = self.leaves.get_mut(&first) else {
                return None; // not reached: the key was just found
            };
            let spot = leaf.find(k);
            if spot.hit {
                return Some(std::mem::replace(&mut leaf.objects[spot.index], object));
            }
            if leaf.len() < LEAF_MAX {
                leaf.insert_at(&spot, k, object);
                self.len += 1;
                if spot.index == 0 {
                    self.rekey(&first, key.into());
                }
                return None;
            }
            if spot.index == leaf.len() {
                // The key goes between this full leaf and the next: to the front of the next if
                // it has room (keys arriving in descending order fill it), else to a new leaf
                // (keys arriving in order fill leaves whole instead of leaving halves behind).
                let next = self
                    .leaves
                    .range_mut::<str, _>((Bound::Excluded(&*first), Bound::Unbounded))
                    .next()
                    .filter(|(_, l)| l.len() < LEAF_MAX);
                match next {
                    Some((next_first, l)) => {
                        let next_first = next_first.clone();
                        l.insert_at(&l.find(k), k, object);
                        self.rekey(&next_first, key.into());
                    }
                    None => {
                        self.leaves.insert(key.into(), Leaf::of(k, object));
                    }
                }
                self.len += 1;
                return None;
            }
            let (mid, right) = leaf.split_off(LEAF_MAX / 2);
            self.leaves.insert(text(&mid).into(), right);
        }
    }

    /// Files the leaf under `old` under `new`, its new first key.
    fn rekey(&mut self, old: &str, new: Box<str>) {
        if let Some(leaf) = self.leaves.remove(old) {
            self.leaves.insert(new, leaf);
        }
    }

    /// Removes and returns the object under `key`.
    pub fn remove(&mut self, key: &str) -> Option<Object> {
        let (first, leaf) = self
            .leaves
            .range_mut::<str, _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()?;
        let spot = leaf.find(key.as_bytes());
        if !spot.hit {
            return None;
        }
        let object = leaf.remove_at(&spot);
        self.len -= 1;
        let (left, first) = (leaf.len(), first.clone());
        if left == 0 {
            self.leaves.remove(&first);
            return Some(object);
        }
        let mut first = first;
        if spot.index == 0 {
            let new: Box<str> = self
                .leaves
                .get(&first)
                .map_or_else(|| first.clone(), |l| text(&l.first_key()).into_boxed_str());
            self.rekey(&first, new.clone());
            first = new;
        }
        if left < LEAF_MERGE {
            self.merge(&first);
        }
        Some(object)
    }

    /// Merges the small leaf under `first` into the one before it, or the one after it into
    /// it, when the two fit in three quarters of a leaf.
    fn merge(&mut self, first: &str) {
        let Some(len) = self.leaves.get(first).map(Leaf::len) else {
            return;
        };
        let fits = |other: &Leaf| len + other.len() <= LEAF_MAX * 3 / 4;
        let before = self
            .leaves
            .range::<str, _>((Bound::Unbounded, Bound::Excluded(first)))
            .next_back()
            .filter(|(_, l)| fits(l))
            .map(|(k, _)| k.clone());
        if let Some(before) = before {
            if let Some(small) = self.leaves.remove(first) {
                if let Some(l) = self.leaves.get_mut(&before) {
                    l.append(small);
                }
            }
            return;
        }
        let after = self
            .leaves
            .range::<str, _>((Bound::Excluded(first), Bound::Unbounded))
            .next()
            .filter(|(_, l)| fits(l))
            .map(|(k, _)| k.clone());
        if let Some(after) = after {
            if let Some(next) = self.leaves.remove(&after) {
                if let Some(l) = self.leaves.get_mut(first) {
                    l.append(next);
                }
            }
        }
    }

    /// Objects in key order from `lower` on.
    pub fn range_from(&self, lower: Bound<&str>) -> Iter<'_> {
        let start = match lower {
            Bound::Included(k) | Bound::Excluded(k) => self
                .leaves
                .range::<str, _>((Bound::Unbounded, Bound::Included(k)))
                .next_back()
                .map(|(f, _)| &**f),
            Bound::Unbounded => None,
        };
        let leaves = match start {
            Some(f) => self
                .leaves
                .range::<str, _>((Bound::Included(f), Bound::Unbounded)),
            None => self.leaves.range::<str, _>(..),
        };
        Iter {
            leaves,
            leaf: None,
            index: 0,
            pos: 0,
            key: Vec::new(),
            lower: match lower {
                Bound::Included(k) => Bound::Included(k.as_bytes().to_vec()),
                Bound::Excluded(k) => Bound::Excluded(k.as_bytes().to_vec()),
                Bound::Unbounded => Bound::Unbounded,
            },
        }
    }

    pub fn iter(&self) -> Iter<'_> {
        self.range_from(Bound::Unbounded)
    }

    pub fn values(&self) -> impl Iterator<Item = &Object> {
        self.leaves.values().flat_map(|l| l.objects.iter())
    }

    /// Appends `key` if it sorts after `last` (the greatest key so far, empty: none) — the
    /// fast path for keys read back in order — or inserts it.
    fn load(&mut self, last: &[u8], key: &str, object: Object) {
        let k = key.as_bytes();
        if self.len > 0 && k <= last {
            self.insert(key, object);
            return;
        }
        match self.leaves.iter_mut().next_back() {
            Some((_, leaf)) if leaf.len() < LEAF_MAX => leaf.push(last, k, object),
            _ => {
                self.leaves.insert(key.into(), Leaf::of(k, object));
            }
        }
        self.len += 1;
    }
}

impl Index<&str> for Objects {
    type Output = Object;

    /// The object under `key`; panics when there is none, like `BTreeMap`'s index.
    fn index(&self, key: &str) -> &Object {
        match self.get(key) {
            Some(o) => o,
            None => panic!("no object {key:?}"),
        }
    }
}

/// Objects with their keys, in order.
pub struct Iter<'a> {
    leaves: btree_map::Range<'a, Box<str>, Leaf>,
    leaf: Option<&'a Leaf>,
    index: usize,
    pos: usize,
    key: Vec<u8>,
    /// Keys before this bound are skipped (only the first leaf has any).
    lower: Bound<Vec<u8>>,
}

impl<'a> Iterator for Iter<'a> {
    type Item = (String, &'a Object);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(leaf) = self.leaf.filter(|l| self.index < l.len()) {
                self.pos = decode(&leaf.keys, self.pos, &mut self.key);
                let object = &leaf.objects[self.index];
                self.index += 1;
                let before = match &self.lower {
                    Bound::Included(b) => self.key < *b,
                    Bound::Excluded(b) => self.key <= *b,
                    Bound::Unbounded => false,
                };
                if before {
                    continue;
                }
                self.lower = Bound::Unbounded;
                return Some((text(&self.key), object));
            }
            let (_, leaf) = self.leaves.next()?;
            self.leaf = Some(leaf);
            self.index = 0;
            self.pos = 0;
            self.key.clear();
        }
    }
}

impl<'a> IntoIterator for &'a Objects {
    type Item = (String, &'a Object);
    type IntoIter = Iter<'a>;

    fn into_iter(self) -> Iter<'a> {
        self.iter()
    }
}

/// Written and read as a map of key to [`ObjectRecord`], the format snapshots and backups have
/// always had.
impl Serialize for Objects {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len))?;
        for (key, o) in self {
            map.serialize_entry(&key, &o.to_record())?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for Objects {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Objects, D::Error> {
        struct Records;
        impl<'de> Visitor<'de> for Records {
            type Value = Objects;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of keys to object records")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Objects, A::Error> {
                let mut out = Objects::new();
                let mut last = Vec::new();
                while let Some((key, r)) = m.next_entry::<String, ObjectRecord>()? {
                    out.load(&last, &key, Object::from_record(r));
                    if key.as_bytes() > last.as_slice() {
                        last = key.into_bytes();
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_map(Records)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn object(n: u64) -> Object {
        Object::from_record(ObjectRecord {
            size: n,
            etag: "d41d8cd98f00b204e9800998ecf8427e".into(),
            ..Default::default()
        })
    }

    /// Checks `o` against the model, and that its leaves are well formed.
    fn same(o: &Objects, model: &BTreeMap<String, u64>) {
        assert_eq!(o.len(), model.len());
        let got: Vec<(String, u64)> = o.iter().map(|(k, v)| (k, v.size)).collect();
        let want: Vec<(String, u64)> = model.iter().map(|(k, v)| (k.clone(), *v)).collect();
        assert_eq!(got, want);
        for (first, leaf) in &o.leaves {
            assert!(leaf.len() > 0 && leaf.len() <= LEAF_MAX);
            assert_eq!(leaf.first_key(), first.as_bytes());
        }
    }

    #[derive(Clone, Debug)]
    enum Op {
        Insert(String, u64),
        Remove(String),
    }

    /// Keys from a small alphabet, so that they share prefixes and collide.
    fn key() -> impl Strategy<Value = String> {
        "[ab/é]{0,6}"
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (key(), any::<u64>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => key().prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_btreemap(ops in proptest::collection::vec(op(), 0..600), probes in proptest::collection::vec(key(), 0..20)) {
            let mut o = Objects::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        let old = o.insert(&k, object(v)).map(|x| x.size);
                        prop_assert_eq!(old, model.insert(k, v));
                    }
                    Op::Remove(k) => {
                        let old = o.remove(&k).map(|x| x.size);
                        prop_assert_eq!(old, model.remove(&k));
                    }
                }
            }
            same(&o, &model);
            for p in probes {
                prop_assert_eq!(o.get(&p).map(|x| x.size), model.get(&p).copied());
                let got: Vec<String> = o.range_from(Bound::Excluded(&p)).map(|(k, _)| k).collect();
                let want: Vec<String> = model.range::<str, _>((Bound::Excluded(p.as_str()), Bound::Unbounded)).map(|(k, _)| k.clone()).collect();
                prop_assert_eq!(got, want);
                let got: Vec<String> = o.range_from(Bound::Included(&p)).map(|(k, _)| k).collect();
                let want: Vec<String> = model.range::<str, _>((Bound::Included(p.as_str()), Bound::Unbounded)).map(|(k, _)| k.clone()).collect();
                prop_assert_eq!(got, want);
            }
        }
    }

    #[test]
    fn many_keys_in_order_and_out_fill_leaves_and_round_trip() {
        let mut o = Objects::new();
        let mut model = BTreeMap::new();
        // 64 writers appending to their own runs, as the memory bench does.
        for i in 0..200u64 {
            for w in 0..64 {
                let k = format!("bench/writer-{w:03}/object-{i:018}");
                o.insert(&k, object(i));
                model.insert(k, i);
            }
        }
        same(&o, &model);
        let leaves = o.leaves.len();
        assert!(
            leaves <= model.len() / (LEAF_MAX / 2) + 64,
            "{leaves} leaves"
        );
        // Keys counting down into the gap after a full leaf fill leaves too.
        let mut down = Objects::new();
        let mut down_model = BTreeMap::new();
        for i in (0..1000u64).rev() {
            let k = format!("newest-first/{i:06}");
            down.insert(&k, object(i));
            down_model.insert(k, i);
        }
        for i in 0..LEAF_MAX as u64 {
            let k = format!("a/{i:03}");
            down.insert(&k, object(i));
            down_model.insert(k, i);
        }
        for i in (0..1000u64).rev() {
            let k = format!("b/{i:06}");
            down.insert(&k, object(i));
            down_model.insert(k, i);
        }
        same(&down, &down_model);
        assert!(
            down.leaves.len() <= down_model.len() / (LEAF_MAX / 2) + 2,
            "{} leaves for {} keys",
            down.leaves.len(),
            down_model.len()
        );
        if let Some(m) = o.get_mut("bench/writer-007/object-000000000000000099") {
            m.size = 5;
        }
        model.insert("bench/writer-007/object-000000000000000099".into(), 5);

        let json = serde_json::to_vec(&o).unwrap_or_default();
        let back: Objects = serde_json::from_slice(&json).unwrap_or_default();
        same(&back, &model);
        // Read back in order, leaves are full.
        assert_eq!(back.leaves.len(), model.len().div_ceil(LEAF_MAX));

        // Removing most keys merges leaves rather than keeping near-empty ones.
        let mut o = back;
        let keys: Vec<String> = model.keys().cloned().collect();
        for (i, k) in keys.iter().enumerate() {
            if i % 10 != 0 {
                assert!(o.remove(k).is_some());
                model.remove(k);
            }
        }
        same(&o, &model);
        let avg = o.len() as f64 / o.leaves.len() as f64;
        assert!(avg >= LEAF_MERGE as f64 / 2.0, "{avg} objects per leaf");
        // Out-of-order JSON keys still load.
        let r = serde_json::to_string(&object(1).to_record()).unwrap_or_default();
        let json = format!(r#"{{"b":{r},"a":{r}}}"#);
        let back: Objects = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back.iter().map(|(k, _)| k).collect::<Vec<_>>(), ["a", "b"]);
    }
}
