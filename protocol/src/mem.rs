//! Estimates of the heap bytes a parser holds, for the `heap_bytes` of each connection type
//! (the agent's memory budget). Figures come from capacities (what is allocated, not what is
//! used) and `size_of`; allocator overhead is not counted. Nothing here allocates.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::mem::size_of;

/// The buffer of a `Vec`.
pub(crate) fn vec<T>(v: &Vec<T>) -> usize {
    v.capacity() * size_of::<T>()
}

/// The ring buffer of a `VecDeque`.
pub(crate) fn deque<T>(v: &VecDeque<T>) -> usize {
    v.capacity() * size_of::<T>()
}

/// A string's buffer, if there is one.
pub(crate) fn opt_string(s: Option<&String>) -> usize {
    s.map_or(0, String::capacity)
}

/// The table of a `HashMap` (its slots and one control byte each, at the 7/8 load factor),
/// without what keys and values own.
pub(crate) fn hash_map<K, V, S>(m: &HashMap<K, V, S>) -> usize {
    m.capacity() * (size_of::<(K, V)>() + 1) * 8 / 7
}

/// The nodes of a `BTreeMap` (between half full and full: counted as 1.5 times the entries),
/// without what keys and values own.
pub(crate) fn btree_map<K, V>(m: &BTreeMap<K, V>) -> usize {
    m.len() * (size_of::<K>() + size_of::<V>()) * 3 / 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_follow_capacities() {
        let v: Vec<u32> = Vec::with_capacity(10);
        assert_eq!(vec(&v), 40);
        assert_eq!(deque(&VecDeque::<u64>::new()), 0);
        assert_eq!(opt_string(Some(&String::with_capacity(7))), 7);
        assert_eq!(opt_string(None), 0);
        let mut m: HashMap<u32, u32> = HashMap::new();
        assert_eq!(hash_map(&m), 0);
        m.insert(1, 2);
        assert!(hash_map(&m) >= m.capacity() * 9);
        let mut b = BTreeMap::new();
        b.insert(1u32, 2u32);
        assert_eq!(btree_map(&b), 12);
    }
}
