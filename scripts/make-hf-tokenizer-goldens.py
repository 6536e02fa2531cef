#!/usr/bin/env python3
"""Goldens for clip-data's Hugging Face tokenizer (crates/clip-data/tests/it/hf_tokenizer.rs):
OpenCLIP's `HFTokenizer` (open_clip.tokenizer, over transformers' AutoTokenizer) on over 5,000
captions, for three `tokenizer.json` kinds trained here with the `tokenizers` library (the hub's
files cannot be fetched on this machine):

  unigram    SentencePiece unigram, as T5 / SigLIP (`$A </s>`, pad `<pad>`)
  wordpiece  BERT WordPiece, lower-cased, as bert-base-uncased (`[CLS] $A [SEP]`, pad `[PAD]`)
  bpe        byte-level BPE, as RoBERTa (`<s> $A </s>`, pad `<pad>`), padded on the left
  bert-auto  the WordPiece one laid out as bert-base-uncased's repository is: no class and no
             special tokens in tokenizer_config.json, `model_type` "bert" in config.json
             (AutoTokenizer picks BertTokenizer, whose defaults name [PAD] and [SEP])

tokenizer_config.json names the class transformers builds: PreTrainedTokenizerFast for the
unigram one, BertTokenizer and RobertaTokenizer for the others (transformers 5 builds those two
from tokenizer.json alike; its T5Tokenizer and GemmaTokenizer rebuild their own pipelines, which
only a genuine T5 / Gemma tokenizer.json matches).

    make-hf-tokenizer-goldens.py OUT

OUT/captions.json      the captions (tests/corpus/captions.txt and variants of it: case,
                       emoji, HTML entities, punctuation, other scripts, over-long ones);
                       those ftfy's mojibake repair would change are left out, as in
                       make-data-goldens.py (clip-data's ftfy does not repair mojibake)
OUT/KIND/              tokenizer.json, tokenizer_config.json: a folder `--model`'s
                       `hf_tokenizer_name` may name
OUT/cases.json         [{"tokenizer", "clean", "strip_sep_token", "context_length", "ids"}]:
                       "ids" names a file of little-endian u32, one row of context_length
                       per caption
"""
import json
import os
import random
import sys

import ftfy
from open_clip.tokenizer import HFTokenizer
from tokenizers import ByteLevelBPETokenizer, BertWordPieceTokenizer, SentencePieceUnigramTokenizer
from tokenizers.processors import BertProcessing, RobertaProcessing, TemplateProcessing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOCAB = 3000
EMOJI = ["😀", "🐶", "🎉", "❤️", "👍🏽", "🇫🇷", "👨‍👩‍👧", "☕", "🚀", "✨"]
WORDS = ["café", "naïve", "Straße", "東京タワー", "北京", "Москва", "İstanbul", "ΣΊΣΥΦΟΣ",
         "مرحبا", "שלום", "हिन्दी", "한국어", "ﬁne", "ｆｕｌｌｗｉｄｔｈ", "x²", "½", "№5"]
ENTITIES = ["&amp;", "&lt;", "&gt;", "&quot;", "&#39;", "&nbsp;", "&eacute;", "&#x2764;", "&amp;amp;"]
PUNCT = list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~") + ["…", "—", "“", "”", "«", "»", "¿", "¡"]


def captions():
    with open(os.path.join(ROOT, "tests", "corpus", "captions.txt"), encoding="utf-8") as f:
        base = [line for line in f.read().split("\n") if line]
    rng = random.Random(0)
    out = list(base)
    while len(out) < 6000:
        text = rng.choice(base)
        kind = rng.randrange(9)
        if kind == 0:
            text = text.upper()
        elif kind == 1:
            text = f"{rng.choice(EMOJI)} {text} {rng.choice(EMOJI)}{rng.choice(EMOJI)}"
        elif kind == 2:
            words = text.split(" ")
            words.insert(rng.randrange(len(words) + 1), rng.choice(ENTITIES))
            text = " ".join(words)
        elif kind == 3:
            text = "".join(c + (rng.choice(PUNCT) if rng.random() < 0.1 else "") for c in text)
        elif kind == 4:
            words = text.split(" ")
            words.insert(rng.randrange(len(words) + 1), rng.choice(WORDS))
            text = rng.choice(["  ", "\t", " \n ", "_", " "]).join(words)
        elif kind == 5:
            text = " ".join([text] + [rng.choice(base) for _ in range(rng.randrange(4, 9))])
        elif kind == 6:
            text = f"  {text.title()}\u00a0 "
        elif kind == 7:
            text = text.replace(" ", "_")
        else:
            text = f"{text} {rng.choice(base)}"
        out.append(text)
    return [t for t in out if ftfy.fix_encoding(t) == t]


def save(tok, post, kind, out, config):
    tok.post_processor = post
    folder = os.path.join(out, kind)
    os.makedirs(folder, exist_ok=True)
    tok.save(os.path.join(folder, "tokenizer.json"))
    config = {"model_max_length": 512, **config}
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1)


def train(texts, out):
    uni = SentencePieceUnigramTokenizer()
    uni.train_from_iterator(texts, vocab_size=VOCAB, special_tokens=["<pad>", "</s>", "<unk>"],
                            unk_token="<unk>", show_progress=False)
    save(uni, TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)]), "unigram", out,
         {"tokenizer_class": "PreTrainedTokenizerFast", "pad_token": "<pad>", "eos_token": "</s>",
          "unk_token": "<unk>"})

    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train_from_iterator(texts, vocab_size=VOCAB, show_progress=False,
                           special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    post = BertProcessing(("[SEP]", wp.token_to_id("[SEP]")), ("[CLS]", wp.token_to_id("[CLS]")))
    save(wp, post, "wordpiece", out, {"tokenizer_class": "BertTokenizer", "pad_token": "[PAD]", "sep_token": "[SEP]",
                                      "cls_token": "[CLS]", "unk_token": "[UNK]"})

    folder = os.path.join(out, "bert-auto")
    os.makedirs(folder, exist_ok=True)
    wp.save(os.path.join(folder, "tokenizer.json"))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "model_max_length": 512}, f)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump({"model_type": "bert"}, f)

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(texts, vocab_size=VOCAB, show_progress=False,
                            special_tokens=["<s>", "<pad>", "</s>", "<unk>"])
    post = RobertaProcessing(("</s>", bpe.token_to_id("</s>")), ("<s>", bpe.token_to_id("<s>")))
    save(bpe, post, "bpe", out, {"tokenizer_class": "RobertaTokenizer", "pad_token": {"__type": "AddedToken", "content": "<pad>", "special": True},
                                 "bos_token": "<s>", "eos_token": "</s>",
                                 "padding_side": "left"})


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    texts = captions()
    assert len(texts) >= 5000, len(texts)
    with open(os.path.join(out, "captions.json"), "w", encoding="utf-8") as f:
        json.dump(texts, f, ensure_ascii=False)
    train(texts, out)
    cases = []
    kinds = [("unigram", [False]), ("wordpiece", [True, False]), ("bpe", [False]),
             ("bert-auto", [True])]
    for kind, strips in kinds:
        for clean in ["canonicalize", "lower", "whitespace"]:
            for strip in strips:
                for ctx in [64] + ([16] if clean == "whitespace" else []):
                    tok = HFTokenizer(os.path.join(out, kind), context_length=ctx, clean=clean,
                                      strip_sep_token=strip)
                    ids = tok(texts)
                    assert ids.shape == (len(texts), ctx)
                    name = f"ids-{kind}-{clean}-{int(strip)}-{ctx}.u32"
                    ids.to(dtype=__import__("torch").int32).numpy().astype("<u4").tofile(
                        os.path.join(out, name))
                    cases.append({"tokenizer": kind, "clean": clean, "strip_sep_token": strip,
                                  "context_length": ctx, "ids": name})
    with open(os.path.join(out, "cases.json"), "w") as f:
        json.dump(cases, f, indent=1)
    print(f"{len(texts)} captions, {len(cases)} cases")


if __name__ == "__main__":
    main()
