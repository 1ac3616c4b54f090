//! Training examples and test cases from a data set.

mod common;

use std::collections::{HashMap, HashSet};

use pulserec_core::UserId;
use pulserec_data::Target;
use pulserec_sft::{
    DataConfig, ExampleBuilder, PopularityUse, SftError, Variant, choose_test_users,
};

fn all_users(n: usize) -> Vec<UserId> {
    (0..n as u32).map(UserId).collect()
}

#[test]
fn training_examples_follow_the_paper_shape() {
    let ds = common::toy_dataset();
    let builder = ExampleBuilder::new(&ds, DataConfig::paper(7)).unwrap();
    let users = all_users(ds.n_users());
    let set = builder
        .training_set(Variant::NoRationale, &users, None)
        .unwrap();
    assert_eq!(set.examples.len(), ds.n_users());
    let split = builder.split();
    for ex in &set.examples {
        let user = ex.prompt.user;
        let seq = ds.sequences.items_of(user);
        let target = split.target(user, Target::LastTrain).unwrap();
        assert_eq!(ex.target, target);
        assert_eq!(ex.prompt.candidates.len(), 10);
        // The target is shown exactly once; the 9 negatives are distinct and never interacted
        // with (not even the valid / test items).
        let ids: Vec<_> = ex.prompt.candidates.iter().map(|c| c.0).collect();
        assert_eq!(ids.iter().filter(|&&i| i == target).count(), 1);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 10);
        for id in ids.iter().filter(|&&i| i != target) {
            assert!(!seq.contains(id), "{user}: negative {id} in the sequence");
        }
        // The history is the 5 items before the target, titles cleaned.
        let before = split.history_before(user, Target::LastTrain);
        let want: Vec<String> = before[before.len().saturating_sub(5)..]
            .iter()
            .map(|&i| ds.catalog.title(i).unwrap().to_string())
            .collect();
        assert_eq!(ex.prompt.history, want);
        assert!(ex.prompt.history.iter().all(|t| t.contains('&')));
        assert!(ex.prompt.rationale.is_none());
    }
    // The positive is not always in the same place.
    let positions: HashSet<usize> = set.examples.iter().map(|e| e.target_index()).collect();
    assert!(positions.len() > 2, "{positions:?}");
}

#[test]
fn examples_are_deterministic_by_seed() {
    let ds = common::toy_dataset();
    let users = all_users(ds.n_users());
    let build = |seed| {
        ExampleBuilder::new(&ds, DataConfig::paper(seed))
            .unwrap()
            .training_set(Variant::NoRationale, &users, None)
            .unwrap()
    };
    assert_eq!(build(3), build(3));
    assert_ne!(build(3).examples, build(4).examples);
    // A user's example does not depend on the other users built.
    let one = ExampleBuilder::new(&ds, DataConfig::paper(3))
        .unwrap()
        .training_set(Variant::NoRationale, &users[5..6], None)
        .unwrap();
    assert_eq!(one.examples[0], build(3).examples[5]);
}

/// Asserts that `result` is a configuration error naming the `rationales` argument.
fn assert_rationales_error<T: std::fmt::Debug>(result: Result<T, SftError>) {
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            SftError::Config {
                field: "rationales",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn users_without_a_rationale_are_skipped_and_counted() {
    let ds = common::toy_dataset();
    let builder = ExampleBuilder::new(&ds, DataConfig::paper(1)).unwrap();
    let users = all_users(6);
    let mut rationales = HashMap::new();
    rationales.insert(UserId(0), "Likes sequels.".to_string());
    rationales.insert(UserId(2), "   ".to_string()); // empty counts as missing
    rationales.insert(UserId(4), "Collects racing games.".to_string());
    let set = builder
        .training_set(Variant::Pulse, &users, Some(&rationales))
        .unwrap();
    let got: Vec<UserId> = set.examples.iter().map(|e| e.prompt.user).collect();
    assert_eq!(got, vec![UserId(0), UserId(4)]);
    assert_eq!(
        set.skipped_no_rationale,
        vec![UserId(1), UserId(2), UserId(3), UserId(5)]
    );
    assert_eq!(
        set.examples[1].prompt.rationale.as_deref(),
        Some("Collects racing games.")
    );
    // The rationale does not change anything else about the example.
    let plain = builder
        .training_set(Variant::NoRationale, &[UserId(4)], None)
        .unwrap();
    assert_eq!(
        plain.examples[0].prompt.candidates,
        set.examples[1].prompt.candidates
    );
    // A rationale variant without rationales is a configuration error.
    assert_rationales_error(builder.training_set(Variant::WithReasons, &users, None));
    let err = builder
        .training_set(Variant::Pulse, &[UserId(999)], Some(&rationales))
        .unwrap_err();
    assert!(
        matches!(
            err,
            SftError::Data {
                user: UserId(999),
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_placebo_gives_every_user_another_users_rationale() {
    let ds = common::toy_dataset();
    let builder = ExampleBuilder::new(&ds, DataConfig::paper(1)).unwrap();
    let users = all_users(6);
    let mut rationales = HashMap::new();
    for u in [0, 1, 3, 4, 5] {
        rationales.insert(UserId(u), format!("Reason of user {u}."));
    }
    rationales.insert(UserId(2), " ".to_string());
    let reasons = builder
        .training_set(Variant::WithReasons, &users, Some(&rationales))
        .unwrap();
    let placebo = builder
        .training_set(Variant::ShuffledReasons, &users, Some(&rationales))
        .unwrap();
    // The same users train, on the same examples, skipping the same user.
    assert_eq!(placebo.skipped_no_rationale, vec![UserId(2)]);
    assert_eq!(placebo.skipped_no_rationale, reasons.skipped_no_rationale);
    assert_eq!(placebo.examples.len(), reasons.examples.len());
    let mut given = Vec::new();
    for (p, r) in placebo.examples.iter().zip(&reasons.examples) {
        assert_eq!(p.prompt.user, r.prompt.user);
        assert_eq!(p.prompt.candidates, r.prompt.candidates);
        assert_eq!(p.target, r.target);
        let text = p.prompt.rationale.clone().unwrap();
        // Nobody keeps their own.
        assert_ne!(
            Some(&text),
            r.prompt.rationale.as_ref(),
            "{:?}",
            p.prompt.user
        );
        given.push(text);
    }
    // Every text is used once.
    given.sort();
    let mut own: Vec<String> = reasons
        .examples
        .iter()
        .map(|e| e.prompt.rationale.clone().unwrap())
        .collect();
    own.sort();
    assert_eq!(given, own);
    // Reproducible by seed, and another seed deals them otherwise.
    let again = builder
        .training_set(Variant::ShuffledReasons, &users, Some(&rationales))
        .unwrap();
    assert_eq!(again, placebo);
    let other = ExampleBuilder::new(&ds, DataConfig::paper(2))
        .unwrap()
        .placebo_rationales(&users, &rationales)
        .unwrap();
    let this = builder.placebo_rationales(&users, &rationales).unwrap();
    assert_eq!(this.len(), 5);
    assert_ne!(this, other);
    // One user has nobody to swap with.
    assert_rationales_error(builder.training_set(
        Variant::ShuffledReasons,
        &users[..1],
        Some(&rationales),
    ));
    assert!("shuffled-reasons".parse::<Variant>().unwrap() == Variant::ShuffledReasons);
}

#[test]
fn the_auxiliary_variant_moves_the_rationale_from_the_prompt_to_a_target() {
    let ds = common::toy_dataset();
    let mut config = DataConfig::paper(1);
    config.train_positions = 2;
    let builder = ExampleBuilder::new(&ds, config).unwrap();
    let users = all_users(4);
    let rationales: HashMap<UserId, String> = [0, 2, 3]
        .into_iter()
        .map(|u| (UserId(u), format!("Reason of user {u}.")))
        .collect();
    let reasons = builder
        .training_set(Variant::WithReasons, &users, Some(&rationales))
        .unwrap();
    let aux = builder
        .training_set(Variant::AuxiliaryReasons, &users, Some(&rationales))
        .unwrap();
    // The same users and examples; the text moved from the prompt to the auxiliary target.
    assert_eq!(aux.skipped_no_rationale, vec![UserId(1)]);
    assert_eq!(aux.examples.len(), reasons.examples.len());
    for (a, r) in aux.examples.iter().zip(&reasons.examples) {
        assert_eq!(a.prompt.rationale, None);
        assert_eq!(a.auxiliary, r.prompt.rationale);
        assert_eq!(a.prompt.candidates, r.prompt.candidates);
    }
    assert!(aux.examples.iter().any(|e| e.auxiliary.is_some()));
    assert_rationales_error(builder.training_set(Variant::AuxiliaryReasons, &users, None));
    assert!("auxiliary-reasons".parse::<Variant>().unwrap() == Variant::AuxiliaryReasons);
}

#[test]
fn test_cases_use_stored_candidates_and_disjoint_users() {
    let ds = common::toy_dataset();
    let builder = ExampleBuilder::new(&ds, DataConfig::paper(11)).unwrap();
    let train: HashSet<UserId> = all_users(4).into_iter().collect();
    let test_users = choose_test_users(builder.split(), &train, 5, 11);
    assert_eq!(test_users.len(), 5);
    assert!(test_users.iter().all(|u| !train.contains(u)));
    assert_eq!(
        test_users,
        choose_test_users(builder.split(), &train, 5, 11)
    );
    // Asking for more than exist returns what there is.
    assert_eq!(
        choose_test_users(builder.split(), &train, 100, 11).len(),
        ds.n_users() - 4
    );

    for n in [5, 20] {
        let sets = builder.test_candidates(n).unwrap();
        let cases = builder.test_cases(&test_users, &sets).unwrap();
        for (case, &user) in cases.iter().zip(&test_users) {
            let stored = sets.get(user).unwrap();
            assert_eq!(case.target, builder.split().test(user).unwrap());
            assert_eq!(case.target, stored[0]);
            let mut shown: Vec<_> = case.prompt.candidates.iter().map(|c| c.0).collect();
            let mut want = stored.to_vec();
            shown.sort();
            want.sort();
            assert_eq!(shown, want);
            assert_eq!(case.prompt.history.len(), 3);
            let before = builder.split().history_before(user, Target::Test);
            assert_eq!(
                case.prompt.history[2],
                ds.catalog.title(*before.last().unwrap()).unwrap()
            );
            assert!(case.prompt.rationale.is_none());
        }
    }
    let sets = builder.test_candidates(5).unwrap();
    let err = builder.test_cases(&[UserId(500)], &sets).unwrap_err();
    assert!(
        matches!(
            err,
            SftError::Data {
                user: UserId(500),
                ..
            }
        ),
        "{err}"
    );
    assert!("pulse".parse::<Variant>().unwrap() == Variant::Pulse);
    assert!("tot-likelihood".parse::<Variant>().unwrap() == Variant::TotLikelihood);
    assert!("nope".parse::<Variant>().is_err());
}

#[test]
fn earlier_positions_and_popularity_counts() {
    let ds = common::toy_dataset();
    let users = all_users(ds.n_users());
    let mut config = DataConfig::paper(3);
    config.train_positions = 3;
    config.train_candidates = 4;
    let counts: Vec<u32> = (0..=ds.n_items() as u32).map(|i| 100 + i).collect();
    let builder = ExampleBuilder::new(&ds, config).unwrap().with_popularity(
        counts.clone(),
        PopularityUse {
            show: true,
            order: false,
        },
    );
    let set = builder
        .training_set(Variant::NoRationale, &users, None)
        .unwrap();
    let split = builder.split();
    let mut per_user: HashMap<UserId, usize> = HashMap::new();
    for ex in &set.examples {
        let user = ex.prompt.user;
        let k = per_user.entry(user).or_default();
        let train = split.train(user);
        // The k-th example of a user targets the k-th training item from the end, with the
        // items before it as history.
        let end = train.len() - 1 - *k;
        assert_eq!(ex.target, train[end], "{user} position {k}");
        assert_eq!(ex.prompt.history_items, train[..end].to_vec());
        assert_eq!(ex.prompt.candidates.len(), 4);
        let seq = ds.sequences.items_of(user);
        for (id, _) in ex.prompt.candidates.iter().filter(|c| c.0 != ex.target) {
            assert!(!seq.contains(id), "{user}: negative {id} in the sequence");
        }
        // Counts in shown order; the target's own interaction is taken out.
        let shown = ex.prompt.popularity.as_ref().unwrap();
        for ((id, _), &n) in ex.prompt.candidates.iter().zip(shown) {
            let want = counts[id.index()] - u32::from(*id == ex.target);
            assert_eq!(n, want);
        }
        *k += 1;
    }
    for &user in &users {
        let train = split.train(user).len();
        let want = train.saturating_sub(1).min(3);
        assert_eq!(per_user.get(&user).copied().unwrap_or(0), want, "{user}");
    }
    // Test cases show the counts unchanged.
    let sets = builder.test_candidates(5).unwrap();
    let eval: Vec<UserId> = sets.users().to_vec();
    for case in builder.test_cases(&eval, &sets).unwrap() {
        let shown = case.prompt.popularity.unwrap();
        for ((id, _), n) in case.prompt.candidates.iter().zip(shown) {
            assert_eq!(n, counts[id.index()]);
        }
    }
    let mut bad = DataConfig::paper(3);
    bad.train_positions = 0;
    assert!(matches!(
        ExampleBuilder::new(&ds, bad),
        Err(SftError::Config { .. })
    ));
}

#[test]
fn candidates_can_be_listed_most_bought_first() {
    let ds = common::toy_dataset();
    let users = all_users(ds.n_users());
    // Counts that differ by item, with ties (every third item shares its count).
    let counts: Vec<u32> = (0..=ds.n_items() as u32).map(|i| 10 + i / 3).collect();
    let shuffled = ExampleBuilder::new(&ds, DataConfig::paper(5)).unwrap();
    let ordered = ExampleBuilder::new(&ds, DataConfig::paper(5))
        .unwrap()
        .with_popularity(
            counts.clone(),
            PopularityUse {
                show: false,
                order: true,
            },
        );
    let a = shuffled
        .training_set(Variant::NoRationale, &users, None)
        .unwrap();
    let b = ordered
        .training_set(Variant::NoRationale, &users, None)
        .unwrap();
    for (a, b) in a.examples.iter().zip(&b.examples) {
        // The same candidates, counts not shown, listed by count (the target one lower);
        // ties in the shuffled order.
        assert!(b.prompt.popularity.is_none());
        let count = |id: pulserec_core::ItemId| counts[id.index()] - u32::from(id == b.target);
        let mut want = a.prompt.candidates.clone();
        want.sort_by_key(|(id, _)| std::cmp::Reverse(count(*id)));
        assert_eq!(b.prompt.candidates, want);
    }
}
