//! `HfTokenizer` against OpenCLIP's `HFTokenizer` (transformers' AutoTokenizer): the same ids
//! for every caption of scripts/make-hf-tokenizer-goldens.py (tests/corpus/captions.txt and
//! variants: over 5,000), for a SentencePiece unigram, a WordPiece and a byte-level BPE
//! `tokenizer.json` (trained by the script; the hub's cannot be fetched here), in every cleaning
//! mode, with and without `strip_sep_token`, padded right and left, at two context lengths, the
//! WordPiece one also laid out as bert-base-uncased's repository (special tokens from the class
//! `config.json`'s `model_type` picks); and
//! the files found as the Hugging Face cache holds them, or a one-line error naming the path.
use std::path::{Path, PathBuf};

use clip_data::hf_tokenizer::{find_files, Clean, HfSpec, HfTokenizer};
use serde_json::Value;

use crate::common::tmpdir;
use crate::golden::{golden, root, run_python, script_inputs};

/// The golden folder (made by Python once, then cached).
fn goldens() -> Option<PathBuf> {
    // script_inputs's tiny-model files too: the key is a superset of what the script reads.
    let mut inputs = script_inputs("make-hf-tokenizer-goldens.py");
    inputs.push(root().join("tests/corpus/captions.txt"));
    golden("hf-tokenizer", &inputs, &[], |out| {
        let script = inputs[0].display().to_string();
        eprintln!(
            "{}",
            run_python([script.as_str(), &out.display().to_string()])
        );
    })
}

fn spec(name: &Path, clean: &str, strip: bool, ctx: usize) -> HfSpec {
    HfSpec {
        name: name.display().to_string(),
        clean: Clean::parse(clean).unwrap(),
        strip_sep_token: strip,
        context_length: ctx,
        cache_dir: None,
    }
}

#[test]
fn token_ids_equal_openclips_hf_tokenizer_on_every_caption() {
    let Some(dir) = goldens() else { return };
    let read = |f: &str| std::fs::read(dir.join(f)).unwrap();
    let captions: Vec<String> = serde_json::from_slice(&read("captions.json")).unwrap();
    assert!(captions.len() >= 5000, "{} captions", captions.len());
    let texts: Vec<&str> = captions.iter().map(String::as_str).collect();
    let cases: Vec<Value> = serde_json::from_slice(&read("cases.json")).unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    let mut checked = 0;
    for case in &cases {
        let kind = case["tokenizer"].as_str().unwrap();
        let clean = case["clean"].as_str().unwrap();
        let strip = case["strip_sep_token"].as_bool().unwrap();
        let ctx = case["context_length"].as_u64().unwrap() as usize;
        let want: Vec<i64> = read(case["ids"].as_str().unwrap())
            .chunks(4)
            .map(|b| u32::from_le_bytes(b.try_into().unwrap()) as i64)
            .collect();
        assert_eq!(want.len(), texts.len() * ctx);
        let tok = HfTokenizer::load(&spec(&dir.join(kind), clean, strip, ctx)).unwrap();
        let got = tok.tokenize(&texts);
        let bad: Vec<String> = got
            .chunks(ctx)
            .zip(want.chunks(ctx))
            .zip(&texts)
            .filter(|((g, w), _)| g != w)
            .take(3)
            .map(|((g, w), t)| format!("{t:?}\n  ours       {g:?}\n  OpenCLIP's {w:?}"))
            .collect();
        assert!(
            bad.is_empty(),
            "{kind}, clean {clean}, strip_sep_token {strip}, context {ctx}:\n{}",
            bad.join("\n")
        );
        kinds.insert(kind);
        checked += 1;
    }
    // Every kind in every mode; strip_sep_token changes WordPiece's ids (its [SEP] is real).
    assert_eq!(kinds.len(), 4, "{kinds:?}");
    assert!(checked >= 3 * 3 + 3, "{checked} cases");
    let wp = |strip| {
        HfTokenizer::load(&spec(&dir.join("wordpiece"), "lower", strip, 64))
            .unwrap()
            .tokenize(&texts[..20])
    };
    assert_ne!(wp(true), wp(false));
    // And the cleaning modes tell apart: canonicalize drops the punctuation lower keeps.
    let uni = |clean| {
        HfTokenizer::load(&spec(&dir.join("unigram"), clean, false, 64))
            .unwrap()
            .tokenize(&texts[..50])
    };
    assert_ne!(uni("canonicalize"), uni("lower"));
}

#[test]
fn files_are_found_in_the_hugging_face_cache_or_named_in_one_line() {
    let Some(dir) = goldens() else { return };
    let cache = tmpdir("hf-cache");
    // huggingface_hub's layout: blobs, a snapshot per commit, refs/main naming the current one.
    let repo = cache.join("models--timm--ViT-Test-SigLIP");
    let snap = repo.join("snapshots/0123abcd");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123abcd").unwrap();
    for f in ["tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(dir.join("unigram").join(f), snap.join(f)).unwrap();
    }
    let found = find_files("timm/ViT-Test-SigLIP", Some(&cache)).unwrap();
    assert_eq!(found, snap);
    // The cache as HfSpec names it: the same ids as the folder itself.
    let mut s = spec(&dir.join("unigram"), "canonicalize", false, 16);
    let from_dir = HfTokenizer::load(&s)
        .unwrap()
        .tokenize(&["A photo of a Cat!"]);
    s.name = "timm/ViT-Test-SigLIP".into();
    s.cache_dir = Some(cache.clone());
    assert_eq!(
        HfTokenizer::load(&s)
            .unwrap()
            .tokenize(&["A photo of a Cat!"]),
        from_dir
    );

    // Not in the cache: the path searched and the command that fetches it, in one line.
    let err = find_files("timm/ViT-Missing", Some(&cache)).unwrap_err();
    assert!(!err.contains('\n'), "{err}");
    let searched = cache.join("models--timm--ViT-Missing");
    assert!(err.contains(&searched.display().to_string()), "{err}");
    assert!(
        err.contains("huggingface-cli download timm/ViT-Missing tokenizer.json"),
        "{err}"
    );
    // Compared classes are not flagged; a class transformers 5 rebuilds is.
    assert_eq!(HfTokenizer::load(&s).unwrap().unverified_class(), None);
    let bert = spec(&dir.join("wordpiece"), "lower", true, 16);
    assert_eq!(HfTokenizer::load(&bert).unwrap().unverified_class(), None);
    let config = snap.join("tokenizer_config.json");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("PreTrainedTokenizerFast", "T5Tokenizer"),
    )
    .unwrap();
    let t5 = HfTokenizer::load(&s).unwrap();
    assert_eq!(t5.unverified_class(), Some("T5Tokenizer"));

    // A folder without tokenizer.json, and a tokenizer without a pad token.
    let err = find_files(&cache.display().to_string(), None).unwrap_err();
    assert!(err.contains("without tokenizer.json"), "{err}");
    let nopad = cache.join("nopad");
    std::fs::create_dir_all(&nopad).unwrap();
    std::fs::copy(
        dir.join("unigram/tokenizer.json"),
        nopad.join("tokenizer.json"),
    )
    .unwrap();
    let err = HfTokenizer::load(&spec(&nopad, "lower", false, 16))
        .err()
        .unwrap();
    assert!(err.contains("no pad_token"), "{err}");
    let _ = std::fs::remove_dir_all(&cache);
}
