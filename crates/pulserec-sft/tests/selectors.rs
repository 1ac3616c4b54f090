//! The candidate selectors and the evaluation on scripted models.

use std::collections::HashMap;

use indicatif::ProgressBar;
use pulserec_core::{
    CandidatePrompt, CandidateSelector, FinishReason, Generation, GenerationRequest, ItemId,
    LikelihoodRequest, LikelihoodScorer, TextGenerator, UserId,
};
use pulserec_sft::{
    GenerativeConfig, GenerativeSelector, LikelihoodConfig, LikelihoodSelector, PromptStyle,
    Reduction, SftExample, evaluate, match_answer,
};

/// Answers each user with a scripted text; records the requests.
struct Scripted {
    answers: HashMap<u32, String>,
    seen: Vec<GenerationRequest>,
}

impl TextGenerator for Scripted {
    fn generate(&mut self, r: &[GenerationRequest]) -> pulserec_core::Result<Vec<Generation>> {
        self.seen.extend_from_slice(r);
        Ok(r.iter()
            .map(|q| {
                // The prompt names the customer; answer by that id.
                let id: u32 = q
                    .prompt
                    .split("Customer ")
                    .nth(1)
                    .unwrap()
                    .split('.')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap();
                Generation {
                    text: self.answers[&id].clone(),
                    token_ids: vec![],
                    logprobs: vec![],
                    finish: FinishReason::Eos,
                }
            })
            .collect())
    }
}

fn case(user: u32, titles: &[&str], target: usize) -> SftExample {
    SftExample {
        prompt: CandidatePrompt {
            user: UserId(user),
            history: vec!["Something".into()],
            history_items: Vec::new(),
            candidates: titles
                .iter()
                .enumerate()
                .map(|(i, t)| (ItemId(user * 10 + i as u32 + 1), t.to_string()))
                .collect(),
            rationale: None,
            popularity: None,
        },
        target: ItemId(user * 10 + target as u32 + 1),
        auxiliary: None,
        prior: Vec::new(),
    }
}

#[test]
fn generative_answers_map_by_normalised_substring() {
    let titles = [
        "Tom &amp; Jerry: War",
        "Halo 3",
        "Halo 3: ODST",
        "Zelda",
        "Metroid",
    ];
    let cases = vec![
        case(1, &titles, 0), // entity, case and punctuation differ: a hit
        case(2, &titles, 2), // "Halo 3: ODST" contains "Halo 3": the longer one is chosen
        case(3, &titles, 3), // names nothing
        case(4, &titles, 4), // names two: HR@1 (paper) hits, the choice is the earlier one
    ];
    let answers = HashMap::from([
        (1, " TOM & JERRY -- war!".to_string()),
        (2, " halo 3 odst".to_string()),
        (3, " I cannot decide.".to_string()),
        (4, " Zelda or maybe Metroid".to_string()),
    ]);
    let mut selector = GenerativeSelector::new(
        Scripted {
            answers,
            seen: vec![],
        },
        PromptStyle::Plain,
        GenerativeConfig::paper(9),
    );
    let eval = evaluate(
        &mut selector,
        "generative",
        &cases,
        3,
        &ProgressBar::hidden(),
    )
    .unwrap();
    let chosen: Vec<Option<ItemId>> = eval.outcomes.iter().map(|o| o.chosen).collect();
    assert_eq!(
        chosen,
        vec![Some(ItemId(11)), Some(ItemId(23)), None, Some(ItemId(44))]
    );
    let hits: Vec<bool> = eval.outcomes.iter().map(|o| o.hit).collect();
    assert_eq!(hits, vec![true, true, false, true]);
    let m = &eval.metrics;
    assert_eq!((m.users, m.candidates), (4, 5));
    assert!((m.hr_at_1 - 0.75).abs() < 1e-12);
    assert!((m.choice_accuracy - 0.5).abs() < 1e-12);
    assert!((m.valid_answer - 0.75).abs() < 1e-12);
    // user 2 names "halo 3" and "halo 3 odst"; user 4 names two titles
    assert!((m.multiple_matches - 0.5).abs() < 1e-12);
    assert!((m.random_baseline - 0.2).abs() < 1e-12);
    assert!(m.ranking.is_none());

    // The paper's sampling settings, one seed per user, stable across calls.
    let scripted = selector.into_inner();
    let p = &scripted.seen[0].params;
    assert_eq!(
        (p.temperature, p.top_p, p.max_new_tokens),
        (0.3, Some(0.9), 59)
    );
    let seeds: Vec<u64> = scripted.seen.iter().map(|r| r.params.seed).collect();
    assert_eq!(
        seeds.iter().collect::<std::collections::HashSet<_>>().len(),
        4
    );
    assert!(scripted.seen[0].prompt.ends_with("Answer:"));
    assert!(match_answer("", &titles).chosen.is_none());
}

/// Scores a continuation by how many `x` it has (one token per character).
struct CountX {
    calls: usize,
}

impl LikelihoodScorer for CountX {
    fn log_likelihoods(&mut self, r: &[LikelihoodRequest]) -> pulserec_core::Result<Vec<Vec<f32>>> {
        self.calls += 1;
        Ok(r.iter()
            .map(|q| {
                assert!(q.context.ends_with("Answer:"));
                q.continuation
                    .chars()
                    .map(|c| if c == 'x' { -0.1 } else { -1.0 })
                    .collect()
            })
            .collect())
    }
}

#[test]
fn likelihood_ranking_picks_the_best_and_ranks_all() {
    let cases = vec![
        case(1, &["aaa", "xxx", "axa"], 1), // target best: rank 1
        case(2, &["xxxx", "ab", "xxa"], 2), // target second: rank 2
        case(3, &["b", "xx", "xx"], 1),     // tie with another: pessimistic rank 2
    ];
    let config = LikelihoodConfig {
        reduction: Reduction::Mean,
        include_end_of_turn: false,
    };
    let mut selector = LikelihoodSelector::new(CountX { calls: 0 }, PromptStyle::Plain, config);
    let eval = evaluate(
        &mut selector,
        "likelihood",
        &cases,
        10,
        &ProgressBar::hidden(),
    )
    .unwrap();
    assert_eq!(selector.into_inner().calls, 1);
    let chosen: Vec<Option<ItemId>> = eval.outcomes.iter().map(|o| o.chosen).collect();
    // On a tie the first listed candidate wins: user 3's choice is its target.
    assert_eq!(
        chosen,
        vec![Some(ItemId(12)), Some(ItemId(21)), Some(ItemId(32))]
    );
    let m = &eval.metrics;
    assert!((m.hr_at_1 - 2.0 / 3.0).abs() < 1e-12);
    assert!((m.valid_answer - 1.0).abs() < 1e-12);
    let ranking = m.ranking.as_ref().unwrap();
    // Ranks 1, 2, 2 (pessimistic): HR@1 from scores is 1/3, NDCG@3 = (1 + 2/log2(3)) / 3.
    assert!((ranking["HR@1"] - 1.0 / 3.0).abs() < 1e-12);
    let ndcg3 = (1.0 + 2.0 / 3f64.log2()) / 3.0;
    assert!((ranking["NDCG@3"] - ndcg3).abs() < 1e-9);
    assert!(!ranking.contains_key("NDCG@5"));

    // The predictions file holds the outcomes, one JSON line each, in order.
    let dir = std::env::temp_dir().join(format!("pulserec-sft-pred-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("predictions.jsonl");
    eval.write_predictions(&path).unwrap();
    let lines: Vec<pulserec_sft::Outcome> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, eval.outcomes);
    // A missing folder is created; a path below a file is an error naming it.
    let nested = dir.join("new-folder").join("p.jsonl");
    eval.write_predictions(&nested).unwrap();
    assert!(nested.is_file());
    let below_file = path.join("p.jsonl");
    let err = eval.write_predictions(&below_file).unwrap_err();
    assert!(err.to_string().contains("predictions.jsonl"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_generator_that_miscounts_is_an_error() {
    struct Empty;
    impl TextGenerator for Empty {
        fn generate(&mut self, _: &[GenerationRequest]) -> pulserec_core::Result<Vec<Generation>> {
            Ok(vec![])
        }
    }
    let mut s = GenerativeSelector::new(Empty, PromptStyle::Plain, GenerativeConfig::paper(0));
    let err = s.select(&[case(1, &["a", "b"], 0).prompt]).unwrap_err();
    assert!(
        err.to_string().contains("returned 0 results for 1"),
        "{err}"
    );
}
