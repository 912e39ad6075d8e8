//! The objects themselves, stored densely by slot.
//!
//! An R-tree entry carries its object's slot, so a query reaches the object with an index
//! into a `Vec` instead of a hash look-up: taking `&slots[slot]` reads no memory, where a
//! hash probe of a million-object map costs a cache miss per hit. The id → slot map is only
//! used for look-ups by id (get, move, remove).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::coord::{Position, Timestamp};
use crate::object::{Attributes, Object, ObjectId, Responder};

/// Hashes object ids with one multiply and a fold: ids are trusted (the store assigns
/// them), so SipHash's flooding resistance buys nothing on this hot path.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, x: u64) {
        let h = (self.0 ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.0 = h ^ (h >> 29);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// Map keyed by object id.
pub(crate) type IdMap<V> = HashMap<ObjectId, V, BuildHasherDefault<IdHasher>>;

/// A slot number: the object's place in [`Slab`].
pub(crate) type Slot = u32;

/// Objects by slot, with an id → slot map and a free list.
///
/// Invariant: a slot is live exactly when `by_id` maps some id to it; a free slot holds a
/// placeholder object (no allocation) and is on `free`. The index only ever hands out
/// slots of live objects (the R-tree holds entries of live objects only).
#[derive(Debug, Default)]
pub(crate) struct Slab {
    slots: Vec<Object>,
    by_id: IdMap<Slot>,
    free: Vec<Slot>,
}

impl Slab {
    pub(crate) fn len(&self) -> usize {
        self.by_id.len()
    }

    pub(crate) fn contains(&self, id: ObjectId) -> bool {
        self.by_id.contains_key(&id)
    }

    pub(crate) fn get(&self, id: ObjectId) -> Option<&Object> {
        self.by_id.get(&id).map(|&s| self.at(s))
    }

    /// The slot and the object with this id, for in-place changes.
    pub(crate) fn get_mut(&mut self, id: ObjectId) -> Option<(Slot, &mut Object)> {
        let s = *self.by_id.get(&id)?;
        Some((s, &mut self.slots[s as usize]))
    }

    /// The object in a live slot (from an R-tree entry).
    pub(crate) fn at(&self, slot: Slot) -> &Object {
        &self.slots[slot as usize]
    }

    /// Stores an object whose id is not present and returns its slot.
    pub(crate) fn insert(&mut self, object: Object) -> Slot {
        debug_assert!(!self.by_id.contains_key(&object.id));
        let id = object.id;
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = object;
                s
            }
            None => {
                // A slab of 2³² objects would need hundreds of GiB: the conversion cannot
                // fail on a machine that holds the slab.
                let s = Slot::try_from(self.slots.len()).expect("fewer than 2^32 objects");
                self.slots.push(object);
                s
            }
        };
        self.by_id.insert(id, slot);
        slot
    }

    /// Takes an object out; its slot becomes free.
    pub(crate) fn remove(&mut self, id: ObjectId) -> Option<(Slot, Object)> {
        let s = self.by_id.remove(&id)?;
        let object = std::mem::replace(&mut self.slots[s as usize], vacant());
        self.free.push(s);
        Some((s, object))
    }

    /// Every live object, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Object> {
        self.by_id.values().map(|&s| self.at(s))
    }
}

/// What a free slot holds: built without allocating, never handed out.
fn vacant() -> Object {
    Object::point(
        ObjectId(u64::MAX),
        Position::clamped(0.0, 0.0),
        Attributes::Responder(Responder {
            role: String::new(),
            updated_at: Timestamp(0),
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(id: u64) -> Object {
        Object::point(
            ObjectId(id),
            Position::clamped(1.0, 2.0),
            Attributes::Responder(Responder {
                role: "medic".into(),
                updated_at: Timestamp(0),
            }),
        )
    }

    #[test]
    fn freed_slots_are_reused_and_ids_follow_their_object() {
        let mut slab = Slab::default();
        let a = slab.insert(object(10));
        let b = slab.insert(object(11));
        assert_ne!(a, b);
        assert_eq!(
            slab.remove(ObjectId(10)).map(|(s, o)| (s, o.id)),
            Some((a, ObjectId(10)))
        );
        assert!(slab.get(ObjectId(10)).is_none());
        let c = slab.insert(object(12));
        assert_eq!(c, a, "the freed slot is reused");
        assert_eq!(slab.at(c).id, ObjectId(12));
        assert_eq!(slab.get(ObjectId(11)).map(|o| o.id), Some(ObjectId(11)));
        let mut ids: Vec<_> = slab.iter().map(|o| o.id.0).collect();
        ids.sort_unstable();
        assert_eq!(ids, vec![11, 12]);
        assert_eq!(slab.len(), 2);
    }
}
