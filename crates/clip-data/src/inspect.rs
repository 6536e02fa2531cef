//! Read shards from any source and summarise them (what `clip-tool inspect` prints).

use crate::samples::{Item, ShardSamples, SkipReason, Stats};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Summary {
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    pub count: u64,
}

impl Summary {
    fn add(&mut self, x: f64) {
        if self.count == 0 {
            self.min = x;
            self.max = x;
        }
        self.min = self.min.min(x);
        self.max = self.max.max(x);
        self.mean += (x - self.mean) / (self.count + 1) as f64;
        self.count += 1;
    }
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct ShardInfo {
    pub url: String,
    pub samples: u64,
    pub skipped: BTreeMap<SkipReason, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub shards: u64,
    pub samples: u64,
    pub skipped: BTreeMap<SkipReason, u64>,
    pub image_width: Summary,
    pub image_height: Summary,
    pub image_bytes: Summary,
    pub caption_chars: Summary,
    pub image_formats: BTreeMap<String, u64>,
    pub per_shard: Vec<ShardInfo>,
}

/// Read every sample of `urls` (already expanded). Image sizes come from the headers (a sample
/// whose header does not parse counts as `decode_error`).
pub fn inspect(urls: &[String], max_samples_per_shard: Option<u64>) -> Result<Report> {
    let mut rep = Report::default();
    let mut total = Stats::default();
    for url in urls {
        let mut info = ShardInfo {
            url: url.clone(),
            ..Default::default()
        };
        let mut st = Stats::default();
        for item in ShardSamples::open(url) {
            match item {
                Item::Sample(s) => {
                    let dims = image::ImageReader::new(std::io::Cursor::new(&s.image))
                        .with_guessed_format()
                        .ok()
                        .and_then(|r| r.into_dimensions().ok());
                    match dims {
                        Some((w, h)) => {
                            st.samples += 1;
                            rep.image_width.add(w as f64);
                            rep.image_height.add(h as f64);
                            rep.image_bytes.add(s.image.len() as f64);
                            rep.caption_chars.add(s.caption.chars().count() as f64);
                            *rep.image_formats
                                .entry(s.image_ext.to_string())
                                .or_default() += 1;
                        }
                        None => st.skip(SkipReason::DecodeError),
                    }
                    if max_samples_per_shard.is_some_and(|m| st.samples >= m) {
                        break;
                    }
                }
                Item::Skip { reason, detail, .. } => {
                    st.skip(reason);
                    if !detail.is_empty() {
                        info.error = Some(detail);
                    }
                }
            }
        }
        info.samples = st.samples;
        info.skipped = st.skipped.clone();
        total.merge(&st);
        rep.per_shard.push(info);
    }
    rep.shards = urls.len() as u64;
    rep.samples = total.samples;
    rep.skipped = total.skipped;
    Ok(rep)
}
