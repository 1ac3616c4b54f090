//! Stage-1 rationales over a scripted generator, and contexts from a data set.

mod common;

use common::Scripted;
use pulserec_core::{
    Catalog, HistoryEntry, ItemId, RationaleGenerator, RationaleSource, Sequences, UserContext,
    UserId,
};
use pulserec_data::{Dataset, LeaveOneOut};
use pulserec_tot::{ContextBuilder, HindsightConfig, HindsightRationales, PROMPT_VERSION, Prompt};

fn context(id: u32) -> UserContext {
    let entry = |title: &str| HistoryEntry {
        item: ItemId(1),
        title: title.into(),
        rating: Some(5.0),
        review: None,
    };
    UserContext {
        user: UserId(id),
        history: vec![entry("Halo 3")],
        target: Some(entry("Halo: Reach")),
        similar_items: Vec::new(),
    }
}

#[test]
fn one_call_per_batch_with_paper_sampling_and_per_user_seeds() {
    let generator = Scripted::new(&[
        &[
            r#"{"rationale": "Loves Halo."}"#,
            "Sure! ```json\n{\"rationale\": \"Shooter fan.\"}\n```",
        ],
        &["{\"rationale\": \"Cut off by the lim"],
    ]);
    let config = HindsightConfig {
        batch_size: 2,
        ..HindsightConfig::paper(9)
    };
    let mut stage1 = HindsightRationales::new(generator, config.clone()).unwrap();
    let users = [context(0), context(1), context(2)];
    let outputs = stage1.generate(&users).unwrap();
    let texts: Vec<(&str, bool)> = outputs
        .iter()
        .map(|o| (o.rationale.text.as_str(), o.rationale.parsed))
        .collect();
    assert_eq!(
        texts,
        vec![
            ("Loves Halo.", true),
            ("Shooter fan.", true),
            ("Cut off by the lim", false)
        ]
    );
    assert!(outputs.iter().all(|o| o.prompt_version == PROMPT_VERSION));
    assert!(
        outputs
            .iter()
            .all(|o| o.rationale.source == RationaleSource::Hindsight)
    );
    assert_eq!(outputs[2].seed, config.user_seed(UserId(2)));
    let stats = stage1.stats();
    assert_eq!((stats.total, stats.failures), (3, 1));

    let generator = stage1.into_generator();
    assert_eq!(generator.calls.len(), 2);
    assert_eq!(generator.calls[0].len(), 2);
    let params = &generator.calls[0][1].params;
    assert_eq!((params.temperature, params.max_new_tokens), (0.7, 150));
    assert_eq!(params.seed, config.user_seed(UserId(1)));
    assert_ne!(generator.calls[0][0].params.seed, params.seed);
    assert!(
        generator.calls[0][0]
            .prompt
            .contains("chose next: Halo: Reach")
    );
}

#[test]
fn the_chat_format_is_the_callers() {
    // The prompt opens the JSON answer; the model only continues it.
    let generator = Scripted::new(&[&["x\"}"]]);
    let format = |p: &Prompt| {
        format!(
            "<sys>{}</sys><user>{}</user>",
            p.system.as_deref().unwrap_or(""),
            p.user
        )
    };
    let mut stage1 = HindsightRationales::new(generator, HindsightConfig::paper(0))
        .unwrap()
        .with_format(Box::new(format));
    let r = stage1.rationales(&[context(0)]).unwrap();
    assert_eq!(r[0].text, "x");
    let prompt = &stage1.into_generator().calls[0][0].prompt;
    assert!(prompt.starts_with("<sys>") && prompt.ends_with("</user>{\"rationale\": \""));
}

#[test]
fn wrong_generation_count_and_bad_settings_are_errors() {
    let generator = Scripted::new(&[&[]]);
    let mut stage1 = HindsightRationales::new(generator, HindsightConfig::paper(0)).unwrap();
    assert!(stage1.rationales(&[context(0)]).is_err());
    let bad = HindsightConfig {
        batch_size: 0,
        ..HindsightConfig::paper(0)
    };
    assert!(HindsightRationales::new(Scripted::default(), bad).is_err());
}

#[test]
fn contexts_hide_valid_and_test_items() {
    let mut catalog = Catalog::new();
    for t in ["A", "B", "C", "D", "E", "F", "G"] {
        catalog.push(t.to_lowercase(), format!("Game {t}"), String::new());
    }
    // User 0: A B C D E (train A B C, valid D, test E); user 1: F G A B C (train F G A).
    let items = [1, 2, 3, 4, 5, 6, 7, 1, 2, 3].map(ItemId).to_vec();
    let ratings = vec![5.0, 4.0, 3.0, 2.0, 1.0, 5.0, 5.0, 5.0, 5.0, 5.0];
    let reviews: Vec<String> = ["fun", "", "meh", "", "", "", "", "", "", ""]
        .map(String::from)
        .to_vec();
    let sequences =
        Sequences::from_parts(vec![0, 5, 10], items, Some(ratings), None, Some(reviews)).unwrap();
    let ds = Dataset::from_parts(catalog, sequences, vec!["u0".into(), "u1".into()]).unwrap();
    let split = LeaveOneOut::new(&ds.sequences);
    let ctx = ContextBuilder::default()
        .context(&ds, &split, UserId(0), &[UserId(1), UserId(0)])
        .unwrap();
    let titles: Vec<&str> = ctx.history.iter().map(|e| e.title.as_str()).collect();
    assert_eq!(titles, ["Game A", "Game B"]);
    assert_eq!(ctx.history[0].review.as_deref(), Some("fun"));
    assert_eq!(ctx.history[1].review, None);
    let target = ctx.target.unwrap();
    assert_eq!(
        (target.title.as_str(), target.rating),
        ("Game C", Some(3.0))
    );
    assert_eq!(target.review.as_deref(), Some("meh"));
    // Similar user 1's last two training items, newest first, minus the user's own history.
    let similar: Vec<&str> = ctx.similar_items.iter().map(|e| e.title.as_str()).collect();
    assert_eq!(similar, ["Game G"]);
    // Unknown users have no context.
    assert!(
        ContextBuilder::default()
            .context(&ds, &split, UserId(7), &[])
            .is_none()
    );
}
