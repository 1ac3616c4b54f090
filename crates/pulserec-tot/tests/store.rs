//! The rationale store round-trips, resumes, shards, reads legacy JSON Lines parts and names
//! the file of a corrupt part.

use std::sync::Arc;

use arrow_array::{ArrayRef, StringArray, UInt32Array};
use pulserec_core::{RationaleSource, UserContext, UserId};
use pulserec_data::parquet_file::{batch, write_batch};
use pulserec_tot::{PROMPT_VERSION, RationaleStore, Shard, StoredRationale, TotError};

/// A record of `user`; odd users are hindsight records (no score, no scorer).
fn record(user: u32) -> StoredRationale {
    let tot = user.is_multiple_of(2);
    StoredRationale {
        user: UserId(user),
        text: format!("Rationale of {user}: \"quoted\", ünïcode."),
        parsed: user.is_multiple_of(3),
        source: if tot {
            RationaleSource::TreeOfThought
        } else {
            RationaleSource::Hindsight
        },
        score: tot.then_some(user as f32 / 10.0),
        scorer: tot.then(|| "consistency".into()),
        model: "scripted".into(),
        prompt_version: PROMPT_VERSION.into(),
        seed: u64::MAX - user as u64,
        tokens: 10 + user as usize,
        seconds: 0.5 + user as f64,
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
        resumed_dir
            .path()
            .join("part-s000of001-000002.parquet.partial"),
        b"PAR1\x15\x04",
    )
    .unwrap();
    std::fs::write(
        resumed_dir.path().join("part-x.jsonl.tmp"),
        "{\"user\": 4, \"te",
    )
    .unwrap();
    // The temporary name `pulserec_core::fs::write_atomic` uses.
    std::fs::write(resumed_dir.path().join(".tmpAbC123"), b"PAR1\x15").unwrap();
    assert_eq!(
        resumed.pending(users.iter().copied(), Shard::ALL).unwrap(),
        [4, 5, 6].map(UserId)
    );
    run(&resumed, &users, Shard::ALL, usize::MAX);

    assert_eq!(resumed.load().unwrap(), full.load().unwrap());
    // Every field survives the Parquet round trip exactly.
    assert_eq!(full.load().unwrap(), (0..7).map(record).collect::<Vec<_>>());
    let parts: Vec<_> = std::fs::read_dir(full.dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(parts.len(), 4);
    assert!(parts.iter().all(|p| p.ends_with(".parquet")), "{parts:?}");
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

/// Writes `records` as a JSON Lines part, as stores before the Parquet format did.
fn write_legacy_part(dir: &std::path::Path, name: &str, records: &[StoredRationale]) {
    let body: String = records
        .iter()
        .map(|r| serde_json::to_string(r).unwrap() + "\n")
        .collect();
    std::fs::write(dir.join(name), body).unwrap();
}

#[test]
fn legacy_json_lines_parts_are_read_next_to_parquet_ones() {
    let users: Vec<UserId> = (0..6).map(UserId).collect();
    let dir = tempfile::tempdir().unwrap();
    write_legacy_part(
        dir.path(),
        "part-s000of001-000000.jsonl",
        &[record(0), record(1)],
    );
    let store = RationaleStore::open(dir.path()).unwrap();
    assert_eq!(
        store.pending(users.iter().copied(), Shard::ALL).unwrap(),
        [2, 3, 4, 5].map(UserId)
    );
    let written = store.append(&[record(2), record(3)], Shard::ALL).unwrap();
    // The new part is Parquet and sorts after the legacy one.
    assert_eq!(
        written.unwrap().file_name().unwrap(),
        "part-s000of001-000001.parquet"
    );
    // A later part wins for a user stored twice, whatever its format.
    let mut again = record(1);
    again.text = "Rewritten.".into();
    store.append(&[again.clone()], Shard::ALL).unwrap();
    let mut want: Vec<_> = (0..4).map(record).collect();
    want[1] = again;
    assert_eq!(store.load().unwrap(), want);
    assert_eq!(
        store.pending(users.iter().copied(), Shard::ALL).unwrap(),
        [4, 5].map(UserId)
    );
}

#[test]
fn a_corrupt_part_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = RationaleStore::open(dir.path()).unwrap();
    store.append(&[record(1)], Shard::ALL).unwrap();

    // Not Parquet at all.
    let bad = dir.path().join("part-bad.parquet");
    std::fs::write(&bad, b"not parquet").unwrap();
    let err = store.load().unwrap_err();
    assert!(matches!(err, TotError::Data(_)), "{err:?}");
    assert!(err.to_string().contains("part-bad.parquet"), "{err}");

    // Parquet, but without the store's columns.
    let users: ArrayRef = Arc::new(UInt32Array::from(vec![5]));
    write_batch(&bad, batch(&bad, vec![("user", users)]).unwrap()).unwrap();
    let err = store.load().unwrap_err().to_string();
    assert!(
        err.contains("part-bad.parquet") && err.contains("missing column `text`"),
        "{err}"
    );

    // A mistyped column.
    let users: ArrayRef = Arc::new(StringArray::from(vec!["5"]));
    write_batch(&bad, batch(&bad, vec![("user", users)]).unwrap()).unwrap();
    let err = store.load().unwrap_err().to_string();
    assert!(
        err.contains("part-bad.parquet") && err.contains("column `user` has type Utf8"),
        "{err}"
    );
    std::fs::remove_file(&bad).unwrap();

    // A legacy part with a bad line names the line.
    std::fs::write(dir.path().join("part-bad.jsonl"), "\nnot json\n").unwrap();
    match store.load() {
        Err(TotError::Store { path, line, .. }) => {
            assert_eq!(line, 2);
            assert!(path.ends_with("part-bad.jsonl"), "{}", path.display());
        }
        other => panic!("expected a store error, got {other:?}"),
    }
}

#[test]
fn a_null_in_a_required_column_names_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = RationaleStore::open(dir.path()).unwrap();
    let path = store
        .append(&[record(1), record(2)], Shard::ALL)
        .unwrap()
        .unwrap();
    // Rewrite the part with the second row's text null.
    let good = pulserec_data::parquet_file::read_batches(&path).unwrap();
    let b = &good[0];
    let schema = b.schema();
    let mut columns: Vec<(&str, ArrayRef)> = Vec::new();
    for (field, column) in schema.fields().iter().zip(b.columns()) {
        let column = if field.name() == "text" {
            Arc::new(StringArray::from(vec![Some("fine"), None])) as ArrayRef
        } else {
            column.clone()
        };
        columns.push((field.name().as_str(), column));
    }
    write_batch(&path, batch(&path, columns).unwrap()).unwrap();
    match store.load() {
        Err(TotError::Store {
            path: p,
            line,
            message,
        }) => {
            assert_eq!((p, line), (path, 2));
            assert_eq!(message, "null `text`");
        }
        other => panic!("expected a store error, got {other:?}"),
    }
}

#[test]
fn pending_contexts_are_the_shards_unstored_users_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = RationaleStore::open(dir.path()).unwrap();
    let contexts: Vec<UserContext> = [5, 2, 8, 3, 6]
        .map(|u| UserContext {
            user: UserId(u),
            ..Default::default()
        })
        .to_vec();
    store.append(&[record(2), record(6)], Shard::ALL).unwrap();
    let users = |todo: Vec<UserContext>| todo.iter().map(|c| c.user.0).collect::<Vec<_>>();
    let all = store.pending_contexts(&contexts, Shard::ALL).unwrap();
    assert_eq!(users(all), [5, 8, 3]);
    let half = Shard { index: 1, count: 2 };
    assert_eq!(
        users(store.pending_contexts(&contexts, half).unwrap()),
        [5, 3]
    );
}
