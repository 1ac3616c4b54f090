//! The prompt wording (golden) and its tokenisation: the loss mask covers exactly the target.

mod common;

use pulserec_core::{CandidatePrompt, ItemId, UserId};
use pulserec_sft::{
    PROMPT_VERSION, PromptStyle, SftError, SftExample, encode_example, encode_sequence,
};
use pulserec_slm::ChatFormat;

fn example(rationale: Option<&str>) -> SftExample {
    SftExample {
        prompt: CandidatePrompt {
            user: UserId(42),
            history: vec!["Halo 3".into(), "Portal 2".into(), "Fable II".into()],
            history_items: Vec::new(),
            candidates: vec![
                (ItemId(5), "Mario Kart 8".into()),
                (ItemId(9), "Gears of War 2".into()),
            ],
            rationale: rationale.map(str::to_string),
            popularity: None,
        },
        target: ItemId(9),
        auxiliary: None,
        prior: Vec::new(),
    }
}

/// Asserts that `result` is [`SftError::TooLong`] naming `user`.
fn assert_too_long<T: std::fmt::Debug>(result: Result<T, SftError>, user: UserId) {
    let err = result.unwrap_err();
    assert!(
        matches!(err, SftError::TooLong { user: u, .. } if u == user),
        "{err}"
    );
}

#[test]
fn chat_prompt_golden() {
    // Any change here is a wording change: bump PROMPT_VERSION with it.
    assert_eq!(PROMPT_VERSION, "pulserec-sft/1");
    let style = PromptStyle::Chat(ChatFormat::ChatMl);
    let ex = example(Some("They play  Xbox shooters\nwith friends."));
    let expected = "<|im_start|>system\nYou recommend products. From what a customer bought \
recently, pick the one candidate they are most likely to buy next.<|im_end|>\n\
<|im_start|>user\nCustomer 42.\nRecent purchases, oldest first:\n1. Halo 3\n2. Portal 2\n\
3. Fable II\n\nCandidates:\n- Mario Kart 8\n- Gears of War 2\n\nWhich candidate will the \
customer buy next? Reply with its title exactly as listed.<|im_end|>\n<|im_start|>assistant\n\
Let me think: They play Xbox shooters with friends.\nAnswer:";
    assert_eq!(style.render(&ex.prompt), expected);
    assert_eq!(
        style.target(&ex.prompt, ex.target_index()).as_deref(),
        Some(" Gears of War 2<|im_end|>")
    );
    // Without a rationale (test prompts, the no-rationale variant) the cue follows directly.
    let plain = example(None);
    assert!(
        style
            .render(&plain.prompt)
            .ends_with("<|im_start|>assistant\nAnswer:")
    );
    // Dropping history renumbers what is left.
    let dropped = style.render_with_history(&plain.prompt, 2);
    assert!(dropped.contains("oldest first:\n1. Fable II\n\nCandidates:"));
    assert!(
        style
            .render_with_history(&plain.prompt, 3)
            .contains("No recent purchases are known.")
    );
    assert_eq!(PromptStyle::Plain.end_of_turn(), "\n");
}

#[test]
fn loss_mask_covers_exactly_the_target_tokens() {
    let Some(tok) = common::smollm2_tokenizer() else {
        return;
    };
    let style = PromptStyle::Chat(ChatFormat::ChatMl);
    let ex = example(Some("They like shooters."));
    let enc = encode_example(&tok, style, &ex, 512).unwrap();
    assert_eq!(enc.history_dropped, 0);
    let mask = enc.loss_mask();
    assert_eq!(mask.len(), enc.len());
    assert_eq!(mask.iter().sum::<f32>() as usize, enc.target_len());
    assert!(mask[..enc.target_start()].iter().all(|&m| m == 0.0));
    assert!(mask[enc.target_start()..].iter().all(|&m| m == 1.0));
    // The masked tokens are the target, the unmasked ones the whole prompt.
    let target = tok
        .decode(&enc.tokens[enc.target_start()..], false)
        .unwrap();
    assert_eq!(target, " Gears of War 2<|im_end|>");
    let prompt = tok
        .decode(&enc.tokens[..enc.target_start()], false)
        .unwrap();
    assert_eq!(prompt, style.render(&ex.prompt));
    // `<|im_end|>` is one special token, the last one.
    assert_eq!(
        *enc.tokens.last().unwrap(),
        tok.encode("<|im_end|>").unwrap()[0]
    );
}

#[test]
fn truncation_drops_history_never_the_target() {
    let Some(tok) = common::smollm2_tokenizer() else {
        return;
    };
    let style = PromptStyle::Chat(ChatFormat::ChatMl);
    let ex = example(None);
    let full = encode_example(&tok, style, &ex, 512).unwrap();
    // One token short of the full example: the oldest title goes.
    let cut = encode_example(&tok, style, &ex, full.len() - 1).unwrap();
    assert!(cut.history_dropped >= 1);
    assert!(cut.len() < full.len());
    assert_eq!(
        tok.decode(&cut.tokens[cut.target_start()..], false)
            .unwrap(),
        " Gears of War 2<|im_end|>"
    );
    let none = encode_example(&tok, style, &ex, 0).unwrap_err();
    assert!(
        matches!(
            none,
            SftError::TooLong {
                user: UserId(42),
                max_len: 0,
                ..
            }
        ),
        "{none}"
    );
}

#[test]
fn encode_all_skips_only_examples_that_cannot_fit() {
    let Some(tok) = common::smollm2_tokenizer() else {
        return;
    };
    let style = PromptStyle::Chat(ChatFormat::ChatMl);
    let short = example(None);
    let mut long = example(Some(&"because ".repeat(200)));
    long.prompt.user = UserId(7);
    let fits = encode_example(&tok, style, &short, 512).unwrap().len();
    let set = pulserec_sft::encode_all(
        &tok,
        style,
        &[short.clone(), long, short],
        fits,
        pulserec_sft::Objective::Generative,
    )
    .unwrap();
    assert_eq!(set.too_long, vec![UserId(7)]);
    assert_eq!(set.examples.len(), 2);
    assert!(
        set.examples
            .iter()
            .all(|e| e.user == UserId(42) && e.len() <= fits)
    );
}

#[test]
fn sequence_prompt_golden() {
    let mut ex = example(None);
    let style = PromptStyle::Sequence;
    assert_eq!(
        style.render(&ex.prompt),
        "A customer's purchases, oldest first:\n- Halo 3\n- Portal 2\n- Fable II\n-"
    );
    assert_eq!(style.title_target("Gears of War 2"), " Gears of War 2\n");
    ex.prompt.rationale = Some("They play  Xbox\nshooters.".into());
    assert!(
        style
            .render_with_history(&ex.prompt, 2)
            .ends_with("first:\n- Fable II\nWhy the next one: They play Xbox shooters.\n-")
    );
}

/// Titles of the first `n` catalogue items of a real data set, as prompts show them.
fn real_titles(dataset: &pulserec_data::Dataset, n: usize) -> Vec<String> {
    (1..=n.min(dataset.n_items()) as u32)
        .filter_map(|i| dataset.catalog.title(ItemId(i)))
        .map(|t| {
            pulserec_core::text::truncate_chars(&pulserec_core::text::normalize_whitespace(t), 160)
        })
        .collect()
}

/// Every target of a packed row is the title's line, and the tokens before it are exactly what
/// the likelihood selector's context tokenises to: packed training and scoring agree.
fn check_packed_rows(tok: &pulserec_slm::SlmTokenizer, titles: &[String]) {
    let style = PromptStyle::Sequence;
    for chunk in titles.chunks(7) {
        let rows = encode_sequence(tok, UserId(1), chunk, 1, 5, 512).unwrap();
        let mut targets = 0;
        let mut first = 1;
        for row in &rows {
            let history_start = first - 1;
            for (k, span) in row.targets.iter().enumerate() {
                let i = first + k;
                let prompt = CandidatePrompt {
                    user: UserId(1),
                    history: chunk[history_start..i].to_vec(),
                    history_items: Vec::new(),
                    candidates: Vec::new(),
                    rationale: None,
                    popularity: None,
                };
                let context = tok.encode(&style.render(&prompt)).unwrap();
                assert_eq!(
                    row.tokens[..span.start],
                    context[..],
                    "context of `{}` after {:?}",
                    chunk[i],
                    &chunk[history_start..i]
                );
                assert_eq!(
                    row.tokens[span.clone()],
                    tok.encode_continuation(&style.title_target(&chunk[i]))
                        .unwrap()[..]
                );
            }
            targets += row.targets.len();
            first += row.targets.len();
        }
        // Every title after the first is a target exactly once.
        assert_eq!(targets, chunk.len() - 1);
    }
}

#[test]
fn packed_sequences_tokenise_like_the_scored_prompts_on_real_titles() {
    let Some(tok) = common::smollm2_tokenizer() else {
        return;
    };
    if let Some(dir) = pulserec_data::locate::asset("ml-100k") {
        let ds = pulserec_data::load(&dir).unwrap();
        check_packed_rows(&tok, &real_titles(&ds, 300));
    }
    if let Some(dir) = pulserec_data::locate::shared("amazon-games-2018") {
        let ds = pulserec_data::load(&dir).unwrap();
        check_packed_rows(&tok, &real_titles(&ds, 300));
    }
}

#[test]
fn packed_rows_split_at_the_item_and_token_limits() {
    let Some(tok) = common::smollm2_tokenizer() else {
        return;
    };
    let titles: Vec<String> = (0..12).map(|i| format!("Game number {i}")).collect();
    let rows = encode_sequence(&tok, UserId(3), &titles, 2, 5, 512).unwrap();
    // Rows of at most 5 titles, each starting with the previous row's last 2 as context.
    assert_eq!(
        rows.iter().map(|r| r.targets.len()).collect::<Vec<_>>(),
        vec![3, 3, 3, 1]
    );
    assert!(rows.iter().all(|r| r.target_len() > 0));
    let one = rows[0].len();
    let tight = encode_sequence(&tok, UserId(3), &titles, 2, 12, one).unwrap();
    assert!(tight.iter().all(|r| r.len() <= one));
    assert_eq!(tight.iter().map(|r| r.targets.len()).sum::<usize>(), 10);
    // Too short for one target after its context: an error naming the user.
    assert_too_long(
        encode_sequence(&tok, UserId(3), &titles, 2, 5, 10),
        UserId(3),
    );
    assert!(
        encode_sequence(&tok, UserId(3), &titles[..2], 2, 5, 512)
            .unwrap()
            .is_empty()
    );
}

#[test]
fn choice_prompt_golden() {
    let mut ex = example(None);
    let style = PromptStyle::Choice;
    assert_eq!(
        style.render(&ex.prompt),
        "A customer's purchases, oldest first:\n- Halo 3\n- Portal 2\n- Fable II\n\
Which one do they buy next?\nA. Mario Kart 8\nB. Gears of War 2\nAnswer:"
    );
    assert_eq!(
        style.target(&ex.prompt, ex.target_index()).as_deref(),
        Some(" B\n")
    );
    assert_eq!(style.answer(&ex.prompt, 2), None, "no third candidate");
    ex.prompt.popularity = Some(vec![120, 7]);
    ex.prompt.rationale = Some("They like\nshooters.".into());
    assert!(style.render(&ex.prompt).ends_with(
        "- Fable II\nWhy the next one: They like shooters.\nWhich one do they buy next?\n\
A. Mario Kart 8 (bought 120 times)\nB. Gears of War 2 (bought 7 times)\nAnswer:"
    ));
    // Generated answers map by their first letter; a letter past the list is no choice.
    assert_eq!(style.chosen_index(&ex.prompt, " b) Gears"), Some(1));
    assert_eq!(style.chosen_index(&ex.prompt, "A."), Some(0));
    assert_eq!(style.chosen_index(&ex.prompt, " C"), None);
    assert_eq!(style.chosen_index(&ex.prompt, ""), None);
    // The title styles keep the paper's title match.
    assert_eq!(
        PromptStyle::Plain.chosen_index(&ex.prompt, " Gears of War 2"),
        Some(1)
    );
}

#[test]
fn choice_letters_are_one_token_each_and_the_mask_covers_the_answer() {
    let Some(tok) = common::smollm2_tokenizer() else {
        return;
    };
    for letter in pulserec_sft::CHOICE_LETTERS.chars() {
        let ids = tok.encode_continuation(&format!(" {letter}")).unwrap();
        assert_eq!(ids.len(), 1, "` {letter}` is {ids:?}");
    }
    let ex = example(None);
    let enc = encode_example(&tok, PromptStyle::Choice, &ex, 512).unwrap();
    assert_eq!(
        tok.decode(&enc.tokens[enc.target_start()..], false)
            .unwrap(),
        " B\n"
    );
    assert_eq!(
        tok.decode(&enc.tokens[..enc.target_start()], false)
            .unwrap(),
        PromptStyle::Choice.render(&ex.prompt)
    );
}

#[test]
fn a_ranking_example_is_the_prompt_once_then_every_candidate_as_its_own_branch() {
    let Some(tok) = common::smollm2_tokenizer() else {
        return;
    };
    let style = PromptStyle::Sequence;
    let ex = example(None);
    let one = encode_example(&tok, style, &ex, 512).unwrap();
    let ranked = pulserec_sft::encode_ranking(&tok, style, &ex, 512).unwrap();
    // The correct answer first, with exactly the tokens (and position) of the generative example.
    assert_eq!(ranked.targets.len(), 2);
    assert_eq!(ranked.targets[0], one.targets[0]);
    assert_eq!(&ranked.tokens[..one.len()], &one.tokens[..]);
    let answer = |k: usize| {
        tok.decode(&ranked.tokens[ranked.targets[k].clone()], false)
            .unwrap()
    };
    assert_eq!(answer(0), " Gears of War 2\n");
    assert_eq!(answer(1), " Mario Kart 8\n");
    // Segment 0 is the prompt, k + 1 the k-th answer.
    let prompt = ranked.target_start();
    assert!(ranked.segments[..prompt].iter().all(|&s| s == 0));
    for (k, r) in ranked.targets.iter().enumerate() {
        assert!(
            ranked.segments[r.clone()]
                .iter()
                .all(|&s| s == k as u16 + 1)
        );
    }
    assert_eq!(ranked.segments.len(), ranked.len());
    // Too long even without history: refused, naming the user.
    assert_too_long(
        pulserec_sft::encode_ranking(&tok, style, &ex, 3),
        UserId(42),
    );
}

#[test]
fn an_auxiliary_row_is_the_prompt_up_to_the_rationale_cue_then_the_rationale() {
    let Some(tok) = common::smollm2_tokenizer() else {
        return;
    };
    let rationale = "They play  Xbox shooters\nwith friends.";
    for style in [PromptStyle::Sequence, PromptStyle::Chat(ChatFormat::ChatMl)] {
        // As text: the rendering with the rationale, cut after the cue.
        let with = example(Some(rationale));
        let (prompt, target) = style.rationale_target(&with.prompt, 0).unwrap();
        assert!(prompt.ends_with(style.rationale_cue()), "{prompt}");
        assert_eq!(target, " They play Xbox shooters with friends.\n");
        assert!(
            style
                .render(&with.prompt)
                .starts_with(&format!("{prompt}{target}"))
        );
        assert!(style.rationale_target(&example(None).prompt, 0).is_none());
        // As tokens: the prompt carries no rationale, the row learns exactly the rationale.
        let mut ex = example(None);
        ex.auxiliary = Some(rationale.into());
        let row = pulserec_sft::encode_auxiliary(&tok, style, &ex, rationale, 512).unwrap();
        assert!(row.auxiliary && row.segments.is_empty());
        assert_eq!(row.targets.len(), 1);
        assert_eq!(
            tok.decode(&row.tokens[row.targets[0].clone()], false)
                .unwrap(),
            target
        );
        assert_eq!(
            tok.decode(&row.tokens[..row.target_start()], false)
                .unwrap(),
            prompt
        );
        assert_eq!(row.target_start() + row.target_len(), row.len());
        // `encode_all` puts it right after the example's own row, whose prompt has none.
        let set = pulserec_sft::encode_all(
            &tok,
            style,
            std::slice::from_ref(&ex),
            512,
            pulserec_sft::Objective::Ranking,
        )
        .unwrap();
        assert_eq!(set.examples.len(), 2);
        assert!(!set.examples[0].auxiliary);
        assert_eq!(set.examples[1], row);
        assert_eq!(
            set.examples[0],
            pulserec_sft::encode_ranking(&tok, style, &ex, 512).unwrap()
        );
        // Too long even without history: refused, naming the user.
        assert_too_long(
            pulserec_sft::encode_auxiliary(&tok, style, &ex, rationale, 8),
            UserId(42),
        );
    }
}
