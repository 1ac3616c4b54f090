//! The likelihood thought scorer on SmolLM2: reasoning that points at the actual choice makes it
//! more likely than reasoning about something else; batched scoring equals one-by-one scoring.

mod common;

use pulserec_core::{HistoryEntry, ItemId, ThoughtScorer, UserContext, UserId};
use pulserec_slm::{LikelihoodThoughtScorer, Slm};

fn entry(id: u32, title: &str) -> HistoryEntry {
    HistoryEntry {
        item: ItemId(id),
        title: title.to_string(),
        rating: None,
        review: None,
    }
}

fn user() -> UserContext {
    UserContext {
        user: UserId(0),
        history: vec![
            entry(1, "Halo 2"),
            entry(2, "Gears of War"),
            entry(3, "Halo: Reach"),
        ],
        target: Some(entry(4, "Halo 4")),
        similar_items: vec![],
    }
}

#[test]
fn reasoning_towards_the_choice_scores_higher() {
    let Some(path) = common::smollm2_path() else {
        return;
    };
    let slm = Slm::load(&path, &burn::tensor::Device::flex()).unwrap();
    let mut scorer = LikelihoodThoughtScorer::new(slm);
    assert_eq!(scorer.name(), "likelihood");
    let chains = vec![
        "They love the Halo series and will buy the next Halo game, Halo 4.".to_string(),
        "They want a new set of kitchen knives and a cookbook.".to_string(),
    ];
    let ctx = user();
    let scores = scorer.score(&ctx, &chains).unwrap();
    assert_eq!(scores.len(), 2);
    assert!(
        scores.iter().all(|s| s.is_finite() && *s < 0.0),
        "{scores:?}"
    );
    assert!(scores[0] > scores[1], "{scores:?}");

    // Two users at once give the same scores as one at a time.
    let other = UserContext {
        user: UserId(1),
        target: Some(entry(5, "Forza Motorsport")),
        ..user()
    };
    let batch = scorer
        .score_batch(&[(&ctx, &chains), (&other, &chains[..1])])
        .unwrap();
    assert_eq!(batch[0].len(), 2);
    for (a, b) in batch[0].iter().zip(&scores) {
        assert!((a - b).abs() < 1e-3, "{a} vs {b}");
    }
    let alone = scorer.score(&other, &chains[..1]).unwrap();
    assert!((batch[1][0] - alone[0]).abs() < 1e-3);

    // Without a chosen item there is nothing to score against.
    let no_target = UserContext {
        target: None,
        ..user()
    };
    assert!(scorer.score(&no_target, &chains).is_err());
}
