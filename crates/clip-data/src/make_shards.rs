//! Build webdataset shards from image+caption pairs (what `clip-tool make-shards` runs).
//!
//! Inputs: a folder where every image `x.jpg|png|jpeg|webp` has a caption file `x.txt` beside it
//! (searched recursively, sorted by path), or a CSV/TSV file with an image path column and a
//! caption column (OpenCLIP's `--csv-img-key`/`--csv-caption-key`, default `filepath`/`title`;
//! relative paths are relative to the file; no quoted fields). Output like img2dataset's:
//! `{prefix}{shard:05}.tar` with `{key}.jpg`, `{key}.txt`, `{key}.json` per sample (key = 9-digit
//! global index), images re-encoded as JPEG with the longest side reduced to `max_size` (never
//! enlarged), plus `sizes.json` (samples per shard, read by OpenCLIP when `--train-num-samples` is
//! absent).

use anyhow::{bail, Context, Result};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone)]
pub struct MakeShardsCfg {
    pub input: PathBuf,
    pub output: PathBuf,
    pub samples_per_shard: usize,
    pub max_size: u32,
    pub quality: u8,
    pub prefix: String,
    pub img_key: String,
    pub caption_key: String,
    /// CSV separator; `None`: tab for .tsv, comma for .csv
    pub separator: Option<char>,
    pub threads: usize,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct MakeShardsReport {
    pub shards: Vec<String>,
    pub samples: u64,
    pub failed: u64,
}

/// The (image path, caption) pairs of the input.
pub fn list_pairs(cfg: &MakeShardsCfg) -> Result<Vec<(PathBuf, String)>> {
    let input = &cfg.input;
    if input.is_dir() {
        let mut files = Vec::new();
        walk(input, &mut files)?;
        files.sort();
        let mut out = Vec::new();
        for f in files {
            let ext = f
                .extension()
                .and_then(|e| e.to_str())
                .unwrap_or("")
                .to_ascii_lowercase();
            if !["jpg", "jpeg", "png", "webp"].contains(&ext.as_str()) {
                continue;
            }
            let txt = f.with_extension("txt");
            if let Ok(c) = std::fs::read_to_string(&txt) {
                out.push((f, c.trim().to_string()));
            }
        }
        return Ok(out);
    }
    let text = std::fs::read_to_string(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let sep = cfg
        .separator
        .unwrap_or(if input.extension().is_some_and(|e| e == "csv") {
            ','
        } else {
            '\t'
        });
    let table =
        crate::csv::Table::parse(&text, sep).with_context(|| format!("{}", input.display()))?;
    let (ic, cc) = (table.column(&cfg.img_key)?, table.column(&cfg.caption_key)?);
    let base = input.parent().unwrap_or(Path::new("."));
    let (images, captions) = (table.values(ic)?, table.values(cc)?);
    let mut out = Vec::new();
    for (img, caption) in images.iter().zip(captions) {
        out.push((base.join(img.trim()), caption.trim().to_string()));
    }
    Ok(out)
}

fn walk(d: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for e in std::fs::read_dir(d).with_context(|| format!("cannot list {}", d.display()))? {
        let p = e?.path();
        if p.is_dir() {
            walk(&p, out)?;
        } else {
            out.push(p);
        }
    }
    Ok(())
}

/// Resize so the longest side is at most `max_size` and encode as JPEG.
pub fn encode_resized(
    img: image::DynamicImage,
    max_size: u32,
    quality: u8,
) -> Result<(Vec<u8>, u32, u32)> {
    let img = img.to_rgb8();
    let (w, h) = img.dimensions();
    let img = if w.max(h) > max_size {
        let s = max_size as f64 / w.max(h) as f64;
        let (nw, nh) = (
            ((w as f64 * s).round() as u32).max(1),
            ((h as f64 * s).round() as u32).max(1),
        );
        image::imageops::resize(&img, nw, nh, image::imageops::FilterType::Lanczos3)
    } else {
        img
    };
    let mut out = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, quality).encode_image(&img)?;
    Ok((out, img.width(), img.height()))
}

fn tar_append(b: &mut tar::Builder<std::fs::File>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_cksum();
    b.append_data(&mut h, name, data)?;
    Ok(())
}

pub fn make_shards(cfg: &MakeShardsCfg) -> Result<MakeShardsReport> {
    let pairs = list_pairs(cfg)?;
    if pairs.is_empty() {
        bail!("no image+caption pairs found in {}", cfg.input.display());
    }
    std::fs::create_dir_all(&cfg.output)?;
    let per = cfg.samples_per_shard.max(1);
    let chunks: Vec<(usize, &[(PathBuf, String)])> = pairs.chunks(per).enumerate().collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|sc| {
        for _ in 0..cfg.threads.max(1) {
            sc.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(&(si, chunk)) = chunks.get(i) else {
                    break;
                };
                let r = write_shard(cfg, si, chunk, si * per);
                results.lock().unwrap().push((si, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap();
    results.sort_by_key(|r| r.0);
    let mut rep = MakeShardsReport::default();
    let mut sizes = serde_json::Map::new();
    for (_, r) in results {
        let (name, n, failed) = r?;
        sizes.insert(name.clone(), n.into());
        rep.shards
            .push(cfg.output.join(&name).display().to_string());
        rep.samples += n;
        rep.failed += failed;
    }
    std::fs::write(
        cfg.output.join("sizes.json"),
        serde_json::to_string_pretty(&sizes)?,
    )?;
    Ok(rep)
}

fn write_shard(
    cfg: &MakeShardsCfg,
    si: usize,
    chunk: &[(PathBuf, String)],
    first: usize,
) -> Result<(String, u64, u64)> {
    let name = format!("{}{si:05}.tar", cfg.prefix);
    let tmp = cfg.output.join(format!(".{name}.tmp"));
    let mut b = tar::Builder::new(std::fs::File::create(&tmp)?);
    let (mut n, mut failed) = (0u64, 0u64);
    for (j, (path, caption)) in chunk.iter().enumerate() {
        let key = format!("{:09}", first + j);
        let img = match std::fs::read(path)
            .map_err(anyhow::Error::from)
            .and_then(|b| Ok(image::load_from_memory(&b)?))
        {
            Ok(i) => i,
            Err(e) => {
                eprintln!("[make-shards] skipping {}: {e:#}", path.display());
                failed += 1;
                continue;
            }
        };
        let (w0, h0) = (img.width(), img.height());
        let (jpg, w, h) = encode_resized(img, cfg.max_size, cfg.quality)?;
        let meta = serde_json::json!({"key": key, "caption": caption, "url": path.display().to_string(),
            "original_width": w0, "original_height": h0, "width": w, "height": h});
        tar_append(&mut b, &format!("{key}.jpg"), &jpg)?;
        tar_append(&mut b, &format!("{key}.txt"), caption.as_bytes())?;
        tar_append(&mut b, &format!("{key}.json"), meta.to_string().as_bytes())?;
        n += 1;
    }
    let mut f = b.into_inner()?;
    f.flush()?;
    std::fs::rename(&tmp, cfg.output.join(&name))?;
    Ok((name, n, failed))
}
