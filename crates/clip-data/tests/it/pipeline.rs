//! The loader with the real processor (decode + timm transform + CLIP tokenizer).

use crate::common::*;
use clip_data::loader::{Batch, Loader, LoaderConfig};
use clip_data::processor::{ClipProcessor, OPENAI_MEAN, OPENAI_STD};
use clip_data::shards::ShardList;
use clip_data::text::TextTokenizer;
use clip_data::transform::AugCfg;
use std::sync::Arc;

#[test]
fn real_processor_batches() {
    let d = tmpdir("pipeline");
    for s in 0..2 {
        let mut m = Vec::new();
        for i in 0..20u32 {
            let key = format!("s{s}-{i:04}");
            m.push((format!("{key}.jpg"), jpeg(i, 60 + i, 40)));
            m.push((format!("{key}.txt"), b"a photo of a cat".to_vec()));
        }
        m.push(("bad.jpg".into(), b"\xff\xd8 garbage".to_vec()));
        m.push(("bad.txt".into(), b"x".to_vec()));
        write_tar(&d.join(format!("{s}.tar")), &m);
    }
    let aug = AugCfg::parse(&[
        "scale=(0.5,1.0)".into(),
        "re_prob=0.4".into(),
        "use_timm=True".into(),
    ])
    .unwrap();
    let p = ClipProcessor::train(32, &aug, OPENAI_MEAN, OPENAI_STD, clip77());
    let mut cfg = LoaderConfig::new(
        ShardList::parse(&format!("{}/{{0..1}}.tar", d.display()), None).unwrap(),
        8,
    );
    cfg.workers = 2;
    cfg.num_samples = Some(32);
    let l = Loader::new(cfg.clone(), Arc::new(p)).unwrap();
    let bs: Vec<Batch> = l
        .epoch(0, None)
        .unwrap()
        .collect::<anyhow::Result<_>>()
        .unwrap();
    assert_eq!(bs.len(), 4);
    for b in &bs {
        assert_eq!(b.images().len(), 8 * 3 * 32 * 32);
        assert_eq!(b.tokens().len(), 8 * 77);
        assert_eq!(b.tokens()[0], 49406); // <start_of_text>
        assert!(b.images().iter().all(|x| x.is_finite() && x.abs() < 10.0));
    }
    // same seed, same tensors
    let p2 = ClipProcessor::train(32, &aug, OPENAI_MEAN, OPENAI_STD, clip77());
    let bs2: Vec<Batch> = Loader::new(cfg, Arc::new(p2))
        .unwrap()
        .epoch(0, None)
        .unwrap()
        .collect::<anyhow::Result<_>>()
        .unwrap();
    assert_eq!(
        bs.iter().map(|b| b.images()).collect::<Vec<_>>(),
        bs2.iter().map(|b| b.images()).collect::<Vec<_>>()
    );
}

/// CLIP's BPE at OpenCLIP's default context length.
fn clip77() -> Arc<TextTokenizer> {
    Arc::new(TextTokenizer::clip(77))
}
