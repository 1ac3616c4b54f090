//! The raw interaction log every loader fills, before ids are remapped into a [`Dataset`].
//!
//! [`Dataset`]: crate::Dataset

use rustc_hash::FxHashMap;

/// Maps raw string ids to dense indices in order of first appearance.
///
/// Most data sets use decimal integer ids; those (without sign or leading zeros, so the mapping
/// stays one-to-one with the text) are keyed by their value, which avoids hashing and comparing
/// strings on the hot path of loading: small values index a dense table directly, large ones a
/// hash map. Other ids go through a string map.
#[derive(Clone, Debug, Default)]
pub(crate) struct Interner {
    /// `dense[v]` is the index of id `v`, or `u32::MAX`.
    dense: Vec<u32>,
    numeric: FxHashMap<u64, u32>,
    text: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

/// Numeric ids below this use the dense table (at most 16 MiB of it).
const DENSE_LIMIT: u64 = 1 << 22;

/// The value of a canonical decimal id (`0`, `17`, never `017`, `+1` or `1.0`).
fn canonical_number(name: &str) -> Option<u64> {
    let b = name.as_bytes();
    if b.is_empty()
        || b.len() > 19
        || (b[0] == b'0' && b.len() > 1)
        || !b.iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    Some(
        b.iter()
            .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0')),
    )
}

impl Interner {
    /// The index of `name`, adding it when new; the flag says whether it was new.
    pub fn intern(&mut self, name: &str) -> (u32, bool) {
        // Data sets beyond 4 billion ids are out of scope for this crate.
        let next = self.names.len() as u32;
        let (i, new) = match canonical_number(name) {
            Some(v) if v < DENSE_LIMIT => {
                let v = v as usize;
                if v >= self.dense.len() {
                    self.dense
                        .resize((v + 1).max(self.dense.len() * 2), u32::MAX);
                }
                if self.dense[v] == u32::MAX {
                    self.dense[v] = next;
                }
                (self.dense[v], self.dense[v] == next)
            }
            Some(v) => {
                let e = self.numeric.entry(v).or_insert(next);
                (*e, *e == next)
            }
            None => match self.text.get(name) {
                Some(&i) => (i, false),
                None => {
                    self.text.insert(name.into(), next);
                    (next, true)
                }
            },
        };
        if new {
            self.names.push(name.into());
        }
        (i, new)
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        match canonical_number(name) {
            Some(v) if v < DENSE_LIMIT => self
                .dense
                .get(v as usize)
                .copied()
                .filter(|&i| i != u32::MAX),
            Some(v) => self.numeric.get(&v).copied(),
            None => self.text.get(name).copied(),
        }
    }

    pub fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_text_ids_never_collide() {
        let mut ids = Interner::default();
        assert_eq!(ids.intern("12"), (0, true));
        assert_eq!(ids.intern("012"), (1, true));
        assert_eq!(ids.intern("a"), (2, true));
        assert_eq!(ids.intern("12"), (0, false));
        assert_eq!(ids.get("012"), Some(1));
        assert_eq!(ids.get("+12"), None);
        assert_eq!(ids.name(1), "012");
        assert_eq!(canonical_number("99999999999999999999"), None);
        // Large numeric ids take the hash map.
        assert_eq!(ids.intern("99999999999"), (3, true));
        assert_eq!(ids.get("99999999999"), Some(3));
        assert_eq!(ids.get("7"), None);
    }
}

/// Interactions in file order, with the optional per-event fields the format had.
#[derive(Clone, Debug, Default)]
pub(crate) struct InteractionLog {
    pub users: Interner,
    pub items: Interner,
    pub user: Vec<u32>,
    pub item: Vec<u32>,
    pub rating: Option<Vec<f32>>,
    pub timestamp: Option<Vec<i64>>,
    pub review: Option<Vec<String>>,
}

impl InteractionLog {
    /// An empty log that will carry the given optional fields.
    pub fn new(ratings: bool, timestamps: bool, reviews: bool) -> Self {
        Self {
            rating: ratings.then(Vec::new),
            timestamp: timestamps.then(Vec::new),
            review: reviews.then(Vec::new),
            ..Self::default()
        }
    }

    /// Appends one event; optional fields the log does not carry are ignored.
    pub fn push(
        &mut self,
        user: &str,
        item: &str,
        rating: Option<f32>,
        timestamp: Option<i64>,
        review: Option<String>,
    ) {
        let (u, _) = self.users.intern(user);
        let (i, _) = self.items.intern(item);
        self.user.push(u);
        self.item.push(i);
        if let Some(r) = self.rating.as_mut() {
            r.push(rating.unwrap_or(f32::NAN));
        }
        if let Some(t) = self.timestamp.as_mut() {
            t.push(timestamp.unwrap_or(0));
        }
        if let Some(v) = self.review.as_mut() {
            v.push(review.unwrap_or_default());
        }
    }

    pub fn len(&self) -> usize {
        self.user.len()
    }
}

/// Item metadata read from an item/meta file, keyed by raw id in file order.
#[derive(Clone, Debug, Default)]
pub(crate) struct ItemTable {
    pub ids: Interner,
    pub titles: Vec<String>,
    pub descriptions: Vec<String>,
    /// Line of each item, for duplicate reports.
    pub lines: Vec<usize>,
}

impl ItemTable {
    /// The table, or [`DataError::Empty`] for `path` when it holds no item.
    pub fn non_empty(self, path: &std::path::Path) -> crate::error::Result<Self> {
        if self.titles.is_empty() {
            return Err(crate::error::DataError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(self)
    }

    /// Adds an item; returns the line it was first seen on when the id is a duplicate.
    pub fn insert(
        &mut self,
        id: &str,
        title: String,
        description: String,
        line: usize,
    ) -> Result<(), usize> {
        let (i, new) = self.ids.intern(id);
        if !new {
            return Err(self.lines[i as usize]);
        }
        self.titles.push(title);
        self.descriptions.push(description);
        self.lines.push(line);
        Ok(())
    }
}
