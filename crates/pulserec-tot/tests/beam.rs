//! The beam search visits and keeps exactly what the algorithm says.

mod common;

use common::{BySeed, Scripted, Table};
use pulserec_core::{RationaleGenerator, RationaleSource, UserContext, UserId};
use pulserec_tot::{NodeStatus, TotConfig, TotError, TreeOfThought};

fn config(depth: usize, branching: usize, beam_width: usize) -> TotConfig {
    TotConfig {
        depth,
        branching,
        beam_width,
        ..TotConfig::paper(11)
    }
}

fn user(id: u32) -> UserContext {
    UserContext {
        user: UserId(id),
        ..Default::default()
    }
}

#[test]
fn keeps_the_best_drops_duplicates_and_breaks_ties_by_order() {
    let generator = Scripted::new(&[
        &["A.", "B.", "a!"],
        // Children of A (node 0), then of B (node 1); "C." under B is no duplicate: other parent.
        &["C.", "D.", "  ", "C.", "E.", "F."],
    ]);
    let scorer = Table::new(&[
        ("A.", 1.0),
        ("B.", 2.0),
        ("A. C.", 5.0),
        ("A. D.", 3.0),
        ("B. C.", 5.0),
        ("B. E.", 4.0),
        ("B. F.", f32::NAN),
    ]);
    let mut tot = TreeOfThought::new(generator, scorer, config(2, 3, 2)).unwrap();
    let tree = tot.search(&[user(4)]).unwrap().remove(0);

    let summary: Vec<(Option<usize>, usize, &str, NodeStatus)> = tree
        .nodes
        .iter()
        .map(|n| (n.parent, n.depth, n.text.as_str(), n.status))
        .collect();
    use NodeStatus::*;
    assert_eq!(
        summary,
        vec![
            (None, 1, "A.", Kept),
            (None, 1, "B.", Kept),
            (None, 1, "a!", Duplicate),
            (Some(0), 2, "C.", Kept),
            (Some(0), 2, "D.", Pruned),
            (Some(0), 2, "", Empty),
            (Some(1), 2, "C.", Kept),
            (Some(1), 2, "E.", Pruned),
            (Some(1), 2, "F.", Pruned),
        ]
    );
    assert_eq!(tree.nodes[2].score, None, "duplicates are not scored");
    assert_eq!(tree.scored(), 7);
    assert_eq!(tree.final_beam(), vec![3, 6]);
    assert_eq!(tree.best(), Some(3), "a tie goes to the earlier chain");
    let rationale = tree.rationale();
    assert_eq!(rationale.text, "A. C.");
    assert_eq!(rationale.score, Some(5.0));
    assert_eq!(rationale.source, RationaleSource::TreeOfThought);
    assert!(rationale.parsed);

    let (generator, scorer) = tot.into_parts();
    // One generate call per depth; siblings share a prompt, the chain so far is in it.
    assert_eq!(generator.calls.len(), 2);
    assert_eq!(generator.calls[1].len(), 6);
    assert!(generator.calls[1][0].prompt.contains("Step 1: A.\n"));
    assert!(generator.calls[1][3].prompt.contains("Step 1: B.\n"));
    assert_eq!(generator.calls[1][0].prompt, generator.calls[1][2].prompt);
    // Sampling settings are the paper's; seeds follow (seed, user, depth, parent, child).
    let cfg = config(2, 3, 2);
    let first = &generator.calls[0][1].params;
    assert_eq!(
        (first.temperature, first.top_k, first.top_p),
        (1.0, Some(51), Some(0.95))
    );
    assert_eq!(first.max_new_tokens, 61);
    assert_eq!(first.seed, cfg.child_seed(UserId(4), 1, None, 1));
    assert_eq!(
        generator.calls[1][4].params.seed,
        cfg.child_seed(UserId(4), 2, Some(1), 1)
    );
    // The scorer saw only the scorable chains, one call per depth for this user.
    assert_eq!(scorer.calls[0], vec!["A.", "B."]);
    assert_eq!(
        scorer.calls[1],
        vec!["A. C.", "A. D.", "B. C.", "B. E.", "B. F."]
    );
}

#[test]
fn paper_settings_batch_all_users_into_one_call_per_depth() {
    let mut tot =
        TreeOfThought::new(BySeed::default(), Table::default(), TotConfig::paper(3)).unwrap();
    let users = [user(0), user(1), user(2)];
    let trees = tot.search(&users).unwrap();
    for tree in &trees {
        // 3 first thoughts, then 2 beams x 3 children twice: the paper's ~15 chains per user.
        assert_eq!(tree.nodes.len(), 15);
        assert_eq!(tree.scored(), 15);
        assert_eq!(tree.final_beam().len(), 2);
        assert_eq!(tree.nodes.iter().filter(|n| n.kept()).count(), 6);
        let best = tree.best().unwrap();
        assert_eq!(tree.chain(Some(best)).len(), 3);
    }
    let (generator, scorer) = tot.into_parts();
    assert_eq!(generator.calls, vec![9, 18, 18]);
    // One scorer call per depth, covering all three users.
    assert_eq!(scorer.batches, vec![3, 3, 3]);
}

#[test]
fn a_user_searched_alone_gets_the_same_tree_as_in_a_batch() {
    let mut batch =
        TreeOfThought::new(BySeed::default(), Table::default(), TotConfig::paper(5)).unwrap();
    let trees = batch.search(&[user(0), user(9), user(2)]).unwrap();
    let mut alone =
        TreeOfThought::new(BySeed::default(), Table::default(), TotConfig::paper(5)).unwrap();
    assert_eq!(alone.search(&[user(9)]).unwrap()[0], trees[1]);
    // Another run seed gives other thoughts.
    let mut other =
        TreeOfThought::new(BySeed::default(), Table::default(), TotConfig::paper(6)).unwrap();
    assert_ne!(other.search(&[user(9)]).unwrap()[0], trees[1]);
}

#[test]
fn a_user_without_usable_thoughts_stops_while_others_go_on() {
    // User 0 gets usable first thoughts; user 1 only empty or junk output.
    let generator = Scripted::new(&[
        &["X.", "Y.", "Z.", "", "```", "\"\""],
        &["P.", "Q.", "R.", "S.", "T.", "U."],
    ]);
    let mut tot = TreeOfThought::new(generator, Table::default(), config(2, 3, 2)).unwrap();
    let rationales = tot.rationales(&[user(0), user(1)]).unwrap();
    assert!(!rationales[0].text.is_empty());
    assert_eq!(rationales[1].text, "");
    assert_eq!(rationales[1].score, None);
    assert!(!rationales[1].parsed);
    let (generator, _) = tot.into_parts();
    assert_eq!(
        generator.calls[1].len(),
        6,
        "only user 0 is expanded at depth 2"
    );
}

#[test]
fn fallback_thoughts_are_flagged_in_the_rationale() {
    let generator = Scripted::new(&[&["Step 1: Likes racing.\nStep 2: Likes cars."]]);
    let mut tot = TreeOfThought::new(generator, Table::default(), config(1, 1, 1)).unwrap();
    let r = tot.rationales(&[user(0)]).unwrap().remove(0);
    assert_eq!(r.text, "Likes racing.");
    assert!(!r.parsed);
}

#[test]
fn broken_contracts_and_settings_are_errors() {
    let short = Scripted::new(&[&["only one"]]);
    let mut tot = TreeOfThought::new(short, Table::default(), config(1, 3, 2)).unwrap();
    assert!(matches!(
        tot.search(&[user(0)]),
        Err(TotError::GenerationCount {
            expected: 3,
            got: 1
        })
    ));

    struct Wrong;
    impl pulserec_core::ThoughtScorer for Wrong {
        fn name(&self) -> &str {
            "wrong"
        }
        fn score(&mut self, _: &UserContext, _: &[String]) -> pulserec_core::Result<Vec<f32>> {
            Ok(vec![1.0])
        }
    }
    let mut tot = TreeOfThought::new(BySeed::default(), Wrong, config(1, 3, 2)).unwrap();
    let err = tot.search(&[user(0)]).unwrap_err();
    assert!(
        matches!(
            err,
            TotError::ScoreCount {
                expected: 3,
                got: 1,
                ..
            }
        ),
        "{err}"
    );
    // Through the trait, the error is a core stage error whose source is ours.
    let err = tot.rationales(&[user(0)]).unwrap_err();
    assert!(err.to_string().contains("tree-of-thought"));

    for bad in [config(0, 3, 2), config(3, 0, 2), config(3, 3, 0)] {
        assert!(matches!(
            TreeOfThought::new(BySeed::default(), Table::default(), bad),
            Err(TotError::Config { .. })
        ));
    }
    let mut nan = TotConfig::paper(0);
    nan.sampling.temperature = f32::NAN;
    assert!(TreeOfThought::new(BySeed::default(), Table::default(), nan).is_err());
}
