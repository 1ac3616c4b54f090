//! The whole pipeline end to end on a tiny slice of ML-100K with the real SmolLM2 and MiniLM
//! assets: every stage's outputs exist and agree with each other, a rerun skips finished stages,
//! a partial store resumes, and config errors name their key.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use pulserec::config::{BaselineKind, EvalSplit, PipelineConfig, ScorerKind, SelectorKind};
use pulserec::pipeline::{PipelineError, StageStatus};
use pulserec::{Pipeline, Stage};
use pulserec_data::locate;
use pulserec_tot::RationaleStore;
use serde_json::Value;

/// Tiny budgets: 60 users, 6 with rationales, a one-level tree with two children.
fn tiny_config(run_dir: &Path) -> Option<PipelineConfig> {
    let data = locate::asset("ml-100k")?;
    let slm = locate::asset("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")?;
    let encoder = locate::asset("all-minilm-l6-v2")?;
    let mut c = PipelineConfig::quickstart();
    c.run_dir = run_dir.to_path_buf();
    c.data.path = data;
    c.data.fallback = None;
    c.data.max_users = Some(60);
    c.assets.slm = slm;
    c.assets.encoder = encoder;
    c.sasrec.epochs = 2;
    c.rationales.users = 6;
    c.rationales.batch_size = 3;
    c.rationales.max_new_tokens = 16;
    c.thought_space.epochs = 1;
    c.thought_space.batch_size = 2;
    c.thought_space.negatives = 1;
    c.thought_space.held_out = 2;
    c.thought_space.max_len = 64;
    c.tot.depth = 1;
    c.tot.branching = 2;
    c.tot.beam_width = 1;
    c.tot.max_new_tokens = 12;
    c.tot.batch_size = 3;
    c.tot.scorers = vec![ScorerKind::Consistency];
    c.eval.users = 10;
    Some(c)
}

fn json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn store_users(dir: &Path) -> Vec<u32> {
    RationaleStore::open(dir)
        .unwrap()
        .load()
        .unwrap()
        .iter()
        .map(|r| r.user.0)
        .collect()
}

/// Part files of a store, sorted.
fn parts(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| !p.file_name().unwrap().to_string_lossy().ends_with(".tmp"))
        .collect();
    v.sort();
    v
}

fn done_markers(run: &Path) -> Vec<(Stage, String)> {
    Stage::ALL
        .into_iter()
        .filter_map(|s| {
            std::fs::read_to_string(run.join(s.folder()).join("done.json"))
                .ok()
                .map(|t| (s, t))
        })
        .collect()
}

#[test]
fn pipeline_runs_end_to_end_caches_and_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let Some(mut config) = tiny_config(&run) else {
        return;
    };
    // Both scorers: the likelihood one scores with the SLM that generates (one copy).
    config.tot.scorers = vec![ScorerKind::Consistency, ScorerKind::Likelihood];
    let pipeline = Pipeline::new(config.clone()).unwrap();
    let summary = pipeline.run_until(Stage::Tot).unwrap();
    let ran: Vec<Stage> = summary
        .stages
        .iter()
        .map(|(s, status)| {
            assert!(matches!(status, StageStatus::Ran(_)), "{s:?} {status:?}");
            *s
        })
        .collect();
    assert_eq!(ran, Stage::ALL[..5].to_vec());

    // Prepare: the slice, candidate sets of both sizes, disjoint users.
    let users = json(&run.join("prepare/users.json"));
    let training: Vec<u32> = serde_json::from_value(users["training"].clone()).unwrap();
    let evaluation: Vec<u32> = serde_json::from_value(users["evaluation"].clone()).unwrap();
    assert_eq!(training.len(), 6);
    assert_eq!(evaluation.len(), 10);
    let t: BTreeSet<_> = training.iter().collect();
    assert!(evaluation.iter().all(|u| !t.contains(u)));
    let prepared = pulserec_data::PreparedDataset::load(run.join("prepare/data")).unwrap();
    assert_eq!(prepared.dataset.n_users(), 60);
    for size in [5, 20] {
        let sets = prepared
            .candidates_for(pulserec_data::Target::Test, size - 1)
            .unwrap();
        for &u in &evaluation {
            assert_eq!(sets.get(pulserec_core::UserId(u)).unwrap().len(), size);
        }
    }

    // SASRec: checkpoint, metrics of its own protocol, similar users.
    assert!(run.join("sasrec/checkpoint").is_dir());
    let m = json(&run.join("sasrec/metrics.json"));
    assert_eq!(m["epochs_run"], 2);
    let similar = std::fs::read_to_string(run.join("sasrec/similar_users.tsv")).unwrap();
    let similar_users: Vec<u32> = similar
        .lines()
        .map(|l| l.split('\t').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(similar_users, training);
    assert!(
        similar
            .lines()
            .all(|l| l.split('\t').nth(1).unwrap().split(' ').count() == 5)
    );

    // Stores: one record per training user, in every store.
    assert_eq!(store_users(&run.join("rationales/hindsight")), training);
    let tot_dir = run.join("tot/consistency");
    assert_eq!(store_users(&tot_dir), training);
    let tot = RationaleStore::open(&tot_dir).unwrap().load().unwrap();
    assert!(
        tot.iter()
            .all(|r| r.scorer.as_deref() == Some("consistency"))
    );
    assert!(
        tot.iter()
            .filter(|r| !r.text.is_empty())
            .all(|r| r.score.is_some())
    );
    let by_likelihood = run.join("tot/likelihood");
    assert_eq!(store_users(&by_likelihood), training);
    let chosen = RationaleStore::open(&by_likelihood)
        .unwrap()
        .load()
        .unwrap();
    assert!(chosen.iter().all(|r| {
        r.scorer.as_deref() == Some("likelihood")
            && (r.text.is_empty() || r.score.is_some_and(|s| s.is_finite() && s < 0.0))
    }));
    let settings = json(&run.join("tot/settings.json"));
    assert_eq!(settings["prompt"], pulserec_tot::PROMPT_VERSION);

    // Thought Space: a loadable checkpoint, retrieval before and after, the map and the curve.
    assert!(run.join("thought_space/space/thought_space.json").is_file());
    let ts = json(&run.join("thought_space/metrics.json"));
    assert_eq!(ts["held_out_pairs"], 2);
    assert!(ts["after"]["accuracy"].as_f64().is_some());
    for (plot, title) in [
        ("thought_space/map.svg", "held-out pairs, after training"),
        ("thought_space/loss.svg", "Thought-Space training loss"),
        ("sasrec/loss.svg", "SASRec training loss"),
    ] {
        let svg = std::fs::read_to_string(run.join(plot)).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains(title), "{plot}");
    }

    // Run directory: resolved config and report.
    let resolved = PipelineConfig::from_file(&run.join("config.toml")).unwrap();
    assert_eq!(resolved, config);
    let report = std::fs::read_to_string(&summary.report).unwrap();
    assert!(
        report.contains("| SASRec |") && report.contains("map.svg"),
        "{report}"
    );
    assert!(report.contains("| PULSE | not run |"), "{report}");
    assert!(summary.results.cells.is_empty(), "nothing evaluated yet");

    // A rerun skips every finished stage and writes nothing new.
    let markers = done_markers(&run);
    let tot_parts = parts(&tot_dir);
    let again = Pipeline::new(config.clone())
        .unwrap()
        .run_until(Stage::Tot)
        .unwrap();
    assert!(
        again
            .stages
            .iter()
            .all(|(_, s)| matches!(s, StageStatus::Skipped(_)))
    );
    assert_eq!(done_markers(&run), markers);
    assert_eq!(parts(&tot_dir), tot_parts);

    // A Tree-of-Thought run killed after its first batch: the rerun does only what is missing.
    std::fs::remove_file(run.join("tot/done.json")).unwrap();
    let kept = parts(&tot_dir);
    for p in &kept[1..] {
        std::fs::remove_file(p).unwrap();
    }
    let resumed = Pipeline::new(config.clone())
        .unwrap()
        .run_until(Stage::Tot)
        .unwrap();
    assert!(matches!(resumed.stages[4].1, StageStatus::Ran(_)));
    assert_eq!(parts(&tot_dir).len(), tot_parts.len());
    // Every user's seeds are derived from (run seed, user), so the redone users get the same
    // chains; only the recorded wall time differs.
    let content = |records: Vec<pulserec_tot::StoredRationale>| -> Vec<_> {
        records
            .into_iter()
            .map(|r| (r.user, r.text, r.score, r.parsed, r.tokens))
            .collect()
    };
    assert_eq!(
        content(RationaleStore::open(&tot_dir).unwrap().load().unwrap()),
        content(tot),
        "a resumed store ends with the same records as an uninterrupted one"
    );

    // Changed settings are refused, naming the key, instead of mixing two runs in one store.
    let mut changed = config.clone();
    changed.tot.depth = 2;
    let e = Pipeline::new(changed)
        .unwrap()
        .run_until(Stage::Tot)
        .unwrap_err();
    assert!(
        matches!(e, PipelineError::SettingsChanged { stage: "tot", .. }),
        "{e}"
    );
    assert!(e.to_string().contains("tot.depth"), "{e}");
    assert_eq!(
        PipelineConfig::from_file(&run.join("config.toml")).unwrap(),
        config,
        "a refused run leaves the resolved config alone"
    );

    // Stage 4 and the evaluation: one adapter per variant, trained on the training users, and
    // HR@1 of each tuned SLM on the evaluation users' stored candidates.
    let full = Pipeline::new(config.clone()).unwrap().run().unwrap();
    assert!(matches!(full.stages[5].1, StageStatus::Ran(_)));
    assert!(matches!(full.stages[6].1, StageStatus::Ran(_)));
    for v in &config.sft.variants {
        let dir = run.join("sft").join(v.name());
        let train = json(&dir.join("train.json"));
        assert_eq!(train["training_users"], 6, "{train}");
        let examples = train["examples"].as_u64().unwrap();
        let skipped = train["skipped_no_rationale"].as_u64().unwrap()
            + train["skipped_no_target"].as_u64().unwrap()
            + train["skipped_too_long"].as_u64().unwrap();
        assert_eq!(examples + skipped, 6, "{train}");
        assert!(examples > 0);
        let adapter = dir.join(train["adapter"].as_str().unwrap());
        assert!(adapter.join("adapter_config.json").is_file(), "{adapter:?}");
        assert!(
            adapter.join("adapter_model.safetensors").is_file(),
            "{adapter:?}"
        );
        let losses = train["report"]["step_losses"].as_array().unwrap();
        assert!(!losses.is_empty() && losses.iter().all(|l| l.as_f64().unwrap().is_finite()));
        let svg = std::fs::read_to_string(dir.join("loss.svg")).unwrap();
        assert!(svg.contains("optimiser step"), "{svg}");
    }
    let report = std::fs::read_to_string(&full.report).unwrap();
    assert!(
        report.contains("## LoRA SFT") && report.contains("pulse/loss.svg"),
        "{report}"
    );
    assert!(
        report.contains("Paired differences") && report.contains("by the position"),
        "{report}"
    );

    // Evaluation: every row (baselines, then variants) on the same users and candidate lists,
    // with one prediction per user and list size in the data files' ids.
    let raw_users: Vec<String> = evaluation
        .iter()
        .map(|&u| {
            prepared
                .dataset
                .raw_user_id(pulserec_core::UserId(u))
                .unwrap()
                .to_string()
        })
        .collect();
    let eval_dir = run.join("eval/test");
    let rows: Vec<&str> = config
        .eval
        .baselines
        .iter()
        .map(|b| b.name())
        .chain(config.sft.variants.iter().map(|v| v.name()))
        .collect();
    assert_eq!(rows.len(), 5 + config.sft.variants.len());
    let mut shown: Option<Vec<Vec<String>>> = None;
    for row in &rows {
        let eval = json(&eval_dir.join(format!("{row}.json")));
        assert_eq!(eval["users"], 10, "{row}");
        let predictions =
            pulserec::results::read_predictions(&eval_dir.join(format!("{row}.jsonl"))).unwrap();
        assert_eq!(predictions.len(), 20, "{row}: 10 users x 2 sizes");
        for size in [5, 20] {
            let of_size: Vec<_> = predictions
                .iter()
                .filter(|p| p.candidates.len() == size)
                .collect();
            let users: Vec<String> = of_size.iter().map(|p| p.user.clone()).collect();
            assert_eq!(users, raw_users, "{row}: every evaluation user, in order");
            assert!(
                of_size
                    .iter()
                    .all(|p| p.variant == *row && p.split == "test" && p.data == "ml100k")
            );
            assert!(of_size.iter().all(|p| p.target_position().is_some()));
            let hits = of_size.iter().filter(|p| p.hit).count();
            let hr1 = eval["candidates"][size.to_string()]["HR@1"]
                .as_f64()
                .unwrap();
            assert!(
                (hr1 - hits as f64 / 10.0).abs() < 1e-9,
                "{row}: {hr1} vs {hits} hits"
            );
            assert_eq!(full.results.hr1(row, size), Some(hr1), "{row}");
        }
        // Every row sees the same candidates in the same order.
        let lists: Vec<Vec<String>> = predictions.iter().map(|p| p.candidates.clone()).collect();
        match &shown {
            Some(first) => assert_eq!(&lists, first, "{row}"),
            None => shown = Some(lists),
        }
    }
    // Most popular chooses the candidate with the most training interactions over the whole
    // data files, the first listed on ties.
    let counts: Vec<u32> =
        serde_json::from_value(json(&run.join("prepare/popularity.json"))).unwrap();
    let catalog = &prepared.dataset.catalog;
    let count_of = |raw: &str| {
        // Index 0 of the raw ids is the padding slot.
        let id = catalog
            .raw_ids()
            .iter()
            .skip(1)
            .position(|r| r == raw)
            .unwrap()
            + 1;
        counts[id]
    };
    for p in pulserec::results::read_predictions(&eval_dir.join("most-popular.jsonl")).unwrap() {
        let best = p.candidates.iter().map(|c| count_of(c)).max().unwrap();
        let first = p.candidates.iter().find(|c| count_of(c) == best).unwrap();
        assert_eq!(p.chosen.as_deref(), Some(first.as_str()));
    }
    let pooled = pulserec::pipeline::summarize(&[Pipeline::new(config.clone()).unwrap()]).unwrap();
    assert!(
        pooled.contains("| most popular | ")
            && pooled.contains("| PULSE - SFT without rationale | 5 |"),
        "{pooled}"
    );

    // A run killed while evaluating the second variant redoes only that variant, with the same
    // result (the adapters are not retrained).
    let last = config.sft.variants.last().unwrap().name();
    let eval_file = eval_dir.join(format!("{last}.json"));
    let before = json(&eval_file)["candidates"].clone();
    let trained = std::fs::read_to_string(run.join("sft").join(last).join("train.json")).unwrap();
    std::fs::remove_file(eval_dir.join("done.json")).unwrap();
    std::fs::remove_file(&eval_file).unwrap();
    let again = Pipeline::new(config.clone()).unwrap().run().unwrap();
    assert!(matches!(again.stages[5].1, StageStatus::Skipped(_)));
    assert!(matches!(again.stages[6].1, StageStatus::Ran(_)));
    let after = json(&eval_file)["candidates"].clone();
    for size in ["5", "20"] {
        assert_eq!(after[size]["HR@1"], before[size]["HR@1"], "{size}");
    }
    assert_eq!(
        std::fs::read_to_string(run.join("sft").join(last).join("train.json")).unwrap(),
        trained
    );

    // Another run evaluates these adapters (`sft.adapters_from`, as the cross-domain experiments
    // do) with the paper's generative selector, on the validation split: sampled answers mapped
    // to candidates, for the item before each user's test item.
    let run2 = tmp.path().join("generative");
    let mut generative = config.clone();
    generative.run_dir = run2.clone();
    generative.sft.adapters_from = Some(run.clone());
    generative.eval.selector = SelectorKind::Generative;
    generative.eval.split = EvalSplit::Valid;
    generative.eval.baselines = vec![BaselineKind::MostPopular];
    generative.eval.users = 4;
    let second = Pipeline::new(generative.clone()).unwrap().run().unwrap();
    assert!(matches!(second.stages[6].1, StageStatus::Ran(_)));
    let eval_users: Vec<u32> =
        serde_json::from_value(json(&run2.join("prepare/users.json"))["evaluation"].clone())
            .unwrap();
    assert_eq!(eval_users.len(), 4);
    let split = pulserec_data::LeaveOneOut::new(&prepared.dataset.sequences);
    for v in &generative.sft.variants {
        let train = json(&run2.join("sft").join(v.name()).join("train.json"));
        assert_eq!(train["copied_from"], serde_json::json!(run), "{train}");
        let dir = run2.join("eval/valid");
        let eval = json(&dir.join(format!("{}.json", v.name())));
        let lines =
            pulserec::results::read_predictions(&dir.join(format!("{}.jsonl", v.name()))).unwrap();
        for size in [5, 20] {
            let hr1 = eval["candidates"][size.to_string()]["HR@1"]
                .as_f64()
                .unwrap();
            let lines: Vec<_> = lines
                .iter()
                .filter(|p| p.candidates.len() == size)
                .collect();
            assert_eq!(lines.len(), 4);
            for (p, &u) in lines.iter().zip(&eval_users) {
                let valid = split
                    .target(pulserec_core::UserId(u), pulserec_data::Target::Valid)
                    .unwrap();
                assert_eq!(p.target, prepared.dataset.catalog.raw_id(valid).unwrap());
                assert_eq!(p.split, "valid");
            }
            // Generated answers are kept (one may be empty if the model ends at once); HR@1
            // counts the hits among them.
            assert!(lines.iter().any(|p| !p.answer.is_empty()));
            let hits = lines.iter().filter(|p| p.hit).count();
            assert!(
                (hr1 - hits as f64 / 4.0).abs() < 1e-9,
                "{hr1} vs {hits} hits"
            );
        }
    }
}

/// The `choice` prompt: lettered candidates listed by and shown with their popularity counts,
/// two training positions per user, scored on one letter per candidate.
#[test]
fn choice_prompt_trains_on_two_positions_and_scores_letters() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("choice");
    let Some(mut config) = tiny_config(&run) else {
        return;
    };
    config.sft.variants = vec![pulserec_sft::Variant::NoRationale];
    config.sft.prompt = pulserec::config::PromptKind::Choice;
    config.sft.positions = 2;
    config.sft.train_candidates = Some(5);
    config.sft.show_popularity = true;
    config.sft.order_by_popularity = true;
    config.eval.baselines = vec![BaselineKind::MostPopular, BaselineKind::BaseSlm];
    config.eval.candidates = vec![5, 20];
    let summary = Pipeline::new(config.clone()).unwrap().run().unwrap();
    assert!(matches!(summary.stages[6].1, StageStatus::Ran(_)));

    // Two examples per training user whose training sequence has a second-to-last item.
    let prepared = pulserec_data::PreparedDataset::load(run.join("prepare/data")).unwrap();
    let split = pulserec_data::LeaveOneOut::new(&prepared.dataset.sequences);
    let training: Vec<u32> =
        serde_json::from_value(json(&run.join("prepare/users.json"))["training"].clone()).unwrap();
    let want: usize = training
        .iter()
        .map(|&u| {
            split
                .train(pulserec_core::UserId(u))
                .len()
                .saturating_sub(1)
                .min(2)
        })
        .sum();
    let train = json(&run.join("sft/no-rationale/train.json"));
    assert_eq!(train["examples"], serde_json::json!(want), "{train}");
    assert!(want > training.len());

    // Every SLM row ranks all candidates of both sizes (20 letters fit).
    for row in ["base-slm", "no-rationale"] {
        let lines =
            pulserec::results::read_predictions(&run.join(format!("eval/test/{row}.jsonl")))
                .unwrap();
        for size in [5, 20] {
            let n = lines.iter().filter(|p| p.candidates.len() == size).count();
            assert_eq!(n, 10, "{row} at {size}");
        }
        assert!(
            lines
                .iter()
                .all(|p| p.chosen.is_some() && p.answer.is_empty())
        );
    }
}

#[test]
fn config_errors_name_the_key_before_any_work() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("never");
    let mut c = PipelineConfig::quickstart();
    c.run_dir = run.clone();
    c.tot.branching = 0;
    let e = Pipeline::new(c.clone()).err().expect("refused").to_string();
    assert!(
        e.contains("`tot.branching` = 0") && e.contains("at least 1"),
        "{e}"
    );
    assert!(!run.exists(), "nothing is written for a refused config");

    c.tot.branching = 2;
    let text = c
        .to_toml()
        .unwrap()
        .replace("[sasrec]\n", "[sasrec]\nepoch = 3\n");
    assert!(text.contains("epoch = 3"));
    let path = tmp.path().join("bad.toml");
    std::fs::write(&path, text).unwrap();
    let e = PipelineConfig::from_file(&path).unwrap_err().to_string();
    assert!(e.contains("epoch") && e.contains("bad.toml"), "{e}");
}

/// Each stored rationale's user and text, in user order.
fn texts(dir: &Path) -> Vec<(u32, String)> {
    let mut v: Vec<(u32, String)> = RationaleStore::open(dir)
        .unwrap()
        .load()
        .unwrap()
        .into_iter()
        .map(|r| (r.user.0, r.text))
        .collect();
    v.sort();
    v
}

/// The `stage` of an [`PipelineError::Incomplete`], and its missing users' shard indices.
fn incomplete(
    result: Result<pulserec::pipeline::RunSummary, PipelineError>,
) -> (&'static str, Vec<u32>) {
    match result {
        Err(PipelineError::Incomplete {
            stage,
            shards,
            missing,
            ..
        }) => (stage, missing.iter().map(|u| u.0 % shards).collect()),
        other => panic!("expected a stage missing shards, got {other:?}"),
    }
}

/// A generator that fails once it has been asked for more than `left` prompts.
struct FailAfter {
    inner: pulserec_slm::Slm,
    left: usize,
}

impl pulserec_core::TextGenerator for FailAfter {
    fn generate(
        &mut self,
        requests: &[pulserec_core::GenerationRequest],
    ) -> pulserec_core::Result<Vec<pulserec_core::Generation>> {
        if requests.len() > self.left {
            return Err(pulserec_core::Error::stage(
                "test generator",
                std::io::Error::other("the engine died"),
            ));
        }
        self.left -= requests.len();
        self.inner.generate(requests)
    }
}

#[test]
fn generation_stages_on_a_server_in_shards_write_the_stores_of_the_local_run() {
    use pulserec::config::{GeneratorConfig, GeneratorKind};
    use pulserec::pipeline::{Shard, StageState};
    use pulserec::serve::{CompletionServer, ServeConfig};

    let tmp = tempfile::tempdir().unwrap();
    let Some(mut local) = tiny_config(&tmp.path().join("local")) else {
        return;
    };
    // Every generate call holds one user's prompts, as every server call below holds one
    // prompt: a prompt's numbers do not depend on its batch or on the prefix store, but a
    // decode step's do depend on the padding of the rows beside it (float summation order).
    local.rationales.batch_size = 1;
    local.tot.batch_size = 1;
    Pipeline::new(local.clone())
        .unwrap()
        .run_until(Stage::Tot)
        .unwrap();

    // The same SmolLM2 behind the project's own OpenAI-compatible server, over loopback,
    // taking one prompt per generate call.
    let slm = pulserec_slm::Slm::load(&local.assets.slm, &burn::tensor::Device::flex()).unwrap();
    let serve = ServeConfig {
        batch_prompts: 1,
        ..ServeConfig::for_slm(&slm)
    };
    let server = CompletionServer::start("127.0.0.1:0", "smollm2", slm, serve).unwrap();
    let mut remote = local.clone();
    remote.run_dir = tmp.path().join("remote");
    remote.generator = GeneratorConfig {
        kind: GeneratorKind::Remote,
        base_url: Some(server.url()),
        model: Some("smollm2".into()),
        concurrency: 2,
        ..GeneratorConfig::default()
    };
    // Two "machines" sharing the run directory, one shard each.
    let shard = |i: u32| {
        Pipeline::new(remote.clone())
            .unwrap()
            .with_shard(Shard { index: i, count: 2 })
    };
    let (stage, shards) = incomplete(shard(0).run_until(Stage::Tot));
    assert_eq!(stage, "rationales");
    assert!(
        !shards.is_empty() && shards.iter().all(|&s| s == 1),
        "{shards:?}"
    );
    let verification = Pipeline::new(remote.clone()).unwrap().verify().unwrap();
    assert!(!verification.complete());
    let rationales = &verification.stages[2];
    assert_eq!(rationales.state, StageState::Started);
    assert_eq!(rationales.stores[0].shards, 2);
    assert_eq!(rationales.stores[0].missing.len(), shards.len());
    assert!(
        verification.to_string().contains("missing"),
        "{verification}"
    );
    // One machine alone does not generate the other shard's users: it names them.
    let (stage, again) = incomplete(Pipeline::new(remote.clone()).unwrap().run_until(Stage::Tot));
    assert_eq!((stage, again.len()), ("rationales", shards.len()));
    // The second shard completes the rationales; its Tree-of-Thought part waits for the first.
    let (stage, shards) = incomplete(shard(1).run_until(Stage::Tot));
    assert_eq!(stage, "tot");
    assert!(
        !shards.is_empty() && shards.iter().all(|&s| s == 0),
        "{shards:?}"
    );
    shard(0).run_until(Stage::Tot).unwrap();
    let verification = Pipeline::new(remote.clone()).unwrap().verify().unwrap();
    for check in &verification.stages[..5] {
        assert!(
            matches!(check.state, StageState::Done | StageState::NotNeeded(_)),
            "{verification}"
        );
        assert!(
            check.stores.iter().all(|s| s.missing.is_empty()),
            "{verification}"
        );
    }

    // Same prompts, same per-request seeds: the same rationales and the same chosen chains.
    for store in ["rationales/hindsight", "tot/consistency"] {
        let (a, b) = (
            texts(&local.run_dir.join(store)),
            texts(&remote.run_dir.join(store)),
        );
        assert_eq!(a.len(), local.rationales.users, "{store}");
        assert_eq!(a, b, "{store}");
    }
    // The endpoint and model are part of the generation stages' settings (the key never is).
    let settings = json(&remote.run_dir.join("rationales/settings.json"));
    assert_eq!(settings["generator"]["base_url"], server.url());
    assert_eq!(settings["generator"]["model"], "smollm2");

    drop(server);

    // A server that dies in the middle of the stage (its generator fails after 4 prompts, as a
    // killed engine would): the stage stops with the batches done so far stored (one user
    // each); restarted against a healthy server it resumes with the missing users only, and
    // ends with the local run's store.
    let load =
        || pulserec_slm::Slm::load(&local.assets.slm, &burn::tensor::Device::flex()).unwrap();
    let dying = FailAfter {
        inner: load(),
        left: 4,
    };
    let one_prompt = ServeConfig {
        batch_prompts: 1,
        ..ServeConfig::default()
    };
    let server =
        CompletionServer::start("127.0.0.1:0", "smollm2", dying, one_prompt.clone()).unwrap();
    let mut killed = remote.clone();
    killed.run_dir = tmp.path().join("killed");
    killed.generator.base_url = Some(server.url());
    killed.generator.concurrency = 1;
    killed.generator.retries = 0;
    let err = Pipeline::new(killed.clone())
        .unwrap()
        .run_until(Stage::Rationales)
        .unwrap_err()
        .to_string();
    assert!(err.contains("HTTP 500"), "{err}");
    let store = killed.run_dir.join("rationales/hindsight");
    let first = texts(&store);
    assert_eq!(first.len(), 4, "the batches before the failure are stored");
    assert_eq!(parts(&store).len(), 4);
    // The engine restarts on the same address.
    let addr = server.url().trim_start_matches("http://").to_string();
    drop(server);
    let server = CompletionServer::start(addr.as_str(), "smollm2", load(), one_prompt).unwrap();
    Pipeline::new(killed.clone())
        .unwrap()
        .run_until(Stage::Rationales)
        .unwrap();
    assert_eq!(
        parts(&store).len(),
        6,
        "the resumed run added the two missing users"
    );
    assert_eq!(
        texts(&store),
        texts(&local.run_dir.join("rationales/hindsight"))
    );

    // The generative selector on the same server: the base SLM's row is answered by the
    // engine, one request per prompt, and the row and the stage settings name the endpoint.
    let mut served = killed.clone();
    served.run_dir = tmp.path().join("served-eval");
    served.eval.selector = pulserec::config::SelectorKind::Generative;
    served.eval.baselines = vec![
        pulserec::config::BaselineKind::Random,
        pulserec::config::BaselineKind::BaseSlm,
    ];
    served.eval.candidates = vec![5];
    served.sft.variants = Vec::new();
    Pipeline::new(served.clone())
        .unwrap()
        .run_until(Stage::Eval)
        .unwrap();
    let eval = served.run_dir.join("eval/test");
    let row = json(&eval.join("base-slm.json"));
    assert_eq!(row["generator"]["base_url"], server.url());
    assert_eq!(row["generator"]["model"], "smollm2");
    assert_eq!(row["selector"], "generative");
    assert!(json(&eval.join("random.json")).get("generator").is_none());
    assert_eq!(
        json(&eval.join("settings.json"))["generator"]["model"],
        "smollm2"
    );
    let predictions = pulserec::results::read_predictions(&eval.join("base-slm.jsonl")).unwrap();
    assert_eq!(predictions.len(), served.eval.users);
    for p in &predictions {
        assert!(!p.answer.trim().is_empty(), "{p:?}");
        assert!(
            p.chosen.as_ref().is_none_or(|c| p.candidates.contains(c)),
            "{p:?}"
        );
    }

    let url = server.url();
    drop(server);

    // A server that is gone: the stage fails with an error naming the endpoint, writes no
    // rationale and is not marked done.
    let mut dead = killed.clone();
    dead.run_dir = tmp.path().join("dead");
    let err = Pipeline::new(dead.clone())
        .unwrap()
        .run_until(Stage::Rationales)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("{url}/v1/completions")), "{err}");
    assert!(texts(&dead.run_dir.join("rationales/hindsight")).is_empty());
    assert!(!dead.run_dir.join("rationales/done.json").exists());

    // An API key variable that is not set is named (the key itself never appears anywhere).
    let mut keyless = dead.clone();
    keyless.run_dir = tmp.path().join("keyless");
    keyless.generator.api_key_env = Some("PULSEREC_TEST_KEY_THAT_IS_NOT_SET".into());
    let err = Pipeline::new(keyless)
        .unwrap()
        .run_until(Stage::Rationales)
        .unwrap_err()
        .to_string();
    assert!(err.contains("PULSEREC_TEST_KEY_THAT_IS_NOT_SET"), "{err}");
}
