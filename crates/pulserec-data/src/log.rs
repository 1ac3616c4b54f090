//! The raw interaction log every loader fills, before ids are remapped into a [`Dataset`].
//!
//! [`Dataset`]: crate::Dataset

use rustc_hash::FxHashMap;

/// Maps raw string ids to dense indices in order of first appearance.
#[derive(Clone, Debug, Default)]
pub(crate) struct Interner {
    map: FxHashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    /// The index of `name`, adding it when new; the flag says whether it was new.
    pub fn intern(&mut self, name: &str) -> (u32, bool) {
        if let Some(&i) = self.map.get(name) {
            return (i, false);
        }
        // Data sets beyond 4 billion ids are out of scope for this crate.
        let i = self.names.len() as u32;
        let boxed: Box<str> = name.into();
        self.map.insert(boxed.clone(), i);
        self.names.push(boxed);
        (i, true)
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.map.get(name).copied()
    }

    pub fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }

    pub fn len(&self) -> usize {
        self.names.len()
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
