//! Stream ids of one backend connection and what each in-flight one is for.
//!
//! Every request the proxy sends upstream, the client's and its own (handshake, re-prepare),
//! takes an id from here, so they can never collide. Ids are handed out lowest first and the
//! table grows only as far as the connection's peak concurrency, which keeps idle connections
//! small. An id whose request timed out stays taken until its late answer arrives or the
//! connection closes: reusing it earlier could pair a late answer with the wrong request.

use crate::frame::StreamId;

/// The highest stream id a v3+ connection may use.
pub(crate) const MAX_STREAM: i16 = i16::MAX;

#[derive(Debug)]
pub(crate) struct StreamTable<T> {
    slots: Vec<Option<T>>,
    free: Vec<i16>,
    in_use: usize,
}

impl<T> Default for StreamTable<T> {
    fn default() -> Self {
        Self {
            slots: Vec::new(),
            free: Vec::new(),
            in_use: 0,
        }
    }
}

impl<T> StreamTable<T> {
    /// Takes a free id for `value`, or gives the value back when all 32768 are in flight.
    pub(crate) fn insert(&mut self, value: T) -> Result<StreamId, T> {
        let id = match self.free.pop() {
            Some(id) => id,
            None if self.slots.len() <= MAX_STREAM as usize => {
                self.slots.push(None);
                (self.slots.len() - 1) as i16
            }
            None => return Err(value),
        };
        self.slots[id as usize] = Some(value);
        self.in_use += 1;
        Ok(StreamId(id))
    }

    #[cfg(test)]
    pub(crate) fn get(&self, id: StreamId) -> Option<&T> {
        usize::try_from(id.0)
            .ok()
            .and_then(|i| self.slots.get(i))
            .and_then(Option::as_ref)
    }

    pub(crate) fn get_mut(&mut self, id: StreamId) -> Option<&mut T> {
        usize::try_from(id.0)
            .ok()
            .and_then(|i| self.slots.get_mut(i))
            .and_then(Option::as_mut)
    }

    /// The ids in flight and what each is for, lowest id first.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (StreamId, &T)> + '_ {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.as_ref().map(|v| (StreamId(i as i16), v)))
    }

    /// Frees `id`, returning what it was for.
    pub(crate) fn remove(&mut self, id: StreamId) -> Option<T> {
        let slot = usize::try_from(id.0)
            .ok()
            .and_then(|i| self.slots.get_mut(i))?;
        let value = slot.take()?;
        self.free.push(id.0);
        self.in_use -= 1;
        Some(value)
    }

    /// Whether every id is in flight: the next insert fails.
    pub(crate) fn is_full(&self) -> bool {
        self.free.is_empty() && self.slots.len() > MAX_STREAM as usize
    }

    /// Ids in flight.
    pub(crate) fn len(&self) -> usize {
        self.in_use
    }

    /// Empties the table (the connection closed), yielding every in-flight entry.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = (StreamId, T)> + '_ {
        self.free.clear();
        self.in_use = 0;
        self.slots
            .drain(..)
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (StreamId(i as i16), v)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_32768_ids_then_exhaustion() {
        let mut t = StreamTable::default();
        for i in 0..=MAX_STREAM {
            assert_eq!(t.insert(i), Ok(StreamId(i)));
        }
        assert_eq!(t.insert(-5), Err(-5));
        assert!(t.is_full());
        assert_eq!(t.len(), 32768);
        assert_eq!(t.remove(StreamId(1234)), Some(1234));
        assert!(!t.is_full());
        assert_eq!(t.insert(99), Ok(StreamId(1234)));
        assert_eq!(t.get(StreamId(1234)), Some(&99));
        assert_eq!(t.get(StreamId(-1)), None);
        assert_eq!(t.remove(StreamId(-1)), None);
    }

    #[test]
    fn drain_yields_in_flight_and_resets() {
        let mut t = StreamTable::default();
        let a = t.insert("a").unwrap();
        let b = t.insert("b").unwrap();
        t.remove(a);
        let left: Vec<_> = t.drain().collect();
        assert_eq!(left, vec![(b, "b")]);
        assert_eq!(t.len(), 0);
        assert_eq!(t.insert("c"), Ok(StreamId(0)));
    }
}
