//! Tokenizers: built from GGUF metadata (byte-level BPE) or loaded from HF `tokenizer.json`.
//!
//! Special tokens (`<|im_start|>`, ...) are recognised inside raw prompt text, so a prompt can
//! be written out in full, chat markup included.

use std::path::Path;
use std::sync::OnceLock;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior, Tokenizer};

use crate::error::{Result, SlmError};
use crate::gguf::GgufFile;

/// GGUF token types that are control/user-defined tokens, matched as whole strings in raw text.
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// Llama-3 / Qwen2 style split regexes (ggml pre-tokenizer names `llama-bpe`, `qwen2`).
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

fn tok_err(e: impl std::fmt::Display) -> SlmError {
    SlmError::Tokenizer(e.to_string())
}

/// A tokenizer plus the facts generation needs: BOS/EOS ids and the chat template.
#[derive(Clone, Debug)]
pub struct SlmTokenizer {
    inner: Tokenizer,
    bos: Option<u32>,
    add_bos: bool,
    eos: Vec<u32>,
    chat_template: Option<String>,
    /// Bytes of text the longest token can cover (computed on first use).
    longest_token: OnceLock<usize>,
}

impl SlmTokenizer {
    /// Builds the tokenizer stored in a GGUF file's `tokenizer.ggml.*` metadata.
    ///
    /// Supports `tokenizer.ggml.model = gpt2` (byte-level BPE) with the pre-tokenizers
    /// `smollm`, `gpt2`/`default`, `llama-bpe` and `qwen2`.
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(SlmError::Tokenizer(format!(
                "{}: tokenizer model `{model}` is not supported (only byte-level BPE `gpt2`)",
                gguf.source()
            )));
        }
        let tokens = gguf.str_array("tokenizer.ggml.tokens")?;
        let merges = gguf.str_array("tokenizer.ggml.merges")?;
        let types: Vec<i64> = match gguf
            .get("tokenizer.ggml.token_type")
            .and_then(|v| v.as_array())
        {
            Some(a) => a.iter().map(|v| v.as_i64().unwrap_or(1)).collect(),
            None => vec![1; tokens.len()],
        };
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .enumerate()
            .map(|(i, m)| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| SlmError::Tokenizer(format!("merge {i} `{m}` has no space")))
            })
            .collect::<Result<_>>()?;
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .build()
            .map_err(tok_err)?;
        let mut inner = Tokenizer::new(bpe);
        let pre = gguf
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        let byte_level = ByteLevel::new(false, true, true);
        let split = |re: &str| -> Result<PreTokenizerWrapper> {
            Ok(Sequence::new(vec![
                Split::new(
                    SplitPattern::Regex(re.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(tok_err)?
                .into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into())
        };
        let pre_tokenizer: PreTokenizerWrapper = match pre {
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            "gpt2" | "default" => byte_level.into(),
            "llama-bpe" | "llama3" => split(LLAMA3_SPLIT)?,
            "qwen2" => split(QWEN2_SPLIT)?,
            other => {
                return Err(SlmError::Tokenizer(format!(
                    "{}: pre-tokenizer `{other}` is not supported",
                    gguf.source()
                )));
            }
        };
        inner.with_pre_tokenizer(Some(pre_tokenizer));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let specials: Vec<AddedToken> = tokens
            .iter()
            .zip(&types)
            .filter(|(_, t)| **t == TOKEN_TYPE_CONTROL || **t == TOKEN_TYPE_USER_DEFINED)
            .map(|(s, _)| AddedToken::from(s.to_string(), true))
            .collect();
        inner.add_special_tokens(&specials);

        let id = |key: &str| {
            gguf.get(key)
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
        };
        let mut eos: Vec<u32> = id("tokenizer.ggml.eos_token_id").into_iter().collect();
        if let Some(eot) = id("tokenizer.ggml.eot_token_id")
            && !eos.contains(&eot)
        {
            eos.push(eot);
        }
        Ok(Self {
            inner,
            bos: id("tokenizer.ggml.bos_token_id"),
            add_bos: gguf
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(false),
            eos,
            chat_template: gguf
                .get("tokenizer.chat_template")
                .and_then(|v| v.as_str())
                .map(str::to_string),
            longest_token: OnceLock::new(),
        })
    }

    /// Loads an HF `tokenizer.json`; `eos` are the end-of-sequence ids (from `config.json` /
    /// `generation_config.json`), `chat_template` the template from `tokenizer_config.json`.
    pub fn from_hf_file(
        path: impl AsRef<Path>,
        bos: Option<u32>,
        add_bos: bool,
        eos: Vec<u32>,
        chat_template: Option<String>,
    ) -> Result<Self> {
        let path = path.as_ref();
        let inner = Tokenizer::from_file(path)
            .map_err(|e| SlmError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Self {
            inner,
            bos,
            add_bos,
            eos,
            chat_template,
            longest_token: OnceLock::new(),
        })
    }

    /// The underlying `tokenizers::Tokenizer`.
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// End-of-sequence token ids (generation stops on any of them).
    pub fn eos_ids(&self) -> &[u32] {
        &self.eos
    }

    /// The beginning-of-sequence id, if the model has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The model's own chat template (Jinja source), if it ships one.
    pub fn chat_template(&self) -> Option<&str> {
        self.chat_template.as_deref()
    }

    /// Vocabulary size including special tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Encodes raw text (special tokens recognised), prepending BOS if the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos
            && let Some(b) = self.bos
        {
            ids.push(b);
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    /// Encodes text that continues a context: no BOS is added.
    pub fn encode_continuation(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tok_err)?;
        Ok(enc.get_ids().to_vec())
    }

    /// The number of tokens [`encode`](Self::encode) gives `text`, or `None` when that is more
    /// than `limit`.
    ///
    /// Text longer than `limit` times the most bytes one token can cover is refused without
    /// tokenising it, so the cost is bounded by `limit` whatever the size of `text` (a server
    /// checks prompts against the context this way).
    pub fn count_within(&self, text: &str, limit: usize) -> Result<Option<usize>> {
        if text.len() > limit.saturating_mul(self.longest_token()) {
            return Ok(None);
        }
        let n = self.encode(text)?.len();
        Ok((n <= limit).then_some(n))
    }

    /// An upper bound on the bytes of text one token covers: the longest vocabulary entry in
    /// bytes (a byte-level or SentencePiece piece is never shorter than the text it stands for),
    /// four times that when a normalizer could shorten the text first.
    fn longest_token(&self) -> usize {
        *self.longest_token.get_or_init(|| {
            let longest = self
                .inner
                .get_vocab(true)
                .keys()
                .map(String::len)
                .max()
                .unwrap_or(1)
                .max(1);
            if self.inner.get_normalizer().is_some() {
                4 * longest
            } else {
                longest
            }
        })
    }

    /// Decodes ids to text; special tokens are dropped when `skip_special` is set.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(tok_err)
    }
}
