//! The rationale store resumes and shards.

use pulserec_core::{RationaleSource, UserId};
use pulserec_tot::{PROMPT_VERSION, RationaleStore, Shard, StoredRationale, TotError};

fn record(user: u32) -> StoredRationale {
    StoredRationale {
        user: UserId(user),
        text: format!("Rationale of {user}."),
        parsed: user.is_multiple_of(2),
        source: RationaleSource::TreeOfThought,
        score: Some(user as f32 / 10.0),
        scorer: Some("consistency".into()),
        model: "scripted".into(),
        prompt_version: PROMPT_VERSION.into(),
        seed: 42,
        tokens: 10,
        seconds: 0.5,
    }
}

/// Stores users in batches of 2, stopping after `max_batches` (a killed run).
fn run(store: &RationaleStore, users: &[UserId], shard: Shard, max_batches: usize) {
    let pending = store.pending(users.iter().copied(), shard).unwrap();
    for batch in pending.chunks(2).take(max_batches) {
        let records: Vec<_> = batch.iter().map(|u| record(u.0)).collect();
        store.append(&records, shard).unwrap();
    }
}

#[test]
fn an_interrupted_run_resumes_to_the_same_store() {
    let users: Vec<UserId> = (0..7).map(UserId).collect();
    let full = tempfile::tempdir().unwrap();
    let full = RationaleStore::open(full.path()).unwrap();
    run(&full, &users, Shard::ALL, usize::MAX);

    let resumed_dir = tempfile::tempdir().unwrap();
    let resumed = RationaleStore::open(resumed_dir.path()).unwrap();
    run(&resumed, &users, Shard::ALL, 2);
    // A write killed before its rename leaves only a temporary file, which is ignored.
    std::fs::write(
        resumed_dir.path().join("part-x.jsonl.tmp"),
        "{\"user\": 4, \"te",
    )
    .unwrap();
    assert_eq!(
        resumed.pending(users.iter().copied(), Shard::ALL).unwrap(),
        [4, 5, 6].map(UserId)
    );
    run(&resumed, &users, Shard::ALL, usize::MAX);

    assert_eq!(resumed.load().unwrap(), full.load().unwrap());
    assert_eq!(full.load().unwrap().len(), 7);
    assert!(
        resumed
            .pending(users.iter().copied(), Shard::ALL)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn shards_split_the_users_and_share_a_directory() {
    let users: Vec<UserId> = (0..10).map(UserId).collect();
    let dir = tempfile::tempdir().unwrap();
    let store = RationaleStore::open(dir.path()).unwrap();
    let a: Shard = "0/3".parse().unwrap();
    let b: Shard = "1/3".parse().unwrap();
    assert_eq!(
        store.pending(users.iter().copied(), a).unwrap(),
        [0, 3, 6, 9].map(UserId)
    );
    run(&store, &users, a, usize::MAX);
    run(&store, &users, b, usize::MAX);
    assert_eq!(store.load().unwrap().len(), 7);
    assert_eq!(
        store.pending(users.iter().copied(), Shard::ALL).unwrap(),
        [2, 5, 8].map(UserId)
    );
    for bad in ["3/3", "1", "a/b", "0/0", ""] {
        assert!(
            matches!(bad.parse::<Shard>(), Err(TotError::Config { .. })),
            "{bad}"
        );
    }
}

#[test]
fn a_corrupt_part_is_an_error_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = RationaleStore::open(dir.path()).unwrap();
    store.append(&[record(1)], Shard::ALL).unwrap();
    std::fs::write(dir.path().join("part-bad.jsonl"), "\nnot json\n").unwrap();
    match store.load() {
        Err(TotError::Store { line, .. }) => assert_eq!(line, 2),
        other => panic!("expected a store error, got {other:?}"),
    }
}
