//! A prepared data set: the item catalogue and every user's chronological sequence.

use pulserec_core::text::clean_title;
use pulserec_core::{Catalog, Interaction, ItemId, Sequences, UserId};

use crate::error::{DataError, Result};
use crate::log::{InteractionLog, ItemTable};

/// Catalogue + per-user sequences with dense ids (items `1..=n`, 0 reserved for padding).
///
/// Users are numbered in order of first appearance in the interaction file; items in the order
/// of the item/meta file when there is one (items never interacted with are left out), otherwise
/// in order of first appearance. Within a user, events are sorted by timestamp with a stable
/// tie-break: equal timestamps keep their file order. Formats without timestamps keep file order.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// Titles and descriptions of every item.
    pub catalog: Catalog,
    /// Every user's events, oldest first.
    pub sequences: Sequences,
    /// The raw id of each user (index = `UserId`).
    pub user_ids: Vec<String>,
}

impl Dataset {
    /// Builds a data set from parts, checking that every item id is in the catalogue and that
    /// there is one raw id per user.
    pub fn from_parts(
        catalog: Catalog,
        sequences: Sequences,
        user_ids: Vec<String>,
    ) -> Result<Self> {
        if user_ids.len() != sequences.n_users() {
            return Err(DataError::Config {
                field: "user_ids",
                message: format!(
                    "{} raw user ids for {} users",
                    user_ids.len(),
                    sequences.n_users()
                ),
            });
        }
        let n_items = catalog.len();
        if let Some(bad) = sequences
            .items()
            .iter()
            .find(|i| i.is_pad() || i.index() > n_items)
        {
            return Err(DataError::Config {
                field: "sequences",
                message: format!("item id {} outside the catalogue of {n_items} items", bad.0),
            });
        }
        Ok(Self {
            catalog,
            sequences,
            user_ids,
        })
    }

    /// Builds a data set from interactions held in memory, with the same id remapping and
    /// chronological ordering as the file loaders. `items` gives `(raw id, title, description)`
    /// for the catalogue (may be empty: titles are then empty).
    ///
    /// An optional field (rating, timestamp, review) is kept when the first interaction has it,
    /// and must then be present on every interaction; ratings must be finite and non-negative.
    pub fn from_interactions(
        interactions: impl IntoIterator<Item = Interaction>,
        items: impl IntoIterator<Item = (String, String, String)>,
    ) -> Result<Self> {
        let record = |index, field, message: &str| DataError::Record {
            index,
            field,
            message: message.to_string(),
        };
        let mut log: Option<InteractionLog> = None;
        for (index, it) in interactions.into_iter().enumerate() {
            let log = log.get_or_insert_with(|| {
                InteractionLog::new(
                    it.rating.is_some(),
                    it.timestamp.is_some(),
                    it.review.is_some(),
                )
            });
            if it.user.trim().is_empty() {
                return Err(record(index, "user", "empty id"));
            }
            if it.item.trim().is_empty() {
                return Err(record(index, "item", "empty id"));
            }
            for (field, kept, present) in [
                ("rating", log.rating.is_some(), it.rating.is_some()),
                ("timestamp", log.timestamp.is_some(), it.timestamp.is_some()),
                ("review", log.review.is_some(), it.review.is_some()),
            ] {
                if kept && !present {
                    return Err(record(
                        index,
                        field,
                        "missing, but the first interaction has it",
                    ));
                }
            }
            if let Some(r) = it.rating.filter(|r| !r.is_finite() || *r < 0.0) {
                return Err(record(
                    index,
                    "rating",
                    &format!("must be finite and non-negative, got {r}"),
                ));
            }
            log.push(
                it.user.trim(),
                it.item.trim(),
                it.rating,
                it.timestamp,
                it.review,
            );
        }
        let log = log.ok_or(DataError::Config {
            field: "interactions",
            message: "no interaction given".into(),
        })?;
        let mut table = ItemTable::default();
        for (index, (id, title, desc)) in items.into_iter().enumerate() {
            if table.insert(id.trim(), title, desc, index).is_err() {
                return Err(record(index, "item id", &format!("duplicate id `{id}`")));
            }
        }
        let has_items = !table.titles.is_empty();
        build(log, has_items.then_some(table))
    }

    /// Number of users.
    pub fn n_users(&self) -> usize {
        self.sequences.n_users()
    }

    /// Number of items (padding excluded).
    pub fn n_items(&self) -> usize {
        self.catalog.len()
    }

    /// Number of interactions.
    pub fn n_interactions(&self) -> usize {
        self.sequences.n_interactions()
    }

    /// The raw id of a user.
    pub fn raw_user_id(&self, user: UserId) -> Option<&str> {
        self.user_ids.get(user.index()).map(String::as_str)
    }

    /// Appends the item feature `feature` to every title in parentheses, as MovieLens's own
    /// `u.item` writes "Usual Suspects, The (1995)" where RecBole's `ml-100k.item` keeps the year
    /// in a `release_year` column. The value is read from the descriptions the loaders write
    /// (`name: value; name: value`); items without it, or with it empty, keep their title.
    /// Returns how many titles changed; an error naming the feature when no item has it.
    ///
    /// ```
    /// use pulserec_core::{Interaction, ItemId};
    /// use pulserec_data::Dataset;
    ///
    /// let items = [
    ///     ("a".to_string(), "Heat".to_string(), "release_year: 1995; class: Crime".to_string()),
    ///     ("b".to_string(), "Alien".to_string(), "class: Horror".to_string()),
    /// ];
    /// let log = [Interaction::new("u", "a"), Interaction::new("u", "b")];
    /// let mut ds = Dataset::from_interactions(log, items).unwrap();
    /// assert_eq!(ds.append_feature_to_titles("release_year").unwrap(), 1);
    /// assert_eq!(ds.catalog.title(ItemId(1)), Some("Heat (1995)"));
    /// assert_eq!(ds.catalog.title(ItemId(2)), Some("Alien"));
    /// assert!(ds.append_feature_to_titles("director").is_err());
    /// ```
    pub fn append_feature_to_titles(&mut self, feature: &str) -> Result<usize> {
        let value_of = |description: &str| -> Option<String> {
            description.split("; ").find_map(|field| {
                let (name, value) = field.split_once(": ")?;
                (name.trim() == feature && !value.trim().is_empty())
                    .then(|| value.trim().to_string())
            })
        };
        let mut catalog = Catalog::new();
        let mut changed = 0;
        for ((raw, title), description) in self
            .catalog
            .raw_ids()
            .iter()
            .zip(self.catalog.titles())
            .zip(self.catalog.descriptions())
            .skip(1)
        {
            let title = match value_of(description) {
                Some(v) => {
                    changed += 1;
                    if title.is_empty() {
                        format!("({v})")
                    } else {
                        format!("{title} ({v})")
                    }
                }
                None => title.clone(),
            };
            catalog.push(raw.clone(), title, description.clone());
        }
        if changed == 0 {
            return Err(DataError::Config {
                field: "data.title_feature",
                message: format!(
                    "no item has the feature `{feature}` (an item's features read, e.g.: `{}`)",
                    self.catalog
                        .descriptions()
                        .get(1)
                        .map_or("", String::as_str)
                ),
            });
        }
        self.catalog = catalog;
        Ok(changed)
    }

    /// Keeps the interactions for which `keep(position in the flat item array)` is true and
    /// renumbers users and items compactly (order preserved). Users and items left with no
    /// interaction disappear.
    pub(crate) fn retain(&self, keep: &[bool]) -> Dataset {
        let items = self.sequences.items();
        let mut item_used = vec![false; self.n_items() + 1];
        for (i, &k) in keep.iter().enumerate() {
            if k {
                item_used[items[i].index()] = true;
            }
        }
        let mut catalog = Catalog::new();
        let mut new_item = vec![ItemId::PAD; self.n_items() + 1];
        for (id, raw, title) in self.catalog.iter() {
            if item_used[id.index()] {
                let desc = self.catalog.description(id).unwrap_or_default().to_string();
                new_item[id.index()] = catalog.push(raw.to_string(), title.to_string(), desc);
            }
        }
        let mut cols = Columns::with_fields(&self.sequences);
        let mut user_ids = Vec::new();
        for view in self.sequences.iter() {
            let start = self.sequences.offsets()[view.user.index()];
            let before = cols.items.len();
            for j in 0..view.len() {
                if keep[start + j] {
                    cols.push_from(&self.sequences, start + j, new_item[view.items[j].index()]);
                }
            }
            if cols.items.len() > before {
                cols.offsets.push(cols.items.len());
                user_ids.push(self.user_ids[view.user.index()].clone());
            }
        }
        Dataset {
            catalog,
            sequences: cols.finish(),
            user_ids,
        }
    }
}

/// Growable columns of a [`Sequences`] under construction.
struct Columns {
    offsets: Vec<usize>,
    items: Vec<ItemId>,
    ratings: Option<Vec<f32>>,
    timestamps: Option<Vec<i64>>,
    reviews: Option<Vec<String>>,
}

impl Columns {
    fn new(ratings: bool, timestamps: bool, reviews: bool, capacity: usize) -> Self {
        Self {
            offsets: vec![0],
            items: Vec::with_capacity(capacity),
            ratings: ratings.then(|| Vec::with_capacity(capacity)),
            timestamps: timestamps.then(|| Vec::with_capacity(capacity)),
            reviews: reviews.then(|| Vec::with_capacity(capacity)),
        }
    }

    fn with_fields(s: &Sequences) -> Self {
        Self::new(
            s.ratings().is_some(),
            s.timestamps().is_some(),
            s.reviews().is_some(),
            s.n_interactions(),
        )
    }

    fn push_from(&mut self, s: &Sequences, at: usize, item: ItemId) {
        self.items.push(item);
        if let (Some(out), Some(src)) = (self.ratings.as_mut(), s.ratings()) {
            out.push(src[at]);
        }
        if let (Some(out), Some(src)) = (self.timestamps.as_mut(), s.timestamps()) {
            out.push(src[at]);
        }
        if let (Some(out), Some(src)) = (self.reviews.as_mut(), s.reviews()) {
            out.push(src[at].clone());
        }
    }

    fn finish(self) -> Sequences {
        // The columns are built in lock step above, so the parts are consistent by construction.
        Sequences::from_parts(
            self.offsets,
            self.items,
            self.ratings,
            self.timestamps,
            self.reviews,
        )
        .expect("columns built in lock step")
    }
}

/// Turns a loader's log (and item table, when the format has one) into a [`Dataset`].
pub(crate) fn build(mut log: InteractionLog, items: Option<ItemTable>) -> Result<Dataset> {
    let n = log.len();
    // Item remap: item-file order first (only items that occur), then the rest by appearance.
    let mut catalog = Catalog::new();
    let mut new_item = vec![ItemId::PAD; log.items.len()];
    let mut untitled = 0usize;
    if let Some(table) = &items {
        for t in 0..table.ids.len() {
            let raw = table.ids.name(t as u32);
            if let Some(i) = log.items.get(raw) {
                let title = clean_title(&table.titles[t]);
                let desc = clean_title(&table.descriptions[t]);
                new_item[i as usize] = catalog.push(raw.to_string(), title, desc);
            }
        }
    }
    for (i, slot) in new_item.iter_mut().enumerate() {
        if slot.is_pad() {
            untitled += usize::from(items.is_some());
            *slot = catalog.push(
                log.items.name(i as u32).to_string(),
                String::new(),
                String::new(),
            );
        }
    }
    if untitled > 0 {
        tracing::warn!(
            untitled,
            "items interacted with but missing from the item file: their titles are empty"
        );
    }

    // Counting sort by user keeps file order within each user; then a stable sort by timestamp.
    let n_users = log.users.len();
    let mut offsets = vec![0usize; n_users + 1];
    for &u in &log.user {
        offsets[u as usize + 1] += 1;
    }
    for u in 0..n_users {
        offsets[u + 1] += offsets[u];
    }
    let mut cursor = offsets.clone();
    let mut order = vec![0usize; n];
    for (pos, &u) in log.user.iter().enumerate() {
        order[cursor[u as usize]] = pos;
        cursor[u as usize] += 1;
    }
    if let Some(ts) = &log.timestamp {
        for u in 0..n_users {
            order[offsets[u]..offsets[u + 1]].sort_by_key(|&pos| ts[pos]);
        }
    }

    let items_out: Vec<ItemId> = order
        .iter()
        .map(|&p| new_item[log.item[p] as usize])
        .collect();
    let ratings = log
        .rating
        .as_ref()
        .map(|r| order.iter().map(|&p| r[p]).collect());
    let timestamps = log
        .timestamp
        .as_ref()
        .map(|t| order.iter().map(|&p| t[p]).collect());
    let reviews = log
        .review
        .take()
        .map(|mut r| order.iter().map(|&p| std::mem::take(&mut r[p])).collect());
    let sequences = Sequences::from_parts(offsets, items_out, ratings, timestamps, reviews)
        .map_err(|e| DataError::Config {
            field: "sequences",
            message: e.to_string(),
        })?;
    let user_ids = (0..n_users)
        .map(|u| log.users.name(u as u32).to_string())
        .collect();
    Ok(Dataset {
        catalog,
        sequences,
        user_ids,
    })
}
