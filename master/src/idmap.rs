//! A map keyed by random 128-bit ids (chunk ids, request ids) in little more memory than its
//! entries.
//!
//! A `HashMap` keeps between 1/8 and 1/2 of its buckets empty and doubles all at once: at a
//! million chunks its table has two million buckets, so each 32-byte entry costs 66 bytes.
//! [`IdMap`] keeps entries in sorted vectors ("shards") chosen by the id's hash, each of a few
//! hundred entries and grown by an eighth at a time, so an entry costs its size and a few
//! percent. Lookups are a binary search in one shard; inserting moves half a shard (a few
//! kilobytes), which is nothing beside the log write that precedes it. When the average shard
//! passes `SHARD_TARGET` entries each shard splits in two by one more bit of the hash.
//!
//! Iteration order is the shards' order, then the ids': it depends on the map's history (shards
//! never merge back), so no answer of the state machine may depend on it — as with the
//! `HashMap`s it replaced.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::marker::PhantomData;
use tinydfs_proto::ChunkId;

/// Average entries per shard above which the shards split: a shard's binary search and the
/// move an insert makes stay small, and the vectors' headers cost nothing per entry.
const SHARD_TARGET: usize = 512;

/// A 128-bit id used as a key.
pub trait Id: Copy + Ord {
    fn bits(&self) -> u128;
}

impl Id for ChunkId {
    fn bits(&self) -> u128 {
        self.0
    }
}

impl Id for u128 {
    fn bits(&self) -> u128 {
        *self
    }
}

/// 64 well-mixed bits of an id (ids made in tests are small counters, not random).
fn hash(id: u128) -> u64 {
    let x = (id as u64) ^ ((id >> 64) as u64).rotate_left(32);
    let x = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    let x = (x ^ (x >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    x ^ (x >> 33)
}

/// Entries by id, in sorted shards.
#[derive(Clone, Debug)]
pub struct IdMap<K, V> {
    /// A power of two of them (one to begin with); an id's shard is its hash's top bits.
    shards: Vec<Vec<(K, V)>>,
    /// How many top bits of the hash choose the shard.
    bits: u32,
    len: usize,
}

impl<K, V> Default for IdMap<K, V> {
    fn default() -> Self {
        IdMap {
            shards: Vec::new(),
            bits: 0,
            len: 0,
        }
    }
}

impl<K: Id, V> IdMap<K, V> {
    pub fn new() -> Self {
        IdMap::default()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn clear(&mut self) {
        *self = IdMap::default();
    }

    fn shard_of(&self, id: &K) -> usize {
        match self.bits {
            0 => 0,
            b => (hash(id.bits()) >> (64 - b)) as usize,
        }
    }

    fn find(&self, id: &K) -> Option<(usize, Result<usize, usize>)> {
        let s = self.shard_of(id);
        let shard = self.shards.get(s)?;
        Some((s, shard.binary_search_by(|(k, _)| k.cmp(id))))
    }

    pub fn get(&self, id: &K) -> Option<&V> {
        match self.find(id)? {
            (s, Ok(i)) => Some(&self.shards[s][i].1),
            _ => None,
        }
    }

    pub fn get_mut(&mut self, id: &K) -> Option<&mut V> {
        match self.find(id)? {
            (s, Ok(i)) => Some(&mut self.shards[s][i].1),
            _ => None,
        }
    }

    pub fn contains_key(&self, id: &K) -> bool {
        self.get(id).is_some()
    }

    /// The entry of `id`, inserted as `make()` if missing.
    pub fn get_or_insert_with(&mut self, id: K, make: impl FnOnce() -> V) -> &mut V {
        if self.shards.is_empty() {
            self.shards.push(Vec::new());
        }
        let (s, i) = match self.find(&id) {
            Some((s, Ok(i))) => (s, i),
            Some((s, Err(i))) => {
                self.insert_new(s, i, id, make());
                match self.find(&id) {
                    Some((s, Ok(i))) => (s, i),
                    _ => (s, i), // not reached: it was just inserted
                }
            }
            None => (0, 0), // not reached: there is a shard
        };
        &mut self.shards[s][i].1
    }

    /// Inserts or replaces; returns the value replaced.
    pub fn insert(&mut self, id: K, value: V) -> Option<V> {
        if self.shards.is_empty() {
            self.shards.push(Vec::new());
        }
        match self.find(&id) {
            Some((s, Ok(i))) => Some(std::mem::replace(&mut self.shards[s][i].1, value)),
            Some((s, Err(i))) => {
                self.insert_new(s, i, id, value);
                None
            }
            None => None, // not reached: there is a shard
        }
    }

    fn insert_new(&mut self, s: usize, i: usize, id: K, value: V) {
        let shard = &mut self.shards[s];
        if shard.len() == shard.capacity() {
            shard.reserve_exact((shard.len() / 8).max(4));
        }
        shard.insert(i, (id, value));
        self.len += 1;
        if self.len > self.shards.len() * SHARD_TARGET {
            self.split();
        }
    }

    pub fn remove(&mut self, id: &K) -> Option<V> {
        let (s, Ok(i)) = self.find(id)? else {
            return None;
        };
        let shard = &mut self.shards[s];
        let (_, value) = shard.remove(i);
        if shard.capacity() > shard.len() + shard.len() / 4 + 8 {
            shard.shrink_to(shard.len() + shard.len() / 8 + 4);
        }
        self.len -= 1;
        Some(value)
    }

    /// Doubles the shards: each splits by the next bit of the hash, keeping its order.
    fn split(&mut self) {
        let bits = self.bits + 1;
        let old = std::mem::take(&mut self.shards);
        for shard in old {
            let ones = shard
                .iter()
                .filter(|(k, _)| (hash(k.bits()) >> (64 - bits)) & 1 == 1)
                .count();
            let mut zero = Vec::with_capacity(shard.len() - ones + 4);
            let mut one = Vec::with_capacity(ones + 4);
            for (k, v) in shard {
                if (hash(k.bits()) >> (64 - bits)) & 1 == 1 {
                    one.push((k, v));
                } else {
                    zero.push((k, v));
                }
            }
            self.shards.push(zero);
            self.shards.push(one);
        }
        self.bits = bits;
    }

    pub fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flatten().map(|(k, v)| (k, v))
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.iter().map(|(k, _)| k)
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.iter().map(|(_, v)| v)
    }

    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut V> {
        self.shards.iter_mut().flatten().map(|(_, v)| v)
    }

    /// Builds a map from entries in any order (the last of a repeated id wins), sorting each
    /// shard once instead of inserting one by one.
    fn from_entries(entries: Vec<(K, V)>) -> Self {
        let mut bits = 0;
        while entries.len() > (SHARD_TARGET << bits) {
            bits += 1;
        }
        let mut map = IdMap {
            shards: Vec::new(),
            bits,
            len: 0,
        };
        let mut counts = vec![0usize; 1 << bits];
        for (k, _) in &entries {
            counts[map.shard_of(k)] += 1;
        }
        map.shards = counts.iter().map(|n| Vec::with_capacity(*n)).collect();
        for (k, v) in entries {
            let s = map.shard_of(&k);
            map.shards[s].push((k, v));
        }
        for shard in &mut map.shards {
            // Stable: of equal ids the later comes later, and dedup keeps the first, so
            // reverse first to keep the last.
            shard.reverse();
            shard.sort_by_key(|e| e.0);
            shard.dedup_by(|a, b| a.0 == b.0);
            map.len += shard.len();
        }
        map
    }
}

impl<'a, K: Id, V> IntoIterator for &'a IdMap<K, V> {
    type Item = (&'a K, &'a V);
    type IntoIter = Box<dyn Iterator<Item = (&'a K, &'a V)> + 'a>;

    fn into_iter(self) -> Self::IntoIter {
        Box::new(self.iter())
    }
}

/// Written and read as a map, like the `HashMap` it replaced in snapshots.
impl<K: Id + Serialize, V: Serialize> Serialize for IdMap<K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de, K: Id + Deserialize<'de>, V: Deserialize<'de>> Deserialize<'de> for IdMap<K, V> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Entries<K, V>(PhantomData<(K, V)>);
        impl<'de, K: Id + Deserialize<'de>, V: Deserialize<'de>> Visitor<'de> for Entries<K, V> {
            type Value = IdMap<K, V>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of ids")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::with_capacity(m.size_hint().unwrap_or(0).min(1 << 20));
                while let Some(e) = m.next_entry::<K, V>()? {
                    entries.push(e);
                }
                Ok(IdMap::from_entries(entries))
            }
        }
        d.deserialize_map(Entries(PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    #[derive(Clone, Debug)]
    enum Op {
        Insert(u128, u32),
        Remove(u128),
        Bump(u128),
    }

    fn op() -> impl Strategy<Value = Op> {
        // Few distinct ids so that operations meet; some large, some small.
        let id = prop_oneof![0u128..300, (0u128..300).prop_map(|n| n << 100 | n)];
        prop_oneof![
            3 => (id.clone(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            2 => id.clone().prop_map(Op::Remove),
            1 => id.prop_map(Op::Bump),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_map(ops in proptest::collection::vec(op(), 0..3000)) {
            let mut m = IdMap::new();
            let mut model = BTreeMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => prop_assert_eq!(m.insert(k, v), model.insert(k, v)),
                    Op::Remove(k) => prop_assert_eq!(m.remove(&k), model.remove(&k)),
                    Op::Bump(k) => {
                        *m.get_or_insert_with(k, || 7) += 1;
                        *model.entry(k).or_insert(7) += 1;
                    }
                }
                prop_assert_eq!(m.len(), model.len());
            }
            let mut got: Vec<(u128, u32)> = m.iter().map(|(k, v)| (*k, *v)).collect();
            got.sort();
            let want: Vec<(u128, u32)> = model.iter().map(|(k, v)| (*k, *v)).collect();
            prop_assert_eq!(&got, &want);
            for (k, v) in &model {
                prop_assert_eq!(m.get(k), Some(v));
            }
            let json = serde_json::to_string(&m).unwrap_or_default();
            let back: IdMap<u128, u32> = serde_json::from_str(&json).unwrap_or_default();
            let mut again: Vec<(u128, u32)> = back.iter().map(|(k, v)| (*k, *v)).collect();
            again.sort();
            prop_assert_eq!(again, want);
        }
    }

    #[test]
    fn many_ids_split_into_shards_and_cost_little_beyond_their_entries() {
        let mut m = IdMap::new();
        for i in 0..100_000u128 {
            m.insert(
                ChunkId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)),
                i as u64,
            );
        }
        assert_eq!(m.len(), 100_000);
        assert!(m.shards.len() >= 100_000 / SHARD_TARGET / 2);
        let slots: usize = m.shards.iter().map(Vec::capacity).sum();
        assert!(slots < 100_000 * 9 / 8, "{slots} slots for 100,000 entries");
        for i in (0..100_000u128).step_by(7) {
            let id = ChunkId(i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835));
            assert_eq!(m.get(&id), Some(&(i as u64)));
        }
        // Keys given as strings in a JSON map (chunk ids are hex) come back whole.
        let json = serde_json::to_string(&m).unwrap_or_default();
        let back: IdMap<ChunkId, u64> = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back.len(), 100_000);
        assert_eq!(back.shards.len(), m.shards.len());
        // Repeated ids in a map that was written by hand: the last wins.
        let back: IdMap<u128, u32> =
            serde_json::from_str(r#"{"5":1,"6":2,"5":3}"#).unwrap_or_default();
        assert_eq!((back.len(), back.get(&5)), (2, Some(&3)));
    }
}
