//! Property tests: no input, however broken, makes a parser panic. Each case writes arbitrary
//! bytes, or a valid file with random damage, under every file name the loaders recognise.
//!
//! Run longer with `PROPTEST_CASES=20000 cargo test -p pulserec-data --test fuzz_parsers`.

use proptest::prelude::*;

const NAMES: &[(&str, &str)] = &[
    (
        "d.inter",
        "user_id:token\titem_id:token\trating:float\ttimestamp:float\na\tx\t3\t10\nb\ty\t4.5\t11\n",
    ),
    (
        "g.test.inter",
        "user_id:token\titem_id_list:token_seq\titem_id:token\n0\t1 2 3\t4\n1\t5\t6\n",
    ),
    (
        "d.item",
        "item_id:token\ttitle:token_seq\tclass:token_seq\nx\tX &amp; Y\tA B\n",
    ),
    ("u.data", "1\t10\t4\t100\n2\t20\t3\t50\n"),
    (
        "u.item",
        "10|T|01-Jan-1995||u|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|0|1\n",
    ),
    ("ratings.dat", "1::10::4::978300760\n"),
    ("movies.dat", "10::Heat (1995)::Action|Crime\n"),
    (
        "ratings.csv",
        "userId,movieId,rating,timestamp\n1,10,4.5,978300760\n",
    ),
    ("movies.csv", "movieId,title,genres\n10,\"A, B\",Comedy\n"),
    (
        "r.jsonl",
        "{\"user_id\":\"U\",\"parent_asin\":\"P\",\"rating\":4.0,\"timestamp\":1600000000000}\n",
    ),
    (
        "meta_r.jsonl",
        "{\"parent_asin\":\"P\",\"title\":\"Halo\",\"features\":[\"FPS\"]}\n",
    ),
    (
        "s.json",
        "{\"reviewerID\":\"A\",\"asin\":\"B\",\"overall\":5.0,\"unixReviewTime\":20}\n",
    ),
];

fn load_bytes(pairs: &[(&str, Vec<u8>)]) {
    let dir = tempfile::tempdir().unwrap();
    for (name, bytes) in pairs {
        std::fs::write(dir.path().join(name), bytes).unwrap();
    }
    // Any outcome but a panic is fine: Ok for lucky input, a DataError otherwise.
    let _ = pulserec_data::load(dir.path());
    for (name, _) in pairs {
        let _ = pulserec_data::load(dir.path().join(name));
    }
}

/// Pairs of files that are loaded together.
fn companion(name: &str) -> Option<(&'static str, &'static str)> {
    let want = match name {
        "d.inter" => "d.item",
        "u.data" => "u.item",
        "ratings.dat" => "movies.dat",
        "ratings.csv" => "movies.csv",
        "r.jsonl" => "meta_r.jsonl",
        _ => return None,
    };
    NAMES.iter().copied().find(|(n, _)| *n == want)
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(which in 0..NAMES.len(), bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        load_bytes(&[(NAMES[which].0, bytes)]);
    }

    #[test]
    fn damaged_valid_files_never_panic(
        which in 0..NAMES.len(),
        damage in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        damage_companion in any::<bool>(),
    ) {
        let (name, text) = NAMES[which];
        let mutate = |text: &str| {
            let mut bytes = text.as_bytes().to_vec();
            for (at, byte, op) in &damage {
                if bytes.is_empty() { break; }
                let i = at.index(bytes.len());
                match op {
                    0 => bytes[i] = *byte,
                    1 => { bytes.remove(i); }
                    _ => bytes.insert(i, *byte),
                }
            }
            bytes
        };
        let mut files = vec![(name, mutate(text))];
        if let Some((cname, ctext)) = companion(name) {
            files.push((cname, if damage_companion { mutate(ctext) } else { ctext.as_bytes().to_vec() }));
        }
        load_bytes(&files);
    }
}
