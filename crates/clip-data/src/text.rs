//! The tokenizer a model's captions go through: CLIP's BPE (`tokenizer.rs`), or the Hugging Face
//! tokenizer a config names (`hf_tokenizer.rs`), with the context length fixed.
use crate::hf_tokenizer::HfTokenizer;
use crate::tokenizer::Tokenizer;

pub enum TextTokenizer {
    /// OpenCLIP's `SimpleTokenizer` at this context length.
    /// (Both boxed: the two differ in size by over a kilobyte.)
    Clip(Box<Tokenizer>, usize),
    Hf(Box<HfTokenizer>),
}

impl TextTokenizer {
    /// CLIP's BPE at `context_length`.
    pub fn clip(context_length: usize) -> TextTokenizer {
        TextTokenizer::Clip(Box::default(), context_length)
    }

    /// Ids it can give.
    pub fn vocab_size(&self) -> usize {
        match self {
            TextTokenizer::Clip(t, _) => t.vocab_size(),
            TextTokenizer::Hf(t) => t.vocab_size(),
        }
    }

    pub fn context_length(&self) -> usize {
        match self {
            TextTokenizer::Clip(_, ctx) => *ctx,
            TextTokenizer::Hf(t) => t.context_length(),
        }
    }

    /// One text's ids into `row` (`context_length` long).
    pub fn tokenize_into(&self, text: &str, row: &mut [i64]) {
        match self {
            TextTokenizer::Clip(t, _) => t.tokenize_into(text, row),
            TextTokenizer::Hf(t) => t.tokenize_into(text, row),
        }
    }

    /// `texts`' ids, `context_length` per text, row after row.
    pub fn tokenize(&self, texts: &[&str]) -> Vec<i64> {
        match self {
            TextTokenizer::Clip(t, ctx) => t.tokenize(texts, *ctx),
            TextTokenizer::Hf(t) => t.tokenize(texts),
        }
    }
}
