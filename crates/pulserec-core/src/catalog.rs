//! The item catalogue: raw ids and text for every dense item id.

use serde::{Deserialize, Serialize};

use crate::ids::ItemId;

/// Text and raw ids of all items, indexed by [`ItemId`].
///
/// Slot 0 belongs to [`ItemId::PAD`] and holds empty strings, so `titles[id.index()]` works for
/// every real id without an offset.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    raw_ids: Vec<String>,
    titles: Vec<String>,
    descriptions: Vec<String>,
}

impl Catalog {
    /// An empty catalogue (only the padding slot).
    pub fn new() -> Self {
        Self {
            raw_ids: vec![String::new()],
            titles: vec![String::new()],
            descriptions: vec![String::new()],
        }
    }

    /// Appends an item and returns its dense id (1, 2, ... in call order).
    pub fn push(&mut self, raw_id: String, title: String, description: String) -> ItemId {
        self.raw_ids.push(raw_id);
        self.titles.push(title);
        self.descriptions.push(description);
        // Catalogues beyond u32::MAX items are out of scope; the data layer checks counts.
        ItemId((self.raw_ids.len() - 1) as u32)
    }

    /// Number of real items (the padding slot excluded).
    pub fn len(&self) -> usize {
        self.raw_ids.len().saturating_sub(1)
    }

    /// Whether the catalogue holds no real item.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The item's title, or `None` for the padding id or an id out of range.
    pub fn title(&self, id: ItemId) -> Option<&str> {
        (!id.is_pad()).then(|| self.titles.get(id.index()).map(String::as_str))?
    }

    /// The item's longer text (description, genres, categories), possibly empty.
    pub fn description(&self, id: ItemId) -> Option<&str> {
        (!id.is_pad()).then(|| self.descriptions.get(id.index()).map(String::as_str))?
    }

    /// The id the item had in the source files.
    pub fn raw_id(&self, id: ItemId) -> Option<&str> {
        (!id.is_pad()).then(|| self.raw_ids.get(id.index()).map(String::as_str))?
    }

    /// Iterates over `(id, raw id, title)` for every real item.
    pub fn iter(&self) -> impl Iterator<Item = (ItemId, &str, &str)> {
        self.raw_ids
            .iter()
            .zip(&self.titles)
            .enumerate()
            .skip(1)
            .map(|(i, (r, t))| (ItemId(i as u32), r.as_str(), t.as_str()))
    }

    /// All titles including the padding slot at index 0.
    pub fn titles(&self) -> &[String] {
        &self.titles
    }

    /// All descriptions including the padding slot at index 0.
    pub fn descriptions(&self) -> &[String] {
        &self.descriptions
    }

    /// All raw ids including the padding slot at index 0.
    pub fn raw_ids(&self) -> &[String] {
        &self.raw_ids
    }
}
