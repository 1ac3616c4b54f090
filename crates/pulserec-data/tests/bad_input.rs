//! Malformed input is a `DataError` naming the file, line and field; never a panic.

use std::io::Write;
use std::path::{Path, PathBuf};

use pulserec_data::{DataError, Format, load, load_with};

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn err_of(dir: &Path) -> String {
    let e = load(dir).expect_err("malformed input must be refused");
    e.to_string()
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

const HEADER: &str = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n";

#[test]
fn recbole_errors_name_file_line_and_field() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "missing field",
            "a\tx\t3\n",
            ":2: malformed line: expected 4 TAB-separated fields, found 3",
        ),
        (
            "bad rating",
            "a\tx\tfive\t1\n",
            ":2: field `rating`: `five` is not a number",
        ),
        (
            "nan rating",
            "a\tx\tNaN\t1\n",
            ":2: field `rating`: rating must be finite",
        ),
        (
            "negative rating",
            "a\tx\t1\t1\nb\ty\t-2\t1\n",
            ":3: field `rating`: rating must be finite and non-negative",
        ),
        (
            "bad timestamp",
            "a\tx\t1\tyesterday\n",
            ":2: field `timestamp`",
        ),
        ("empty id", "\tx\t1\t1\n", ":2: field `user_id`: empty id"),
    ];
    for (what, body, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), "d.inter", format!("{HEADER}{body}").as_bytes());
        let msg = err_of(dir.path());
        assert!(
            msg.contains("d.inter") && msg.contains(expected),
            "{what}: got `{msg}`"
        );
    }
}

#[test]
fn headers_types_and_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "d.inter", b"user_id:token\titem:token\na\tx\n");
    assert!(err_of(dir.path()).contains("d.inter:1: bad header: missing column `item_id`"));
    write(
        dir.path(),
        "d.inter",
        b"user_id:token\titem_id:blob\na\tx\n",
    );
    assert!(err_of(dir.path()).contains("unknown type `blob`"));
    write(dir.path(), "d.inter", b"user_id\titem_id:token\na\tx\n");
    assert!(err_of(dir.path()).contains("is not `name:type`"));
    write(dir.path(), "d.inter", HEADER.as_bytes());
    assert!(matches!(load(dir.path()), Err(DataError::Empty { .. })));
    write(dir.path(), "d.inter", b"");
    assert!(matches!(load(dir.path()), Err(DataError::Empty { .. })));
}

#[test]
fn duplicate_ids_and_invalid_utf8() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "d.inter",
        format!("{HEADER}a\tx\t1\t1\n").as_bytes(),
    );
    write(
        dir.path(),
        "d.item",
        b"item_id:token\ttitle:token_seq\nx\tX\ny\tY\nx\tX again\n",
    );
    let msg = err_of(dir.path());
    assert!(
        msg.contains("d.item:4: duplicate id `x` (first seen on line 2)"),
        "{msg}"
    );
    write(
        dir.path(),
        "d.item",
        b"item_id:token\ttitle:token_seq\nx\t\xff\xfe\n",
    );
    assert!(err_of(dir.path()).contains("d.item:2: invalid UTF-8 in field `title`"));
    // Pre-split files hold one row per user.
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "g.test.inter",
        b"user_id:token\titem_id_list:token_seq\titem_id:token\n0\t1 2\t3\n0\t1\t2\n",
    );
    assert!(err_of(dir.path()).contains("g.test.inter:3: duplicate id `0`"));
}

#[test]
fn missing_paths_and_unknown_formats() {
    let dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        load(dir.path().join("nope")),
        Err(DataError::Io { .. })
    ));
    assert!(matches!(
        load(dir.path()),
        Err(DataError::UnknownFormat { .. })
    ));
    assert!("parquet-ish".parse::<Format>().is_err());
}

#[test]
fn gzip_works_and_truncated_gzip_is_an_error() {
    let body = format!("{HEADER}a\tx\t1\t1\na\ty\t2\t2\n");
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "d.inter.gz", &gz(body.as_bytes()));
    assert_eq!(load(dir.path()).unwrap().n_interactions(), 2);
    let full = gz(body.repeat(200).as_bytes());
    write(dir.path(), "d.inter.gz", &full[..full.len() / 2]);
    let msg = err_of(dir.path());
    assert!(
        msg.contains("d.inter.gz: corrupt or truncated gzip stream"),
        "{msg}"
    );
}

#[test]
fn movielens_raw_formats() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "u.data",
        b"1\t10\t4\t100\n1\t20\t5\t100\n2\t10\t3\t50\n",
    );
    let flags = "|0".repeat(19);
    // ISO-8859-1 title: 0xe9 is e-acute.
    let mut item = b"10|Caf\xe9|01-Jan-1995||url".to_vec();
    item.extend_from_slice(format!("{flags}\n20|Two|01-Jan-1996||url{flags}\n").as_bytes());
    write(dir.path(), "u.item", &item);
    let ds = load(dir.path()).unwrap();
    assert_eq!(ds.catalog.title(pulserec_core::ItemId(1)), Some("Café"));
    // Equal timestamps keep file order.
    assert_eq!(
        ds.sequences.items_of(pulserec_core::UserId(0)),
        &[pulserec_core::ItemId(1), pulserec_core::ItemId(2)]
    );
    write(dir.path(), "u.data", b"1\t10\t4\n");
    assert!(err_of(dir.path()).contains("u.data:1: malformed line: expected 4 fields"));

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "ratings.dat", b"1::10::4::978300760\n");
    write(dir.path(), "movies.dat", b"10::Heat (1995)::Action|Crime\n");
    let ds = load(dir.path()).unwrap();
    assert_eq!(
        ds.catalog.description(pulserec_core::ItemId(1)),
        Some("genres: Action, Crime")
    );

    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "ratings.csv",
        b"userId,movieId,rating,timestamp\n1,10,4.5,978300760\n",
    );
    write(
        dir.path(),
        "movies.csv",
        b"movieId,title,genres\n10,\"American President, The (1995)\",Comedy|Drama\n",
    );
    let ds = load(dir.path()).unwrap();
    assert_eq!(
        ds.catalog.title(pulserec_core::ItemId(1)),
        Some("American President, The (1995)")
    );
}

#[test]
fn amazon_2018_and_2023() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "Video_Games_5.json.gz",
        &gz(br#"{"reviewerID":"A1","asin":"B1","overall":5.0,"unixReviewTime":20,"summary":"Great","reviewText":"Loved it"}
{"reviewerID":"A1","asin":"B2","overall":3.0,"unixReviewTime":10}
"#),
    );
    write(
        dir.path(),
        "meta_Video_Games.json",
        br#"{"asin":"B1","title":"Zelda &amp; Link","description":["An adventure."]}
{"asin":"B2","title":"Mario"}
"#,
    );
    let ds = load(dir.path()).unwrap();
    let v = ds.sequences.get(pulserec_core::UserId(0)).unwrap();
    assert_eq!(v.timestamps.unwrap(), &[10, 20]);
    assert_eq!(v.reviews.unwrap()[1], "Great. Loved it");
    assert_eq!(ds.catalog.title(v.items[1]), Some("Zelda & Link"));
    // Ratings, timestamps and reviews survive the Parquet round trip.
    let prepared = pulserec_data::PreparedDataset {
        dataset: ds,
        candidates: vec![],
    };
    prepared.save(dir.path().join("prepared")).unwrap();
    assert_eq!(
        pulserec_data::PreparedDataset::load(dir.path().join("prepared")).unwrap(),
        prepared
    );

    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "Games.jsonl", br#"{"user_id":"U","parent_asin":"P1","asin":"X","rating":4.0,"timestamp":1600000000000,"title":"ok","text":"fine"}
"#);
    write(
        dir.path(),
        "meta_Games.jsonl",
        br#"{"parent_asin":"P1","title":"Halo","features":["FPS"],"categories":["Games"]}
"#,
    );
    let ds = load(dir.path()).unwrap();
    assert_eq!(ds.sequences.timestamps().unwrap(), &[1_600_000_000]);
    assert_eq!(
        ds.catalog.description(pulserec_core::ItemId(1)),
        Some("FPS | Games")
    );

    write(
        dir.path(),
        "Games.jsonl",
        br#"{"user_id":"U","parent_asin":"P1","timestamp":1}
"#,
    );
    assert!(err_of(dir.path()).contains("Games.jsonl:1: field `rating`: missing"));
    write(dir.path(), "Games.jsonl", b"{\"user_id\": \"U\", \n");
    assert!(
        load_with(
            dir.path(),
            Format::Amazon(pulserec_data::AmazonVersion::V2023)
        )
        .unwrap_err()
        .to_string()
        .contains("invalid JSON")
    );
}

#[test]
fn interactions_from_code() {
    use pulserec_core::Interaction;
    let at = |u: &str, i: &str, t: i64| Interaction {
        timestamp: Some(t),
        ..Interaction::new(u, i)
    };
    let items = vec![("x".to_string(), "Ex &amp; Why".to_string(), String::new())];
    let ds = pulserec_data::Dataset::from_interactions(
        [at("a", "y", 5), at("a", "x", 1), at("b", "x", 3)],
        items.clone(),
    )
    .unwrap();
    assert_eq!((ds.n_users(), ds.n_items()), (2, 2));
    // Chronological within the user; item-file order first in the catalogue.
    assert_eq!(
        ds.sequences.items_of(pulserec_core::UserId(0)),
        &[pulserec_core::ItemId(1), pulserec_core::ItemId(2)]
    );
    assert_eq!(ds.catalog.title(pulserec_core::ItemId(1)), Some("Ex & Why"));
    let err = pulserec_data::Dataset::from_interactions(
        [at("a", "x", 1), Interaction::new("b", "x")],
        [],
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "record 1: field `timestamp`: missing, but the first interaction has it"
    );
    let err = pulserec_data::Dataset::from_interactions(
        [Interaction {
            rating: Some(f32::NAN),
            ..Interaction::new("a", "x")
        }],
        [],
    )
    .unwrap_err();
    assert!(err.to_string().starts_with("record 0: field `rating`"));
    assert!(pulserec_data::Dataset::from_interactions([], []).is_err());
}
