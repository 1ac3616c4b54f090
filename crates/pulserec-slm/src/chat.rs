//! Chat templating with the system turn under the caller's control.
//!
//! Models ship Jinja templates; rather than embed a Jinja engine, the common formats are
//! recognised from the template text and rendered here. The template's *default* system turn
//! is never injected: small models are sensitive to it (SmolLM2's default system prompt turns
//! a plain question into French nonsense), so the caller decides.

use crate::error::{Result, SlmError};

/// A chat message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message with the given role.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_string(),
            content: content.to_string(),
        }
    }
}

/// A recognised chat format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChatFormat {
    /// `<|im_start|>role\ncontent<|im_end|>\n` (SmolLM2, Qwen2).
    ChatMl,
    /// `<|role|>\ncontent<|end|>\n` (Phi-3, Phi-4-mini).
    Phi3,
    /// `<|start_header_id|>role<|end_header_id|>\n\ncontent<|eot_id|>` (Llama 3).
    Llama3,
}

impl ChatFormat {
    /// The chat format of `tokenizer`'s template ([`ChatFormat::detect`]).
    pub fn of(tokenizer: &crate::SlmTokenizer) -> Result<Self> {
        let t = tokenizer
            .chat_template()
            .ok_or_else(|| SlmError::ChatTemplate("the model has no chat template".into()))?;
        Self::detect(t)
    }

    /// Recognises the format of a Jinja chat template.
    pub fn detect(template: &str) -> Result<Self> {
        if template.contains("<|im_start|>") {
            Ok(Self::ChatMl)
        } else if template.contains("<|start_header_id|>") {
            Ok(Self::Llama3)
        } else if template.contains("<|end|>") && template.contains("<|assistant|>") {
            Ok(Self::Phi3)
        } else {
            Err(SlmError::ChatTemplate(format!(
                "unrecognised template (supported: ChatML, Phi-3, Llama 3): {}",
                template.chars().take(120).collect::<String>()
            )))
        }
    }

    /// Renders `messages` and opens the assistant turn.
    pub fn render(self, messages: &[ChatMessage]) -> String {
        let mut s = String::new();
        for m in messages {
            match self {
                Self::ChatMl => s.push_str(&format!(
                    "<|im_start|>{}\n{}<|im_end|>\n",
                    m.role, m.content
                )),
                Self::Phi3 => s.push_str(&format!("<|{}|>\n{}<|end|>\n", m.role, m.content)),
                Self::Llama3 => s.push_str(&format!(
                    "<|start_header_id|>{}<|end_header_id|>\n\n{}<|eot_id|>",
                    m.role, m.content
                )),
            }
        }
        s.push_str(match self {
            Self::ChatMl => "<|im_start|>assistant\n",
            Self::Phi3 => "<|assistant|>\n",
            Self::Llama3 => "<|start_header_id|>assistant<|end_header_id|>\n\n",
        });
        s
    }

    /// One user turn, preceded by a system turn only when `system` is `Some` and non-empty.
    pub fn prompt(self, system: Option<&str>, user: &str) -> String {
        let mut msgs = Vec::new();
        if let Some(sys) = system.filter(|s| !s.is_empty()) {
            msgs.push(ChatMessage::new("system", sys));
        }
        msgs.push(ChatMessage::new("user", user));
        self.render(&msgs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chatml_without_system_turn() {
        let f = ChatFormat::detect("{{'<|im_start|>' + message['role']}}").unwrap();
        assert_eq!(
            f.prompt(None, "What is the capital of France?"),
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
        );
        assert_eq!(f.prompt(Some(""), "hi"), f.prompt(None, "hi"));
        assert!(
            f.prompt(Some("Be brief."), "hi")
                .starts_with("<|im_start|>system\nBe brief.<|im_end|>\n")
        );
    }

    #[test]
    fn unknown_template_is_an_error() {
        assert!(ChatFormat::detect("[INST] {{ content }} [/INST]").is_err());
    }
}
