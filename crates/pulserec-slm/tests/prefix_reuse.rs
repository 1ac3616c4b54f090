//! Reusing a prompt's keys and values: a cache built from stored prefixes, with hidden gaps
//! between a prefix and the rest of a prompt, must give the logits of a fresh prefill, at the
//! prompt's last token and while decoding after it; and generation through `Slm`'s prefix
//! store must give the same tokens as without the store.

mod common;

use std::path::PathBuf;

use burn::tensor::Device;
use pulserec_core::{GenerationRequest, SamplingParams};
use pulserec_slm::weights::ModelWeights;
use pulserec_slm::{KvCache, Llama, LlamaConfig, LoadOptions, Slm, WeightMode};

fn tiny(arch: &str) -> Llama {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/hf")
        .join(arch);
    let cfg = LlamaConfig::from_hf_json(dir.join("config.json")).unwrap();
    let w = ModelWeights::from_hf_dir(&dir, &cfg).unwrap();
    Llama::new(cfg, &w, WeightMode::Dense, &Device::flex()).unwrap()
}

fn ids(seed: u32, n: usize, vocab: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i * 7 + seed * 13 + 3) % vocab as u32)
        .collect()
}

/// Logits after `prompt` and after each of `then`, from a fresh one-row cache.
fn reference(m: &Llama, prompt: &[u32], then: &[u32]) -> Vec<Vec<f32>> {
    let mut cache = m.new_cache(1);
    let h = m.forward(prompt, 1, &[], &mut cache).unwrap();
    let mut out = vec![m.last_logits(h).unwrap()];
    for &t in then {
        let h = m.forward(&[t], 1, &[], &mut cache).unwrap();
        out.push(m.last_logits(h).unwrap());
    }
    out
}

fn row(logits: &[f32], r: usize, vocab: usize) -> &[f32] {
    &logits[r * vocab..(r + 1) * vocab]
}

fn check(arch: &str) {
    let m = tiny(arch);
    let vocab = m.config().vocab_size;
    let stored = ids(1, 30, vocab);
    // Prompts sharing 20 and 12 leading tokens with the stored one, then their own tokens.
    let a: Vec<u32> = stored[..20]
        .iter()
        .copied()
        .chain(ids(2, 7, vocab))
        .collect();
    let b: Vec<u32> = stored[..12]
        .iter()
        .copied()
        .chain(ids(3, 5, vocab))
        .collect();
    let c = ids(4, 10, vocab);
    let next = [5u32, 9];

    let mut full = m.new_cache(1);
    m.forward(&stored, 1, &[], &mut full).unwrap();
    let entry = full.compact_row(0).unwrap();
    assert_eq!((entry.batch(), entry.len()), (1, 30));

    // Row 0: 20 reused slots; row 1: 12, left-padded by 8 hidden slots; the rests are
    // left-padded to 7 tokens (row 1's 5 after a hidden gap of 2).
    let mut cache = KvCache::from_prefixes(&[(&entry, 20), (&entry, 12)], 4).unwrap();
    assert_eq!(cache.hidden(1), std::slice::from_ref(&(0..8)));
    let mut rest = a[20..].to_vec();
    rest.extend([0, 0]);
    rest.extend_from_slice(&b[12..]);
    let h = m.forward(&rest, 2, &[0, 2], &mut cache).unwrap();
    assert_eq!(cache.hidden(1), &[0..8, 20..22]);
    assert_eq!(cache.positions(1, 27, 1), vec![17]);
    let got = m.last_logits(h).unwrap();
    let (want_a, want_b) = (reference(&m, &a, &next), reference(&m, &b, &next));
    let tol = 1e-4;
    let d = common::max_abs_diff(row(&got, 0, vocab), &want_a[0]);
    assert!(d < tol, "{arch}: reused prefix of 20, max |diff| {d}");
    let d = common::max_abs_diff(row(&got, 1, vocab), &want_b[0]);
    assert!(
        d < tol,
        "{arch}: reused prefix of 12 with gaps, max |diff| {d}"
    );

    // Joined with a freshly prefilled shorter prompt (left-padded to 27 slots), then decoded.
    let mut cold = m.new_cache(1).with_reserve(2);
    m.forward(&c, 1, &[], &mut cold).unwrap();
    let mut joined = KvCache::cat_rows(vec![cache, cold]).unwrap();
    assert_eq!((joined.batch(), joined.len()), (3, 27));
    assert_eq!(joined.hidden(2), std::slice::from_ref(&(0..17)));
    let want_c = reference(&m, &c, &next);
    for (step, &t) in next.iter().enumerate() {
        let h = m.forward(&[t; 3], 3, &[], &mut joined).unwrap();
        let got = m.last_logits(h).unwrap();
        for (r, want) in [&want_a, &want_b, &want_c].into_iter().enumerate() {
            let d = common::max_abs_diff(row(&got, r, vocab), &want[step + 1]);
            assert!(
                d < tol,
                "{arch}: decode step {step}, row {r}, max |diff| {d}"
            );
        }
    }
}

#[test]
fn reused_prefixes_with_hidden_gaps_give_the_logits_of_a_fresh_prefill() {
    check("llama");
    check("qwen2");
}

/// Decode steps on a forked cache (each prompt's slots read in place, once for all the rows
/// that continue it) give the bits of the same steps on copied rows, and within 1e-4 the logits
/// of prefilling each whole sequence at once (attention by gemm and the masked softmax, not the
/// decode kernel). The two prompts differ in length, so the shorter one has hidden slots.
#[test]
fn forked_rows_decode_as_copied_rows_and_as_a_whole_prefill() {
    for arch in ["llama", "qwen2"] {
        let m = tiny(arch);
        let vocab = m.config().vocab_size;
        let (p0, p1) = (ids(5, 11, vocab), ids(6, 7, vocab));
        let mut prompts = p0.clone();
        prompts.extend(std::iter::repeat_n(0, 4));
        prompts.extend_from_slice(&p1);
        let mut base = m.new_cache(2);
        m.forward(&prompts, 2, &[0, 4], &mut base).unwrap();
        // Rows 0 and 2 continue prompt 0, rows 1 and 3 prompt 1; each row its own tokens.
        let rows = [0, 1, 0, 1];
        let mut forked = base.fork(&rows, 3).unwrap();
        let mut copied = base.select_rows(&rows).unwrap();
        let steps: [[u32; 4]; 3] = [[1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]];
        for (s, tokens) in steps.iter().enumerate() {
            let a = m
                .last_logits(m.forward(tokens, 4, &[], &mut forked).unwrap())
                .unwrap();
            let b = m
                .last_logits(m.forward(tokens, 4, &[], &mut copied).unwrap())
                .unwrap();
            assert!(
                same_bits(&a, &b),
                "{arch}: step {s}, forked and copied rows differ"
            );
            for (r, &p) in rows.iter().enumerate() {
                let mut whole = if p == 0 { p0.clone() } else { p1.clone() };
                whole.extend(steps[..=s].iter().map(|t| t[r]));
                let want = reference(&m, &whole, &[]).remove(0);
                let d = common::max_abs_diff(row(&a, r, vocab), &want);
                assert!(d < 1e-4, "{arch}: step {s}, row {r}, max |diff| {d}");
            }
        }
        // Compacting keeps the rows' prompts shared and their numbers.
        let mut kept = forked.select_rows(&[3, 0]).unwrap();
        let mut kept_copied = copied.select_rows(&[3, 0]).unwrap();
        let a = m
            .last_logits(m.forward(&[13, 14], 2, &[], &mut kept).unwrap())
            .unwrap();
        let b = m
            .last_logits(m.forward(&[13, 14], 2, &[], &mut kept_copied).unwrap())
            .unwrap();
        assert!(same_bits(&a, &b), "{arch}: after compaction");
        // A forked row stored as a prefix is its visible slots, as a copied row's.
        let (x, y) = (
            kept.compact_row(0).unwrap(),
            kept_copied.compact_row(0).unwrap(),
        );
        assert_eq!((x.len(), x.hidden(0)), (y.len(), y.hidden(0)));
        assert!(base.fork(&[2], 0).is_err());
    }
}

#[test]
fn bad_prefix_batches_are_errors() {
    let m = tiny("llama");
    let mut full = m.new_cache(1);
    m.forward(&ids(1, 8, m.config().vocab_size), 1, &[], &mut full)
        .unwrap();
    let entry = full.compact_row(0).unwrap();
    assert!(KvCache::from_prefixes(&[], 0).is_err());
    assert!(KvCache::from_prefixes(&[(&entry, 9)], 0).is_err());
    assert!(KvCache::from_prefixes(&[(&entry, 0)], 0).is_err());
    assert!(full.compact_row(1).is_err());
    assert!(KvCache::cat_rows(Vec::new()).is_err());
    assert!(KvCache::cat_rows(vec![m.new_cache(1)]).is_err());
}

/// Tree-of-Thought's pattern on SmolLM2: prompts that repeat a long context and differ at
/// the end, sampled with per-request seeds. With the store the second call prefills only the
/// differing ends, and every call gives the tokens of a model without a store.
#[test]
fn generation_through_the_prefix_store_equals_generation_without_it() {
    let Some(path) = common::smollm2_path() else {
        return;
    };
    let load = |bytes| {
        let opts = LoadOptions {
            prefix_cache_bytes: bytes,
            ..LoadOptions::default()
        };
        Slm::load_with(&path, &Device::flex(), &opts).unwrap()
    };
    let (with, without) = (load(1 << 28), load(0));
    let context = "A customer bought, oldest first: 1. Halo 3 2. Gears of War 3. Forza \
                   Motorsport 4. an Xbox 360 wireless controller 5. Mass Effect 2. ";
    let prompt = |tail: &str| with.chat_prompt(None, &format!("{context}{tail}")).unwrap();
    let request = |prompt: String, seed| GenerationRequest {
        prompt,
        params: SamplingParams {
            temperature: 1.0,
            top_k: Some(51),
            top_p: Some(0.95),
            max_new_tokens: 12,
            seed,
            ..SamplingParams::default()
        },
    };
    let first: Vec<GenerationRequest> = (0..3)
        .map(|s| request(prompt("Write the first step of the reasoning."), s))
        .collect();
    let second: Vec<GenerationRequest> = ["They like shooters.", "They own an Xbox 360."]
        .iter()
        .enumerate()
        .flat_map(|(i, step)| {
            let p = prompt(&format!("Reasoning so far: {step} Write step 2."));
            (0..3).map(move |s| request(p.clone(), 10 * i as u64 + s))
        })
        .collect();
    // Prompt tokens of a call's distinct prompts.
    let whole = |requests: &[GenerationRequest]| {
        let mut distinct: Vec<&str> = requests.iter().map(|r| r.prompt.as_str()).collect();
        distinct.dedup();
        distinct
            .iter()
            .map(|p| with.tokenizer().encode(p).unwrap().len())
            .sum::<usize>()
    };
    for requests in [&first, &second] {
        let (got, stats) = with.generate_with_stats(requests).unwrap();
        let (want, plain) = without.generate_with_stats(requests).unwrap();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g.token_ids, w.token_ids);
        }
        if std::ptr::eq(requests, &second) {
            assert!(
                stats.prefill_tokens * 3 < whole(requests),
                "the shared context was prefilled again: {} of {} tokens",
                stats.prefill_tokens,
                whole(requests)
            );
            // Without a store, the two prompts' shared context still runs once.
            assert!(plain.prefill_tokens < whole(requests), "{plain:?}");
        } else {
            assert_eq!(stats.prefill_tokens, plain.prefill_tokens);
        }
    }
}

/// Prompts of one call that share a long start (a scorer's chains for one user) run it once,
/// with the numbers of prompts run whole: a continuation's log-probabilities are the same to
/// the bit scored beside prompts sharing its context and scored alone. (Beside a context of
/// another length that shares nothing, they differ in the last bits: the continuation then
/// attends over left padding; that was so before sharing too.)
#[test]
fn prompts_sharing_a_start_in_one_call_run_it_once_with_the_same_bits() {
    let Some(path) = common::smollm2_path() else {
        return;
    };
    let opts = LoadOptions {
        prefix_cache_bytes: 0,
        ..LoadOptions::default()
    };
    let slm = Slm::load_with(&path, &Device::flex(), &opts).unwrap();
    let context = "A customer bought, oldest first:\n- Halo 3\n- Gears of War\n- Forza \
                   Motorsport\n- an Xbox 360 wireless controller\n- Mass Effect 2\n\nReasoning: ";
    let chains = [
        "They like shooters on the Xbox.",
        "They own an Xbox 360 and play racing games.",
        "A role-playing fan.",
    ];
    let prompts: Vec<String> = chains
        .iter()
        .map(|c| {
            let user = format!("{context}{c}\n\nWhich item did they buy next?");
            slm.chat_prompt(None, &user).unwrap()
        })
        .collect();
    let contexts: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| slm.tokenizer().encode(p).unwrap())
        .collect();
    let target = slm.tokenizer().encode_continuation(" Halo: Reach").unwrap();
    // The target's scores given each context, all in one call, are those of one call each.
    let same_together_and_alone = |contexts: &[Vec<u32>], what: &str| {
        let targets = vec![target.clone(); contexts.len()];
        let together = slm.score_ids(contexts, &targets).unwrap();
        for (i, c) in contexts.iter().enumerate() {
            let alone = slm
                .score_ids(std::slice::from_ref(c), std::slice::from_ref(&target))
                .unwrap();
            assert!(same_bits(&alone[0], &together[i]), "{what} {i}");
        }
    };
    same_together_and_alone(&contexts, "context");

    // The next depth: two chains, each with two continuations. The continuations of a chain
    // share the context and that chain, and all four share the context: the chains' starts
    // are run once, each from the context run once.
    let deeper: Vec<Vec<u32>> = chains[..2]
        .iter()
        .flat_map(|c| {
            ["Both are shooters.", "They prefer couch co-op."].map(|next| {
                let user = format!("{context}{c} {next}\n\nWhich item did they buy next?");
                let prompt = slm.chat_prompt(None, &user).unwrap();
                slm.tokenizer().encode(&prompt).unwrap()
            })
        })
        .collect();
    same_together_and_alone(&deeper, "deeper context");

    // The chains' shared context runs once.
    let requests: Vec<GenerationRequest> = prompts
        .iter()
        .map(|p| GenerationRequest {
            prompt: p.clone(),
            params: SamplingParams {
                max_new_tokens: 2,
                ..SamplingParams::default()
            },
        })
        .collect();
    let (_, stats) = slm.generate_with_stats(&requests).unwrap();
    let whole: usize = contexts.iter().map(Vec::len).sum();
    // The start all three share (two of them share a token more).
    let shared = contexts[0]
        .iter()
        .zip(&contexts[2])
        .take_while(|(a, b)| a == b)
        .count();
    assert!(shared >= 40, "{shared}");
    assert!(stats.prefill_tokens <= whole - 2 * shared, "{stats:?}");
}

fn same_bits(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

/// A prompt's numbers on SmolLM2 (quantised weights, `WeightMode::Auto`) are the same to the
/// bit alone, left-padded in a batch with a longer prompt, in a batch of 40 prompts (past the
/// quantised kernels' row limit), and continued from another prompt's stored prefix; so are a
/// decode step's, alone and beside a copy of itself, and a continuation's log-probabilities
/// scored alone and beside a longer one. This is what lets the prefix store and batching change
/// speed without changing a sampled token.
#[test]
fn a_prompt_gives_the_same_bits_alone_batched_and_from_a_stored_prefix() {
    let Some(path) = common::smollm2_path() else {
        return;
    };
    let slm = Slm::load(&path, &Device::flex()).unwrap();
    let m = slm.model();
    let vocab = m.config().vocab_size;
    let encode = |user: &str| {
        let text = slm.chat_prompt(None, user).unwrap();
        slm.tokenizer().encode(&text).unwrap()
    };
    let context = "A customer bought, oldest first: 1. Halo 3 2. Gears of War 3. Forza \
                   Motorsport 4. an Xbox 360 wireless controller 5. Mass Effect 2 6. Portal 2. ";
    let p = encode(&format!("{context}Write the first step."));
    let other = encode(&format!("{context}They like shooters. Write step 2."));
    let long = encode(&format!("{context}{context}Which one next?"));
    let shared = p.iter().zip(&other).take_while(|(a, b)| a == b).count();
    assert!(shared >= 16 && shared + 2 <= p.len() && long.len() > p.len());

    let alone = |prompt: &[u32]| {
        let mut cache = m.new_cache(1);
        let h = m.forward(prompt, 1, &[], &mut cache).unwrap();
        (m.last_logits(h).unwrap(), cache)
    };
    let (want, mut cache) = alone(&p);

    let pad = long.len() - p.len();
    let mut tokens = vec![0; pad];
    tokens.extend_from_slice(&p);
    tokens.extend_from_slice(&long);
    let mut padded = m.new_cache(2);
    let h = m.forward(&tokens, 2, &[pad, 0], &mut padded).unwrap();
    assert!(
        same_bits(&m.last_logits(h).unwrap()[..vocab], &want),
        "padded"
    );

    let many: Vec<u32> = (0..40).flat_map(|_| p.iter().copied()).collect();
    let mut wide = m.new_cache(40);
    let h = m.forward(&many, 40, &[], &mut wide).unwrap();
    assert!(
        same_bits(&m.last_logits(h).unwrap()[39 * vocab..], &want),
        "40 rows"
    );

    let (_, stored) = alone(&other);
    let entry = stored.compact_row(0).unwrap();
    let mut warm = KvCache::from_prefixes(&[(&entry, shared)], 1).unwrap();
    let h = m.forward(&p[shared..], 1, &[], &mut warm).unwrap();
    assert!(
        same_bits(&m.last_logits(h).unwrap(), &want),
        "stored prefix"
    );

    // One decode step: alone, from the stored prefix, and as one of two identical rows.
    let mut twice = m.new_cache(2);
    m.forward(&[p.clone(), p.clone()].concat(), 2, &[], &mut twice)
        .unwrap();
    let step = |cache: &mut KvCache, rows| {
        let h = m.forward(&vec![42; rows], rows, &[], cache).unwrap();
        m.last_logits(h).unwrap()
    };
    let want = step(&mut cache, 1);
    assert!(
        same_bits(&step(&mut warm, 1), &want),
        "decode after a stored prefix"
    );
    assert!(
        same_bits(&step(&mut twice, 2)[..vocab], &want),
        "decode beside a copy"
    );

    // Two-token continuations scored alone, then beside a longer one (right-padded in one
    // batch; the context now comes from the store).
    let short = p[3..5].to_vec();
    let alone = slm
        .score_ids(std::slice::from_ref(&p), std::slice::from_ref(&short))
        .unwrap();
    let both = slm
        .score_ids(&[p.clone(), p.clone()], &[short, p[3..9].to_vec()])
        .unwrap();
    assert!(same_bits(&alone[0], &both[0]), "likelihood");
}
