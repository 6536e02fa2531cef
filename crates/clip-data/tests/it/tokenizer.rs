//! Tokenizer vs OpenCLIP's SimpleTokenizer (goldens from scripts/make-data-goldens.py).

use clip_data::tokenizer::{Tokenizer, EOT_TOKEN, SOT_TOKEN, VOCAB_SIZE};
use serde_json::Value;

fn golden() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/golden/data/tokens.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("read tokens.json")).unwrap()
}

fn ids(v: &Value) -> Vec<i64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect()
}

#[test]
fn vocab_shape() {
    let t = Tokenizer::new();
    assert_eq!(t.vocab_size(), VOCAB_SIZE);
    assert_eq!(
        t.tokenize(&[""], 4),
        vec![SOT_TOKEN as i64, EOT_TOKEN as i64, 0, 0]
    );
    assert_eq!(t.encode("hello world"), vec![3306, 1002]);
}

#[test]
fn corpus_matches_open_clip() {
    let g = golden();
    let t = Tokenizer::new();
    let cases = g["cases"].as_array().unwrap();
    assert!(cases.len() >= 500, "corpus has {} captions", cases.len());
    let mut bad = Vec::new();
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want_ids: Vec<u32> = ids(&c["ids"]).into_iter().map(|x| x as u32).collect();
        let want = ids(&c["tokens"]);
        let got_ids = t.encode(text);
        let got = t.tokenize(&[text], 77);
        if got_ids != want_ids || got != want {
            bad.push(format!("{text:?}\n  want {want_ids:?}\n  got  {got_ids:?}"));
        }
    }
    let long = cases
        .iter()
        .filter(|c| c["ids"].as_array().unwrap().len() > 75)
        .count();
    eprintln!(
        "tokenizer corpus: {} captions ({long} longer than the context), {} mismatches, {} excluded (mojibake)",
        cases.len(),
        bad.len(),
        g["excluded"].as_array().unwrap().len()
    );
    assert!(long >= 10);
    assert!(
        bad.is_empty(),
        "{} mismatches:\n{}",
        bad.len(),
        bad.join("\n")
    );
}

#[test]
fn batch_and_other_context_lengths() {
    let g = golden();
    let t = Tokenizer::new();
    for c in g["other_context_lengths"].as_array().unwrap() {
        let text = c["text"].as_str().unwrap();
        let ctx = c["context_length"].as_u64().unwrap() as usize;
        assert_eq!(
            t.tokenize(&[text], ctx),
            ids(&c["tokens"]),
            "ctx {ctx} {text:?}"
        );
    }
    // Batched rows are the single rows laid end to end.
    let cases: Vec<&Value> = g["cases"].as_array().unwrap().iter().take(7).collect();
    let texts: Vec<&str> = cases.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let want: Vec<i64> = cases.iter().flat_map(|c| ids(&c["tokens"])).collect();
    assert_eq!(t.tokenize(&texts, 77), want);
}

#[test]
fn decode_roundtrip() {
    let t = Tokenizer::new();
    assert_eq!(
        t.decode(&t.encode("A photo of a Cat!")),
        "a photo of a cat ! "
    );
}

#[test]
fn tokenizer_is_send_sync() {
    fn check<T: Send + Sync>() {}
    check::<Tokenizer>();
}

/// Documents the known gap: ftfy's mojibake repair (`fix_encoding`) is not implemented. For the
/// excluded captions OpenCLIP tokenizes the repaired text; we match it once the text is repaired.
#[test]
fn mojibake_gap_is_only_fix_encoding() {
    let g = golden();
    let t = Tokenizer::new();
    let excluded = g["excluded"].as_array().unwrap();
    assert!(!excluded.is_empty());
    for c in excluded {
        let want: Vec<u32> = ids(&c["ids"]).into_iter().map(|x| x as u32).collect();
        assert_ne!(
            t.encode(c["text"].as_str().unwrap()),
            want,
            "gap closed? {}",
            c["text"]
        );
        assert_eq!(t.encode(c["ftfy"].as_str().unwrap()), want, "{}", c["text"]);
    }
}
