//! Shared helpers for the clip-data integration tests: shard writers, a tiny processor, s3s-fs.

use anyhow::Result;
use clip_data::loader::Processor;
use rand::Rng;
use rand_pcg::Pcg64;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A small JPEG whose first pixel encodes `seed` (so tests can check which sample they got).
pub fn jpeg(seed: u32, w: u32, h: u32) -> Vec<u8> {
    let mut img = image::RgbImage::new(w, h);
    for (x, y, p) in img.enumerate_pixels_mut() {
        *p = image::Rgb([
            (seed % 251) as u8,
            ((x * 7 + seed) % 256) as u8,
            ((y * 13) % 256) as u8,
        ]);
    }
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 90)
        .encode_image(&img)
        .unwrap();
    out
}

/// Write a tar with the given members (path, bytes), in order.
pub fn write_tar(path: &Path, members: &[(String, Vec<u8>)]) {
    let f = std::fs::File::create(path).unwrap();
    let mut b = tar::Builder::new(f);
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data.as_slice()).unwrap();
    }
    b.finish().unwrap();
}

/// A good shard of `n` samples with keys `{prefix}{i:05}`.
pub fn good_shard(path: &Path, prefix: &str, n: usize) {
    let mut m = Vec::new();
    for i in 0..n {
        let key = format!("{prefix}{i:05}");
        m.push((format!("{key}.jpg"), jpeg(i as u32, 16, 12)));
        m.push((format!("{key}.txt"), format!("caption {key}").into_bytes()));
        m.push((format!("{key}.json"), b"{}".to_vec()));
    }
    write_tar(path, &m);
}

/// A fresh, empty folder for one test (numbered: the tests share one process, and two may use
/// the same name).
pub fn tmpdir(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let d = std::env::temp_dir().join(format!("clip-data-test-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Decodes for real (so bad JPEGs fail) but outputs a tiny 2x2 "image": the first pixel and RNG
/// draws (so augmentation determinism is visible).
pub struct TestProc;

impl Processor for TestProc {
    fn image_into(&self, bytes: &[u8], rng: &mut Pcg64, out: &mut [f32]) -> Result<()> {
        let img = image::load_from_memory(bytes)?.to_rgb8();
        let p = img.get_pixel(0, 0);
        out[..3].copy_from_slice(&[p[0] as f32, p[1] as f32, p[2] as f32]);
        for o in &mut out[3..] {
            *o = rng.random::<f32>();
        }
        Ok(())
    }
    fn text(&self, caption: &str, out: &mut [i64]) {
        for (o, b) in out.iter_mut().zip(caption.bytes()) {
            *o = b as i64;
        }
    }
    fn image_size(&self) -> usize {
        2
    }
    fn context_length(&self) -> usize {
        16
    }
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}
