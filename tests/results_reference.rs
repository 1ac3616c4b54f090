//! `pulserec::results` against the independent Python reference (`scripts/eval/recompute.py`):
//! the fixture holds real 5-candidate predictions of rows of the 1,000-user Games evaluation
//! (first 300 users each) and the tables the reference computed from them
//! (`scripts/eval/make_fixture.sh` rebuilds both; the command is in docs/reproducing.md).
//!
//! Tolerances: HR@1, the paired differences, HR@1 by position and McNemar's p are exact
//! (1e-12); bootstrap interval ends within 0.01 (two different random streams of 10,000
//! resamples: their Monte Carlo spread at 300 users is ~0.003).

use pulserec::results::{Results, Row, read_predictions};
use serde_json::Value;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/results");

fn close(a: f64, b: f64, tol: f64, what: &str) {
    assert!((a - b).abs() <= tol, "{what}: ours {a}, reference {b}");
}

#[test]
fn tables_match_the_python_reference() {
    let preds = read_predictions(format!("{DIR}/predictions.jsonl").as_ref()).unwrap();
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DIR}/reference.json")).unwrap())
            .unwrap();
    // Rows and pairs as the reference has them (it pairs every SLM row with no-rationale and
    // most-popular).
    let rows: Vec<Row> = reference["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let v = r["variant"].as_str().unwrap();
            Row::new(v, v)
        })
        .collect();
    let pairs: Vec<(String, String)> = reference["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["a"].as_str().unwrap().into(),
                p["b"].as_str().unwrap().into(),
            )
        })
        .collect();
    let ours = Results::from_predictions(&preds, &rows, &pairs);

    for r in reference["rows"].as_array().unwrap() {
        let variant = r["variant"].as_str().unwrap();
        let cell = ours.cell(variant, 5).unwrap();
        assert_eq!(cell.users as u64, r["users"].as_u64().unwrap(), "{variant}");
        close(
            cell.hr1.estimate,
            r["hr1"].as_f64().unwrap(),
            1e-12,
            variant,
        );
        close(cell.hr1.low, r["boot_low"].as_f64().unwrap(), 0.01, variant);
        close(
            cell.hr1.high,
            r["boot_high"].as_f64().unwrap(),
            0.01,
            variant,
        );
        let by_position: Vec<(usize, usize)> =
            serde_json::from_value(r["by_position"].clone()).unwrap();
        assert_eq!(cell.by_position, by_position, "{variant}");
    }

    assert_eq!(ours.pairs.len(), pairs.len());
    for r in reference["pairs"].as_array().unwrap() {
        let (a, b) = (r["a"].as_str().unwrap(), r["b"].as_str().unwrap());
        let p = ours
            .pairs
            .iter()
            .find(|p| p.a == a && p.b == b)
            .unwrap_or_else(|| panic!("no pair {a} - {b}"));
        let what = format!("{a} - {b}");
        assert_eq!(p.users as u64, r["users"].as_u64().unwrap(), "{what}");
        close(
            p.difference.estimate,
            r["diff"].as_f64().unwrap(),
            1e-12,
            &what,
        );
        close(
            p.difference.low,
            r["boot_low"].as_f64().unwrap(),
            0.01,
            &what,
        );
        close(
            p.difference.high,
            r["boot_high"].as_f64().unwrap(),
            0.01,
            &what,
        );
        close(
            p.mcnemar_p.unwrap(),
            r["mcnemar_p"].as_f64().unwrap(),
            1e-12,
            &what,
        );
    }
}
