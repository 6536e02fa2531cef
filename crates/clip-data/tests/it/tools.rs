//! make-shards and inspect (the library side of the clip-tool subcommands).

use crate::common::*;
use clip_data::inspect::inspect;
use clip_data::make_shards::{make_shards, MakeShardsCfg};
use clip_data::samples::SkipReason;

fn cfg(input: std::path::PathBuf, output: std::path::PathBuf) -> MakeShardsCfg {
    MakeShardsCfg {
        input,
        output,
        samples_per_shard: 4,
        max_size: 32,
        quality: 90,
        prefix: "train-".into(),
        img_key: "filepath".into(),
        caption_key: "title".into(),
        separator: None,
        threads: 2,
    }
}

#[test]
fn folder_and_csv_to_shards_then_inspect() {
    let d = tmpdir("mk");
    let src = d.join("src");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    let mut tsv = String::from("filepath\ttitle\n");
    for i in 0..10u32 {
        let sub = if i % 2 == 0 { "" } else { "sub/" };
        let p = src.join(format!("{sub}img{i}.jpg"));
        let (w, h) = (40 + i, 64);
        std::fs::write(&p, jpeg(i, w, h)).unwrap();
        std::fs::write(p.with_extension("txt"), format!("caption number {i}\n")).unwrap();
        tsv.push_str(&format!("src/{sub}img{i}.jpg\tcaption number {i}\n"));
    }
    std::fs::write(src.join("orphan.jpg"), jpeg(99, 8, 8)).unwrap(); // no caption: not included
    std::fs::write(src.join("broken.png"), b"not a png").unwrap();
    std::fs::write(src.join("broken.txt"), b"caption of a broken image").unwrap();
    let rep = make_shards(&cfg(src.clone(), d.join("out1"))).unwrap();
    assert_eq!(rep.samples, 10);
    assert_eq!(rep.failed, 1);
    assert_eq!(rep.shards.len(), 3); // 11 pairs in chunks of 4
    let sizes: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("out1/sizes.json")).unwrap()).unwrap();
    // broken.png sorts first: shard 0 has 3 good samples of its 4 pairs
    assert_eq!(sizes["train-00000.tar"], 3);
    assert_eq!(sizes["train-00001.tar"], 4);

    let tsv_path = d.join("pairs.tsv");
    std::fs::write(&tsv_path, tsv).unwrap();
    let rep2 = make_shards(&cfg(tsv_path, d.join("out2"))).unwrap();
    assert_eq!(rep2.samples, 10);
    assert_eq!(rep2.failed, 0);

    let urls =
        clip_data::shards::expand_urls(&format!("{}/out2/train-{{00000..00002}}.tar", d.display()))
            .unwrap();
    let r = inspect(&urls, None).unwrap();
    assert_eq!(r.shards, 3);
    assert_eq!(r.samples, 10);
    assert!(r.skipped.is_empty());
    // resized so the longest side is 32, aspect kept
    assert_eq!(r.image_height.max, 32.0);
    assert!(
        r.image_width.max <= 32.0 && r.image_width.min >= 19.0,
        "{:?}",
        r.image_width
    );
    assert_eq!(r.caption_chars.min, "caption number 0".len() as f64);
    let j = serde_json::to_value(&r).unwrap();
    assert_eq!(j["samples"], 10);

    // sizes.json gives the dataset size (OpenCLIP's get_dataset_size)
    assert_eq!(clip_data::shards::dataset_size(&urls), Some(10));
    assert_eq!(clip_data::shards::dataset_size(&urls[..1]), Some(4));
    assert_eq!(
        clip_data::shards::dataset_size(&["pipe:cat x.tar".to_string()]),
        None
    );

    // inspect reports a missing shard by reason
    let r = inspect(&[d.join("out2/nope.tar").display().to_string()], None).unwrap();
    assert_eq!(r.skipped.get(&SkipReason::OpenFailed), Some(&1));
}
