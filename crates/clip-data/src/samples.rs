//! Tar streaming and webdataset sample grouping.
//!
//! Consecutive tar members with the same key (path up to the first `.` of the basename) form one
//! sample; the extension (the rest) is lower-cased. A usable sample has `txt` and one of
//! `jpg, png, jpeg, webp` (first in that order wins); everything else is dropped. Problems are
//! reported as [`Item::Skip`] with a [`SkipReason`] instead of aborting the stream.

use crate::source;
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

pub const IMAGE_EXTS: [&str; 4] = ["jpg", "png", "jpeg", "webp"];

/// A sample as read from a shard, before decoding.
#[derive(Debug, Clone)]
pub struct RawSample {
    pub shard: Arc<str>,
    pub key: String,
    pub caption: String,
    pub image: Vec<u8>,
    pub image_ext: &'static str,
    /// Where its tar members lie in the shard: the byte offset of the first member's header and
    /// the length up to the end of the last member's (padded) data — what a resume fetches back
    /// with a Range request instead of re-reading the shard (see [`crate::order::Member`]).
    pub offset: u64,
    pub len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    /// No `txt` member.
    MissingCaption,
    /// No `jpg/png/jpeg/webp` member.
    MissingImage,
    /// The image bytes did not decode.
    DecodeError,
    /// The tar stream broke off (truncated file, corrupt header, failed read, failing pipe).
    TruncatedTar,
    /// The shard could not be opened at all.
    OpenFailed,
}

impl SkipReason {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::MissingCaption => "missing_caption",
            SkipReason::MissingImage => "missing_image",
            SkipReason::DecodeError => "decode_error",
            SkipReason::TruncatedTar => "truncated_tar",
            SkipReason::OpenFailed => "open_failed",
        }
    }
}

/// What a shard yields, in order.
#[derive(Debug)]
pub enum Item {
    Sample(RawSample),
    Skip {
        shard: Arc<str>,
        key: String,
        reason: SkipReason,
        detail: String,
    },
}

/// Split a member path into (key, lower-cased extension) like webdataset's `base_plus_ext`.
pub fn split_key(path: &str) -> Option<(&str, String)> {
    let slash = path.rfind('/').map(|i| i + 1).unwrap_or(0);
    let dot = path[slash..].find('.')? + slash;
    if dot == slash {
        return None; // basename starts with '.': webdataset's regex needs [^.]+
    }
    Some((&path[..dot], path[dot + 1..].to_ascii_lowercase()))
}

/// A minimal streaming tar reader (ustar, GNU long names, pax `path`), yielding regular files.
pub struct TarStream<R: Read> {
    r: R,
    done: bool,
    /// the end-of-archive marker was read (an error after it does not damage any member)
    pub at_end: bool,
    /// byte offset in the archive of the next unread byte
    pos: u64,
    /// byte offset of the first header (long-name / pax headers included) of the last file
    /// returned by [`TarStream::next_file`]
    last_start: u64,
}

impl<R: Read> TarStream<R> {
    pub fn new(r: R) -> Self {
        Self::at(r, 0)
    }

    /// A reader that starts at byte `offset` of the archive (a member header's offset): offsets
    /// reported stay relative to the whole archive.
    pub fn at(r: R, offset: u64) -> Self {
        TarStream {
            r,
            done: false,
            at_end: false,
            pos: offset,
            last_start: offset,
        }
    }

    /// Byte offset of the next unread byte (after the last member returned).
    pub fn offset(&self) -> u64 {
        self.pos
    }

    /// Read exactly `buf.len()` bytes; `Ok(false)` on a clean EOF before the first byte.
    fn fill(&mut self, buf: &mut [u8]) -> std::io::Result<bool> {
        let mut got = 0;
        while got < buf.len() {
            match self.r.read(&mut buf[got..]) {
                Ok(0) => {
                    if got == 0 {
                        return Ok(false);
                    }
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("truncated tar: {got} of {} bytes", buf.len()),
                    ));
                }
                Ok(n) => {
                    got += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }

    fn read_data(&mut self, size: u64) -> std::io::Result<Vec<u8>> {
        if size > (1 << 34) {
            return Err(std::io::Error::other(format!("tar member of {size} bytes")));
        }
        let padded = size.div_ceil(512) * 512;
        let mut v = vec![0u8; padded as usize];
        if !self.fill(&mut v)? && padded > 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "truncated tar: member data missing",
            ));
        }
        v.truncate(size as usize);
        Ok(v)
    }

    /// Next regular file as (path, data); `None` at the end of the archive.
    pub fn next_file(&mut self) -> Option<std::io::Result<(String, Vec<u8>)>> {
        let mut long_name: Option<String> = None;
        let mut start = self.pos;
        loop {
            if self.done {
                return None;
            }
            if long_name.is_none() {
                start = self.pos;
            }
            let mut h = [0u8; 512];
            match self.fill(&mut h) {
                Ok(false) => {
                    self.done = true;
                    return None;
                }
                Ok(true) => {}
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
            if h.iter().all(|&b| b == 0) {
                // end-of-archive marker: drain the rest (padding) so that a pipe's exit status
                // or a broken transfer is still noticed
                self.done = true;
                self.at_end = true;
                let mut sink = [0u8; 8192];
                loop {
                    match self.r.read(&mut sink) {
                        Ok(0) => return None,
                        Ok(_) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(e) => return Some(Err(e)),
                    }
                }
            }
            let stored: u64 = match parse_octal(&h[148..156]) {
                Some(v) => v,
                None => {
                    self.done = true;
                    return Some(Err(std::io::Error::other(
                        "corrupt tar header (checksum field)",
                    )));
                }
            };
            let sum: u64 = h
                .iter()
                .enumerate()
                .map(|(i, &b)| {
                    if (148..156).contains(&i) {
                        32
                    } else {
                        b as u64
                    }
                })
                .sum();
            if sum != stored {
                self.done = true;
                return Some(Err(std::io::Error::other(
                    "corrupt tar header (bad checksum)",
                )));
            }
            let size = match parse_size(&h[124..136]) {
                Some(v) => v,
                None => {
                    self.done = true;
                    return Some(Err(std::io::Error::other("corrupt tar header (size)")));
                }
            };
            let typ = h[156];
            let data = match self.read_data(size) {
                Ok(d) => d,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            };
            match typ {
                b'L' => {
                    long_name = Some(cstr(&data));
                    continue;
                }
                b'x' => {
                    if let Some(p) = pax_path(&data) {
                        long_name = Some(p);
                    }
                    continue;
                }
                b'0' | 0 | b'7' => {}
                _ => {
                    long_name = None;
                    continue;
                }
            }
            let path = long_name.take().unwrap_or_else(|| {
                let name = cstr(&h[0..100]);
                let magic = &h[257..262];
                let prefix = if magic == b"ustar" {
                    cstr(&h[345..500])
                } else {
                    String::new()
                };
                if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                }
            });
            self.last_start = start;
            return Some(Ok((path, data)));
        }
    }
}

fn cstr(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

fn parse_octal(b: &[u8]) -> Option<u64> {
    let s = cstr(b);
    let s = s.trim_matches(|c: char| c == ' ' || c == '\0');
    if s.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(s, 8).ok()
}

fn parse_size(b: &[u8]) -> Option<u64> {
    if b[0] & 0x80 != 0 {
        let mut v: u64 = (b[0] & 0x7f) as u64;
        for &x in &b[1..] {
            v = v.checked_mul(256)? + x as u64;
        }
        return Some(v);
    }
    parse_octal(b)
}

fn pax_path(data: &[u8]) -> Option<String> {
    let s = String::from_utf8_lossy(data);
    for line in s.split('\n') {
        if let Some((_, kv)) = line.split_once(' ') {
            if let Some(p) = kv.strip_prefix("path=") {
                return Some(p.to_string());
            }
        }
    }
    None
}

/// Stream the samples of one shard URL.
pub struct ShardSamples {
    shard: Arc<str>,
    tar: Option<TarStream<Box<dyn Read + Send>>>,
    open_error: Option<String>,
    pending: Option<Group>,
    out: std::collections::VecDeque<Item>,
}

/// The tar members of one key read so far, and the bytes they span.
struct Group {
    key: String,
    members: BTreeMap<String, Vec<u8>>,
    start: u64,
    end: u64,
}

impl ShardSamples {
    pub fn open(url: &str) -> ShardSamples {
        Self::open_range(url, 0, None)
    }

    /// The samples whose members lie in bytes `start..end` (to the end of the archive when `end`
    /// is None) of the shard; `start` must be a member header's offset. Files seek, `s3://`
    /// sends a Range request, a `pipe:` command is read from its start and the bytes before
    /// `start` dropped (see [`source::open_range`]).
    pub fn open_range(url: &str, start: u64, end: Option<u64>) -> ShardSamples {
        let shard: Arc<str> = Arc::from(url);
        let (tar, open_error) = match source::open_range(url, start, end) {
            Ok(r) => (Some(TarStream::at(r, start)), None),
            Err(e) => (None, Some(format!("{e:#}"))),
        };
        ShardSamples {
            shard,
            tar,
            open_error,
            pending: None,
            out: Default::default(),
        }
    }

    /// Where reading this shard again would continue with the next sample not yet returned: the
    /// offset of the group being read (its members are re-read), else of the next header;
    /// `None` once the archive has ended (only queued items remain).
    pub fn resume_offset(&self) -> Option<u64> {
        match (&self.pending, &self.tar) {
            (Some(g), _) => Some(g.start),
            (None, Some(t)) => Some(t.offset()),
            (None, None) => None,
        }
    }

    pub fn shard(&self) -> &Arc<str> {
        &self.shard
    }

    fn skip(&mut self, key: String, reason: SkipReason, detail: String) {
        self.out.push_back(Item::Skip {
            shard: self.shard.clone(),
            key,
            reason,
            detail,
        });
    }

    fn finish_group(&mut self, g: Group) {
        let Group {
            key,
            mut members,
            start,
            end,
        } = g;
        let Some(txt) = members.get("txt") else {
            self.skip(key, SkipReason::MissingCaption, String::new());
            return;
        };
        let Some(ext) = IMAGE_EXTS.iter().find(|e| members.contains_key(**e)) else {
            self.skip(key, SkipReason::MissingImage, String::new());
            return;
        };
        let caption = String::from_utf8_lossy(txt).into_owned();
        let image = members.remove(*ext).unwrap();
        self.out.push_back(Item::Sample(RawSample {
            shard: self.shard.clone(),
            key,
            caption,
            image,
            image_ext: ext,
            offset: start,
            len: end - start,
        }));
    }

    /// Read tar members until at least one item is queued or the stream ends.
    fn fill(&mut self) {
        while self.out.is_empty() {
            let Some(tar) = self.tar.as_mut() else { return };
            match tar.next_file() {
                None => {
                    self.tar = None;
                    if let Some(g) = self.pending.take() {
                        self.finish_group(g);
                    }
                }
                Some(Err(e)) => {
                    let complete = tar.at_end;
                    self.tar = None;
                    // the group being read may be incomplete: drop it, report the break
                    // (after the end-of-archive marker every member is complete: keep it)
                    let mut key = String::new();
                    if let Some(g) = self.pending.take() {
                        if complete {
                            self.finish_group(g);
                        } else {
                            key = g.key;
                        }
                    }
                    self.skip(key, SkipReason::TruncatedTar, e.to_string());
                }
                Some(Ok((path, data))) => {
                    if path.rsplit('/').next().is_some_and(|b| b.starts_with("__")) {
                        continue;
                    }
                    let Some((key, ext)) = split_key(&path) else {
                        continue;
                    };
                    let (start, end) = (tar.last_start, tar.offset());
                    if self.pending.as_ref().is_none_or(|g| g.key != key) {
                        let g = Group {
                            key: key.to_string(),
                            members: BTreeMap::new(),
                            start,
                            end,
                        };
                        if let Some(done) = self.pending.replace(g) {
                            self.finish_group(done);
                        }
                    }
                    let g = self.pending.as_mut().unwrap();
                    g.end = end;
                    g.members.entry(ext).or_insert(data);
                }
            }
        }
    }
}

impl Iterator for ShardSamples {
    type Item = Item;
    fn next(&mut self) -> Option<Item> {
        if let Some(e) = self.open_error.take() {
            return Some(Item::Skip {
                shard: self.shard.clone(),
                key: String::new(),
                reason: SkipReason::OpenFailed,
                detail: e,
            });
        }
        self.fill();
        self.out.pop_front()
    }
}

/// Counters of samples and skips, by reason.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub samples: u64,
    pub skipped: BTreeMap<SkipReason, u64>,
}

impl Stats {
    pub fn skip(&mut self, r: SkipReason) {
        *self.skipped.entry(r).or_default() += 1;
    }
    pub fn merge(&mut self, o: &Stats) {
        self.samples += o.samples;
        for (k, v) in &o.skipped {
            *self.skipped.entry(*k).or_default() += v;
        }
    }
    pub fn total_skipped(&self) -> u64 {
        self.skipped.values().sum()
    }
}

/// Rate-limited logging of skipped samples: at most `per_window` lines per `window`.
pub struct SkipLog {
    window: std::time::Duration,
    per_window: u32,
    start: std::time::Instant,
    printed: u32,
    suppressed: u64,
}

impl Default for SkipLog {
    fn default() -> Self {
        SkipLog {
            window: std::time::Duration::from_secs(10),
            per_window: 10,
            start: std::time::Instant::now(),
            printed: 0,
            suppressed: 0,
        }
    }
}

impl SkipLog {
    pub fn log(&mut self, shard: &str, key: &str, reason: SkipReason, detail: &str) {
        if self.start.elapsed() > self.window {
            if self.suppressed > 0 {
                eprintln!(
                    "[clip-data] ... {} more skipped samples not shown",
                    self.suppressed
                );
            }
            self.start = std::time::Instant::now();
            self.printed = 0;
            self.suppressed = 0;
        }
        if self.printed < self.per_window {
            self.printed += 1;
            eprintln!(
                "[clip-data] skipped sample: shard {shard} key {key:?}: {} {detail}",
                reason.as_str()
            );
        } else {
            self.suppressed += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(split_key("a/b/000.jpg"), Some(("a/b/000", "jpg".into())));
        assert_eq!(split_key("000.seg.PNG"), Some(("000", "seg.png".into())));
        assert_eq!(
            split_key("dir.x/000.txt"),
            Some(("dir.x/000", "txt".into()))
        );
        assert_eq!(split_key("noext"), None);
    }
}
