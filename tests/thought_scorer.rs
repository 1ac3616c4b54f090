//! The likelihood thought scorer on SmolLM2: reasoning that points at the actual choice makes it
//! more likely than reasoning about something else; batched scoring equals one-by-one scoring;
//! one shared model generates and scores.

use pulserec::pipeline::chat_format;
use pulserec_core::{
    GenerationRequest, HistoryEntry, ItemId, SamplingParams, TextGenerator, ThoughtScorer,
    UserContext, UserId,
};
use pulserec_data::locate::asset;
use pulserec_slm::{SharedSlm, Slm};
use pulserec_tot::LikelihoodThoughtScorer;

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
    let Some(path) = asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let slm = SharedSlm::from(Slm::load(&path, &burn::tensor::Device::flex()).unwrap());
    let chat = slm.chat_format().unwrap();
    let mut scorer = LikelihoodThoughtScorer::new(Box::new(slm.clone()), chat_format(chat));
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

    // The scorer's model is the one that generates: one `Slm` behind both handles.
    let mut generator = slm.clone();
    let request = GenerationRequest {
        prompt: slm.chat_prompt(None, "Name one Halo game.").unwrap(),
        params: SamplingParams::greedy(8),
    };
    let out = generator.generate(std::slice::from_ref(&request)).unwrap();
    assert!(!out[0].text.is_empty());
    assert_eq!(scorer.score(&ctx, &chains).unwrap(), scores);
}
