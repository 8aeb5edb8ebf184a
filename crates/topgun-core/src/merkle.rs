//! The Merkle tree TopGun uses to find which keys differ between a client
//! and a server without sending them all.
//!
//! A map's keys sit in a hex prefix trie of depth [`DEPTH`] (3): a key's
//! path is the first three hex digits of `fnv1a(key)`. Each key contributes
//! an item hash `fnv1a("<key>:<millis>:<counter>:<nodeId>")` of its current
//! timestamp. A leaf's hash is [`combine`] of its items, an inner node's is
//! [`combine`] of its children; because `combine` is a sum of mixed hashes,
//! hashes do not depend on insertion order and every update is O(depth):
//! the old contribution is subtracted and the new one added on the way up.
//!
//! ```
//! use topgun_core::{merkle::MerkleTree, Timestamp};
//! let mut a = MerkleTree::new();
//! let mut b = MerkleTree::new();
//! a.update("k1", &Timestamp::new(1, 0, "n"));
//! a.update("k2", &Timestamp::new(2, 0, "n"));
//! b.update("k2", &Timestamp::new(2, 0, "n"));
//! b.update("k1", &Timestamp::new(1, 0, "n"));
//! assert_eq!(a.root_hash(), b.root_hash());
//! // Walk down to the one leaf that differs.
//! b.update("k1", &Timestamp::new(3, 0, "n"));
//! let path = MerkleTree::path_of("k1");
//! assert_ne!(a.hash_at(&path), b.hash_at(&path));
//! ```

use crate::hlc::Timestamp;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};

/// Depth of the tree: paths have this many hex digits at the leaves.
pub const DEPTH: usize = 3;

const FNV_OFFSET: u32 = 0x811c_9dc5;
const FNV_PRIME: u32 = 0x0100_0193;
/// Number of leaves: 16^[`DEPTH`].
pub const LEAVES: usize = 1 << (4 * DEPTH);

/// 32-bit FNV-1a over the string's UTF-16 code units (as JavaScript's
/// `charCodeAt` sees them), TopGun's string hash.
pub fn fnv1a(s: &str) -> u32 {
    fnv1a_more(FNV_OFFSET, s)
}

/// Continues an FNV-1a hash `h` over `s`, as if `s` followed what `h` hashed.
fn fnv1a_more(h: u32, s: &str) -> u32 {
    s.encode_utf16()
        .fold(h, |h, unit| (h ^ u32::from(unit)).wrapping_mul(FNV_PRIME))
}

/// Continues an FNV-1a hash over the decimal digits of `n` (ASCII digits
/// are one UTF-16 unit each).
fn fnv1a_decimal(h: u32, n: u64) -> u32 {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        // `n % 10` is a digit: the cast cannot truncate.
        #[allow(clippy::cast_possible_truncation)]
        let digit = (n % 10) as u8;
        digits[at] = b'0' + digit;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    digits[at..]
        .iter()
        .fold(h, |h, d| (h ^ u32::from(*d)).wrapping_mul(FNV_PRIME))
}

/// MurmurHash3's 32-bit finaliser (`fmix32`), applied to each hash before
/// summing so that sums of similar hashes do not cancel out.
pub fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^= h >> 16;
    h
}

/// Order-independent combination of hashes: the wrapping sum of [`mix`]ed
/// hashes. The empty combination is 0.
pub fn combine(hashes: impl IntoIterator<Item = u32>) -> u32 {
    hashes
        .into_iter()
        .fold(0u32, |acc, h| acc.wrapping_add(mix(h)))
}

/// The hash a record contributes: `fnv1a("<key>:<millis>:<counter>:<nodeId>")`.
pub fn item_hash(key: &str, timestamp: &Timestamp) -> u32 {
    item_hash_of(key, timestamp.millis, timestamp.counter, &timestamp.node_id)
}

/// [`item_hash`] of a timestamp given by its parts (a store reads them
/// without building a [`Timestamp`]).
pub fn item_hash_of(key: &str, millis: u64, counter: u32, node_id: &str) -> u32 {
    // The hash of "<key>:<millis>:<counter>:<nodeId>", without building it.
    let h = fnv1a_more(FNV_OFFSET, key);
    let h = fnv1a_more(h, ":");
    let h = fnv1a_decimal(h, millis);
    let h = fnv1a_more(h, ":");
    let h = fnv1a_decimal(h, u64::from(counter));
    let h = fnv1a_more(h, ":");
    fnv1a_more(h, node_id)
}

/// One leaf: key ids (see `MerkleTree::leaves`) in increasing order, and the item
/// hash of each at the same index (two arrays: 12 bytes per key).
#[derive(Debug, Clone, Default)]
struct Leaf {
    ids: Vec<u64>,
    hashes: Vec<u32>,
}

impl Leaf {
    /// Sets the item hash of `id`; returns the previous one.
    fn insert(&mut self, id: u64, hash: u32) -> Option<u32> {
        match self.ids.binary_search(&id) {
            Ok(at) => Some(std::mem::replace(&mut self.hashes[at], hash)),
            Err(at) => {
                self.ids.insert(at, id);
                self.hashes.insert(at, hash);
                None
            }
        }
    }

    /// Removes `id`; returns its item hash.
    fn remove(&mut self, id: u64) -> Option<u32> {
        let at = self.ids.binary_search(&id).ok()?;
        self.ids.remove(at);
        Some(self.hashes.remove(at))
    }

    fn contains(&self, id: u64) -> bool {
        self.ids.binary_search(&id).is_ok()
    }

    fn get(&self, id: u64) -> Option<u32> {
        let at = self.ids.binary_search(&id).ok()?;
        Some(self.hashes[at])
    }

    #[cfg(test)]
    fn hashes(&self) -> impl Iterator<Item = u32> + '_ {
        self.hashes.iter().copied()
    }
}

/// Index of the leaf a key routes to: the first [`DEPTH`] hex digits of
/// `fnv1a(key)`, read as a number.
fn leaf_index(key: &str) -> usize {
    (fnv1a(key) >> (32 - 4 * DEPTH)) as usize
}

/// Parses a path of up to [`DEPTH`] lower-case hex digits into
/// `(level, index within level)`. `None` for anything else.
fn parse_path(path: &str) -> Option<(usize, usize)> {
    if path.len() > DEPTH {
        return None;
    }
    let mut index = 0usize;
    for c in path.chars() {
        let d = match c {
            '0'..='9' | 'a'..='f' => c.to_digit(16)?,
            _ => return None,
        };
        index = index * 16 + d as usize;
    }
    Some((path.len(), index))
}

fn hex(d: usize) -> char {
    char::from_digit(d as u32, 16).unwrap_or('0')
}

/// The inner levels above `leaves` (each node the [`combine`] of its 16
/// children), with the leaves as the last level.
fn levels_over(leaves: Vec<u32>) -> Vec<Vec<u32>> {
    let mut levels: Vec<Vec<u32>> = (0..DEPTH).map(|l| vec![0u32; 1 << (4 * l)]).collect();
    levels.push(leaves);
    for level in (0..DEPTH).rev() {
        let (upper, lower) = levels.split_at_mut(level + 1);
        for (index, slot) in upper[level].iter_mut().enumerate() {
            *slot = combine(lower[0][index * 16..index * 16 + 16].iter().copied());
        }
    }
    levels
}

/// The hash at `path` in `levels` (see [`MerkleTree::hash_at`]).
fn hash_in(levels: &[Vec<u32>], path: &str) -> Option<u32> {
    let (level, index) = parse_path(path)?;
    Some(levels[level][index])
}

/// The non-empty children at `path` in `levels` (see
/// [`MerkleTree::buckets`]).
fn buckets_in(levels: &[Vec<u32>], path: &str) -> BTreeMap<char, u32> {
    match parse_path(path) {
        Some((level, index)) if level < DEPTH => levels[level + 1][index * 16..index * 16 + 16]
            .iter()
            .enumerate()
            .filter(|(_, h)| **h != 0)
            .map(|(d, h)| (hex(d), *h))
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// The hashes of a map's tree without its keys: each leaf's sum of mixed
/// item hashes (what a client's store keeps beside the records, in the
/// same transactions) and the levels above.
/// 16 KiB whatever the number of keys; it answers what a pull asks
/// (root, bucket and leaf hashes) but cannot be updated key by key — it
/// is read again from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MerkleSums {
    levels: Vec<Vec<u32>>,
}

impl Default for MerkleSums {
    fn default() -> Self {
        Self::from_leaves(vec![0; LEAVES])
    }
}

impl MerkleSums {
    /// The tree over these leaf sums ([`LEAVES`] of them; missing ones are
    /// 0, extra ones ignored).
    pub fn from_leaves(mut leaves: Vec<u32>) -> Self {
        leaves.resize(LEAVES, 0);
        Self {
            levels: levels_over(leaves),
        }
    }

    /// A key's contribution to its leaf's sum at `timestamp` (given by its
    /// parts), and that leaf's index: a store keeping sums subtracts the old
    /// contribution and adds the new one — sums commute, so the order of
    /// changes does not matter.
    pub fn contribution(key: &str, millis: u64, counter: u32, node_id: &str) -> (usize, u32) {
        (
            leaf_index(key),
            mix(item_hash_of(key, millis, counter, node_id)),
        )
    }

    /// Moves leaf `leaf` of `leaves` by `-sub + add` (wrapping), as a
    /// store does when a key's contribution changes.
    pub fn shift(leaves: &mut [u32], leaf: usize, sub: u32, add: u32) {
        if let Some(slot) = leaves.get_mut(leaf) {
            *slot = slot.wrapping_sub(sub).wrapping_add(add);
        }
    }

    /// The leaf sums.
    pub fn leaves(&self) -> &[u32] {
        &self.levels[DEPTH]
    }

    /// The root hash; 0 for an empty map.
    pub fn root_hash(&self) -> u32 {
        self.levels[0][0]
    }

    /// As [`MerkleTree::hash_at`].
    pub fn hash_at(&self, path: &str) -> Option<u32> {
        hash_in(&self.levels, path)
    }

    /// As [`MerkleTree::buckets`].
    pub fn buckets(&self, path: &str) -> BTreeMap<char, u32> {
        buckets_in(&self.levels, path)
    }
}

/// A Merkle tree over one map's keys and their timestamps, kept up to date
/// incrementally.
#[derive(Debug, Clone)]
pub struct MerkleTree {
    /// `levels[l][i]`: hash of the node at depth `l` with index `i`
    /// (`levels[0]` is the root, `levels[DEPTH]` the leaves).
    levels: Vec<Vec<u32>>,
    /// Per leaf: key ids and item hashes. A key's id is its 64-bit SipHash
    /// under this tree's random keys (`ids`), so the tree keeps 12 bytes per
    /// key, not the key. Two keys of one leaf with the same id would count
    /// as one: for a million keys the chance is about 10^-11, and the keys
    /// are secret to the process, so ids cannot be made to collide on
    /// purpose. Ids never leave the process; hashes on the wire come from
    /// [`item_hash`].
    leaves: Vec<Leaf>,
    ids: RandomState,
    len: usize,
}

impl Default for MerkleTree {
    fn default() -> Self {
        Self::new()
    }
}

impl MerkleTree {
    /// An empty tree (root hash 0).
    pub fn new() -> Self {
        let levels = (0..=DEPTH).map(|l| vec![0u32; 1 << (4 * l)]).collect();
        Self {
            levels,
            leaves: vec![Leaf::default(); LEAVES],
            ids: RandomState::new(),
            len: 0,
        }
    }

    /// The leaf path of a key: the first [`DEPTH`] lower-case hex digits of
    /// `fnv1a(key)`.
    pub fn path_of(key: &str) -> String {
        let mut s = format!("{:08x}", fnv1a(key));
        s.truncate(DEPTH);
        s
    }

    /// Number of keys in the tree.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the tree has no keys.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The root hash; 0 for an empty tree.
    pub fn root_hash(&self) -> u32 {
        self.levels[0][0]
    }

    /// Sets `key`'s timestamp (inserting the key if new); returns whether
    /// the key is new. A tombstone is a key like any other: pass its
    /// deletion timestamp.
    pub fn update(&mut self, key: &str, timestamp: &Timestamp) -> bool {
        let leaf = leaf_index(key);
        let new = item_hash(key, timestamp);
        let old = self.leaves[leaf].insert(self.ids.hash_one(key), new);
        if old.is_none() {
            self.len += 1;
        }
        self.propagate(leaf, old, Some(new));
        old.is_none()
    }

    /// Removes `key`; returns whether it was present. The hashes return to
    /// what they were before the key was inserted.
    pub fn remove(&mut self, key: &str) -> bool {
        let leaf = leaf_index(key);
        match self.leaves[leaf].remove(self.ids.hash_one(key)) {
            Some(old) => {
                self.len -= 1;
                self.propagate(leaf, Some(old), None);
                true
            }
            None => false,
        }
    }

    /// Replaces item hash `old` by `new` in leaf `leaf` and walks the change
    /// up to the root: at each level the child's old mixed hash is
    /// subtracted from its parent and the new one added.
    fn propagate(&mut self, leaf: usize, old: Option<u32>, new: Option<u32>) {
        let mut index = leaf;
        let mut delta_old = old.map_or(0, mix);
        let mut delta_new = new.map_or(0, mix);
        for level in (0..=DEPTH).rev() {
            let slot = &mut self.levels[level][index];
            let before = *slot;
            *slot = slot.wrapping_sub(delta_old).wrapping_add(delta_new);
            delta_old = mix(before);
            delta_new = mix(*slot);
            index >>= 4;
        }
    }

    /// The hash of the node at `path` (0 to [`DEPTH`] hex digits; `""` is
    /// the root). An empty node hashes to 0; `None` for an invalid path.
    pub fn hash_at(&self, path: &str) -> Option<u32> {
        hash_in(&self.levels, path)
    }

    /// The non-empty children of the inner node at `path` (fewer than
    /// [`DEPTH`] digits), as (hex digit, hash). Empty for a leaf path, an
    /// invalid path or an empty node.
    pub fn buckets(&self, path: &str) -> BTreeMap<char, u32> {
        buckets_in(&self.levels, path)
    }

    /// Whether `key` is in the tree.
    pub fn contains(&self, key: &str) -> bool {
        self.leaves[leaf_index(key)].contains(self.ids.hash_one(key))
    }

    /// Whether `key` is in the tree at exactly `timestamp` (an
    /// [`update`](Self::update) with it would change nothing).
    pub fn holds(&self, key: &str, timestamp: &Timestamp) -> bool {
        self.leaves[leaf_index(key)].get(self.ids.hash_one(key)) == Some(item_hash(key, timestamp))
    }

    /// Builds a tree from many keys at once (see [`MerkleBuilder`]).
    pub fn builder() -> MerkleBuilder {
        MerkleBuilder {
            leaves: vec![Vec::new(); LEAVES],
            ids: RandomState::new(),
        }
    }

    /// The index (0 to 16^[`DEPTH`] − 1) of the leaf holding `key`: the
    /// number its [`path_of`](Self::path_of) spells in hex.
    pub fn leaf_of(key: &str) -> usize {
        leaf_index(key)
    }

    /// The index of the leaf at `path`; `None` unless `path` is [`DEPTH`]
    /// lower-case hex digits.
    pub fn leaf_at(path: &str) -> Option<usize> {
        match parse_path(path) {
            Some((DEPTH, index)) => Some(index),
            _ => None,
        }
    }
}

/// Builds a [`MerkleTree`] from many keys: collects them, then sorts each
/// leaf once and sums the levels bottom-up. Inserting keys one by one into
/// sorted leaves shifts each leaf's arrays per key, which made building a
/// million-key tree (at every start of a server or a client) cost twice as
/// much. The result is the tree the same [`MerkleTree::update`]s would give.
#[derive(Debug)]
pub struct MerkleBuilder {
    /// Per leaf: (key id, item hash), in the order added.
    leaves: Vec<Vec<(u64, u32)>>,
    ids: RandomState,
}

impl MerkleBuilder {
    /// Adds `key` at `timestamp`; a key added again keeps its last
    /// timestamp.
    pub fn add(&mut self, key: &str, timestamp: &Timestamp) {
        self.leaves[leaf_index(key)].push((self.ids.hash_one(key), item_hash(key, timestamp)));
    }

    /// The tree of every key added.
    pub fn finish(self) -> MerkleTree {
        let mut sums = vec![0u32; LEAVES];
        let mut leaves = Vec::with_capacity(LEAVES);
        let mut len = 0;
        for (index, mut items) in self.leaves.into_iter().enumerate() {
            // Stable: of a key's entries, the last added comes last.
            items.sort_by_key(|&(id, _)| id);
            let mut leaf = Leaf {
                ids: Vec::with_capacity(items.len()),
                hashes: Vec::with_capacity(items.len()),
            };
            let mut sum = 0u32;
            for (at, &(id, hash)) in items.iter().enumerate() {
                if items.get(at + 1).is_some_and(|next| next.0 == id) {
                    continue;
                }
                leaf.ids.push(id);
                leaf.hashes.push(hash);
                sum = sum.wrapping_add(mix(hash));
            }
            len += leaf.ids.len();
            sums[index] = sum;
            leaves.push(leaf);
        }
        MerkleTree {
            levels: levels_over(sums),
            leaves,
            ids: self.ids,
            len,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ts(millis: u64, counter: u32, node: &str) -> Timestamp {
        Timestamp::new(millis, counter, node)
    }

    proptest! {
        /// `item_hash` hashes exactly the string the reference spells.
        #[test]
        fn item_hash_is_the_hash_of_its_string(
            key in "\\PC{0,12}",
            millis in any::<u64>(),
            counter in any::<u32>(),
            node in "\\PC{1,8}",
        ) {
            let t = ts(millis, counter, &node);
            prop_assert_eq!(item_hash(&key, &t), fnv1a(&format!("{key}:{t}")));
        }
    }

    #[test]
    fn update_says_whether_the_key_is_new_and_remove_forgets_it() {
        let mut t = MerkleTree::new();
        assert!(t.update("k", &ts(1, 0, "n")));
        assert!(!t.update("k", &ts(2, 0, "n")), "a second update is not new");
        assert_eq!(t.len(), 1);
        assert!(t.contains("k"));
        assert!(t.remove("k"));
        assert!(!t.contains("k") && !t.remove("k"));
        assert!(t.is_empty());
        assert!(t.update("k", &ts(3, 0, "n")), "new again after removal");
        assert!(t.holds("k", &ts(3, 0, "n")));
        assert!(!t.holds("k", &ts(2, 0, "n")) && !t.holds("other", &ts(3, 0, "n")));
    }

    #[test]
    fn known_values_from_the_reference() {
        assert_eq!(fnv1a(""), 2_166_136_261);
        assert_eq!(fnv1a("hello"), 1_335_831_723);
        assert_eq!(fnv1a("key1"), 927_623_783);
        assert_eq!(fnv1a("key1:100:0:test"), 3_988_528_110);
        assert_eq!(item_hash("key1", &ts(100, 0, "test")), 3_988_528_110);
        assert_eq!(combine([0x64, 0xc8]), 0xbc1d_ab1c);
        assert_eq!(combine([]), 0);
        assert_eq!(mix(0), 0);
    }

    #[test]
    fn fnv_hashes_utf16_units_not_bytes() {
        // 'é' is one UTF-16 unit (0xE9) but two UTF-8 bytes.
        let by_unit = (FNV_OFFSET ^ 0xE9).wrapping_mul(FNV_PRIME);
        assert_eq!(fnv1a("é"), by_unit);
        // An astral character is two surrogate units.
        let s = "😀";
        let expected = [0xD83Du32, 0xDE00]
            .iter()
            .fold(FNV_OFFSET, |h, u| (h ^ u).wrapping_mul(FNV_PRIME));
        assert_eq!(fnv1a(s), expected);
    }

    #[test]
    fn path_is_the_first_three_hex_digits() {
        // fnv1a("key1") = 927623783 = 0x374a_a067
        assert_eq!(MerkleTree::path_of("key1"), "374");
        let mut t = MerkleTree::new();
        t.update("key1", &ts(100, 0, "test"));
        let leaf = 3_988_528_110u32;
        assert_eq!(t.hash_at("374"), Some(mix(leaf)));
        assert_eq!(t.hash_at("37"), Some(mix(mix(leaf))));
        assert_eq!(t.hash_at("3"), Some(mix(mix(mix(leaf)))));
        assert_eq!(t.root_hash(), mix(mix(mix(mix(leaf)))));
        assert_eq!(
            t.buckets(""),
            BTreeMap::from([('3', t.hash_at("3").unwrap())])
        );
        assert_eq!(
            t.buckets("37"),
            BTreeMap::from([('4', t.hash_at("374").unwrap())])
        );
        assert!(t.buckets("374").is_empty(), "a leaf has no buckets");
        assert!(t.contains("key1") && !t.contains("key2"));
        assert_eq!(
            MerkleTree::leaf_at("374"),
            Some(MerkleTree::leaf_of("key1"))
        );
        assert_eq!(MerkleTree::leaf_at("37"), None);
        assert_eq!(t.hash_at("xyz"), None);
        assert_eq!(t.hash_at("3741"), None);
        assert_eq!(t.hash_at("37A"), None, "paths are lower-case");
    }

    #[test]
    fn hashes_match_a_from_scratch_computation() {
        let mut t = MerkleTree::new();
        let keys: Vec<String> = (0..500).map(|i| format!("user-{i}")).collect();
        for (i, k) in keys.iter().enumerate() {
            t.update(k, &ts(i as u64, 0, "n"));
        }
        for k in keys.iter().step_by(3) {
            t.update(k, &ts(9_999, 1, "m"));
        }
        // Recompute every level from the leaves with `combine`.
        let leaf_hash = |i: usize| combine(t.leaves[i].hashes());
        let mut level: Vec<u32> = (0..LEAVES).map(leaf_hash).collect();
        assert_eq!(level, t.levels[DEPTH]);
        for depth in (0..DEPTH).rev() {
            level = level
                .chunks(16)
                .map(|c| combine(c.iter().copied()))
                .collect();
            assert_eq!(level, t.levels[depth], "level {depth}");
        }
    }

    #[test]
    fn remove_restores_the_previous_hashes() {
        let mut t = MerkleTree::new();
        for i in 0..100 {
            t.update(&format!("k{i}"), &ts(i, 0, "n"));
        }
        let before = t.clone();
        t.update("extra", &ts(5, 5, "x"));
        assert_ne!(t.root_hash(), before.root_hash());
        assert!(t.remove("extra"));
        assert!(!t.remove("extra"));
        assert_eq!(t.root_hash(), before.root_hash());
        assert_eq!(t.levels, before.levels);
        assert_eq!(t.len(), 100);
        for i in 0..100 {
            t.remove(&format!("k{i}"));
        }
        assert_eq!(t.root_hash(), 0);
        assert!(t.is_empty());
    }

    #[test]
    fn builds_100k_keys_quickly() {
        let start = std::time::Instant::now();
        let mut t = MerkleTree::new();
        let stamp = ts(1_700_000_000_000, 0, "node");
        for i in 0..100_000 {
            t.update(&format!("key-{i}"), &stamp);
        }
        let took = start.elapsed();
        assert_eq!(t.len(), 100_000);
        // The benchmark measures this precisely; here we only guard against
        // an accidental quadratic (this is an unoptimised test build).
        assert!(took.as_secs_f64() < 5.0, "100k keys took {took:?}");
    }

    proptest! {
        #[test]
        fn hashes_do_not_depend_on_insertion_order(
            (entries, shuffled) in prop::collection::btree_map("[a-z0-9é😀]{0,8}", (0u64..1000, 0u32..4), 0..60)
                .prop_map(|m| m.into_iter().collect::<Vec<_>>())
                .prop_flat_map(|v| (Just(v.clone()), Just(v).prop_shuffle()))
        ) {
            let mut a = MerkleTree::new();
            let mut b = MerkleTree::new();
            for (k, (m, c)) in &entries { a.update(k, &ts(*m, *c, "n")); }
            for (k, (m, c)) in &shuffled { b.update(k, &ts(*m, *c, "n")); }
            prop_assert_eq!(a.root_hash(), b.root_hash());
            prop_assert_eq!(&a.levels, &b.levels);
            // Overwriting with an older version then the final one converges too.
            for (k, (m, c)) in &shuffled { b.update(k, &ts(m + 1, *c, "n")); b.update(k, &ts(*m, *c, "n")); }
            prop_assert_eq!(a.root_hash(), b.root_hash());
        }
    }

    proptest! {
        /// A built tree is the tree of the same updates one by one: same
        /// hashes at every level, same keys, same leaf contents.
        #[test]
        fn a_built_tree_equals_one_updated_key_by_key(
            updates in prop::collection::vec(("[a-z0-9]{0,3}", 0u64..50, 0u32..3), 0..300)
        ) {
            let mut one_by_one = MerkleTree::new();
            let mut builder = MerkleTree::builder();
            for (k, m, c) in &updates {
                one_by_one.update(k, &ts(*m, *c, "n"));
                builder.add(k, &ts(*m, *c, "n"));
            }
            let built = builder.finish();
            prop_assert_eq!(&built.levels, &one_by_one.levels);
            prop_assert_eq!(built.len(), one_by_one.len());
            for (k, _, _) in &updates {
                prop_assert!(built.contains(k));
            }
            for (a, b) in built.leaves.iter().zip(&one_by_one.leaves) {
                prop_assert_eq!(a.ids.len(), b.ids.len());
                let sum = |l: &Leaf| l.hashes().fold(0u32, |s, h| s.wrapping_add(mix(h)));
                prop_assert_eq!(sum(a), sum(b));
            }
        }
    }

    proptest! {
        /// Sums from contributions give the tree's hashes.
        #[test]
        fn sums_of_contributions_give_the_tree_hashes(
            entries in prop::collection::btree_map("[a-z0-9]{0,4}", (0u64..50, 0u32..3), 0..200)
        ) {
            let mut tree = MerkleTree::new();
            let mut leaves = vec![0u32; LEAVES];
            for (k, (m, c)) in &entries {
                tree.update(k, &ts(*m, *c, "n"));
                let (leaf, add) = MerkleSums::contribution(k, *m, *c, "n");
                leaves[leaf] = leaves[leaf].wrapping_add(add);
            }
            let sums = MerkleSums::from_leaves(leaves);
            prop_assert_eq!(&sums.levels, &tree.levels);
            prop_assert_eq!(sums.root_hash(), tree.root_hash());
            prop_assert_eq!(sums.buckets("a"), tree.buckets("a"));
        }
    }
}
