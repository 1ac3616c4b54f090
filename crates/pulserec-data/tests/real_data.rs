//! The loaders on the real data sets: exact counts, split and candidate invariants, Parquet
//! round trips.

use pulserec_core::{ItemId, UserId};
use pulserec_data::locate::{asset, shared};
use pulserec_data::{
    CandidateConfig, CandidateSets, Dataset, Filter, LeaveOneOut, PreparedDataset, Sampling,
    Target, load,
};

fn check_candidates(ds: &Dataset, sets: &CandidateSets, target: Target) {
    let split = LeaveOneOut::new(&ds.sequences);
    assert_eq!(sets.len(), split.eval_users().count());
    for (user, cands) in sets.iter() {
        assert_eq!(cands.len(), sets.config.n_negatives + 1);
        assert_eq!(Some(cands[0]), split.target(user, target), "positive first");
        let history = ds.sequences.items_of(user);
        let mut seen = std::collections::HashSet::new();
        for c in &cands[1..] {
            assert!(
                !history.contains(c),
                "negative {c} of {user} is in the history"
            );
            assert!(!c.is_pad() && c.index() <= ds.n_items());
            assert!(seen.insert(*c), "duplicate negative");
        }
    }
}

fn round_trip(prepared: &PreparedDataset) {
    let dir = tempfile::tempdir().unwrap();
    prepared.save(dir.path()).unwrap();
    let back = PreparedDataset::load(dir.path()).unwrap();
    assert!(back == *prepared, "Parquet round trip changed the data set");
}

#[test]
fn movielens_100k_loads_with_exact_counts() {
    let Some(dir) = asset("ml-100k") else { return };
    let ds = load(&dir).unwrap();
    assert_eq!(
        (ds.n_users(), ds.n_items(), ds.n_interactions()),
        (943, 1682, 100_000)
    );
    let s = ds.summary();
    assert!(s.has_ratings && s.has_timestamps && !s.has_reviews);
    assert_eq!(s.seq_len.min, 20);
    // Sorted by time within each user; ties keep file order.
    for v in ds.sequences.iter() {
        let t = v.timestamps.unwrap();
        assert!(
            t.windows(2).all(|w| w[0] <= w[1]),
            "user {} not chronological",
            v.user
        );
    }
    // Genres came along as item text.
    let toy = ds.catalog.iter().find(|(_, raw, _)| *raw == "1").unwrap().0;
    assert_eq!(ds.catalog.title(toy), Some("Toy Story"));
    assert!(
        ds.catalog
            .description(toy)
            .unwrap()
            .contains("class: Animation Children's Comedy")
    );

    let split = LeaveOneOut::new(&ds.sequences);
    let test =
        CandidateSets::generate(&ds, &split, Target::Test, &CandidateConfig::uniform(100, 7))
            .unwrap();
    check_candidates(&ds, &test, Target::Test);
    let pop = CandidateConfig {
        n_negatives: 20,
        sampling: Sampling::Popularity,
        seed: 7,
    };
    let valid = CandidateSets::generate(&ds, &split, Target::Valid, &pop).unwrap();
    check_candidates(&ds, &valid, Target::Valid);
    // Same seed, same candidates; another seed, other candidates.
    assert_eq!(
        test,
        CandidateSets::generate(&ds, &split, Target::Test, &CandidateConfig::uniform(100, 7))
            .unwrap()
    );
    assert_ne!(
        test,
        CandidateSets::generate(&ds, &split, Target::Test, &CandidateConfig::uniform(100, 8))
            .unwrap()
    );
    round_trip(&PreparedDataset {
        dataset: ds,
        candidates: vec![test, valid],
    });
}

#[test]
fn amazon_games_loads_with_exact_counts() {
    let Some(dir) = shared("amazon-games-2018") else {
        return;
    };
    let ds = load(&dir).unwrap();
    assert_eq!(
        (ds.n_users(), ds.n_items(), ds.n_interactions()),
        (50_546, 16_859, 440_264)
    );
    let s = ds.summary();
    assert_eq!((s.seq_len.min, s.seq_len.p50, s.seq_len.max), (5, 6, 50));
    assert!(!s.has_ratings && !s.has_timestamps);
    // Item "0" is the first catalogue entry; titles are HTML-unescaped.
    assert_eq!(ds.catalog.raw_id(ItemId(1)), Some("0"));
    assert_eq!(
        ds.catalog.title(ItemId(1)),
        Some("Fire Emblem: The Sacred Stones")
    );
    assert!(
        ds.catalog
            .iter()
            .all(|(_, _, t)| !t.contains("&amp;") && !t.contains("&quot;"))
    );
    // User 0's sequence is the list followed by the item, oldest first.
    let u0: Vec<&str> = ds
        .sequences
        .items_of(UserId(0))
        .iter()
        .map(|&i| ds.catalog.raw_id(i).unwrap())
        .collect();
    assert_eq!(u0, (0..=14).map(|i| i.to_string()).collect::<Vec<_>>());

    let split = LeaveOneOut::new(&ds.sequences);
    assert_eq!(split.eval_users().count(), 50_546);
    let test = CandidateSets::generate(&ds, &split, Target::Test, &CandidateConfig::uniform(4, 1))
        .unwrap();
    check_candidates(&ds, &test, Target::Test);
    round_trip(&PreparedDataset {
        dataset: ds,
        candidates: vec![test],
    });
}

#[test]
fn filters_on_movielens() {
    let Some(dir) = asset("ml-100k") else { return };
    let ds = load(&dir).unwrap();
    // ML-100K is already a 20-core for users; a 50-core for items shrinks it.
    let core = ds.filter(Filter::KCore {
        min_user: 20,
        min_item: 50,
    });
    let counts = pulserec_data::candidates::item_counts(&core.sequences, core.n_items());
    assert!(counts[1..].iter().all(|&c| c >= 50));
    assert!(core.sequences.iter().all(|v| v.len() >= 20));
    let one = ds.filter(Filter::MinCount {
        min_user: 20,
        min_item: 50,
    });
    assert!(one.n_interactions() >= core.n_interactions());
    assert!(core.n_items() < ds.n_items());
}
