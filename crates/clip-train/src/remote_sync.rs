//! `--remote-sync s3://bucket/prefix`: rank 0 backs the run directory `{logs}/{name}/` up to
//! `s3://bucket/prefix/{name}/`, as OpenCLIP's `aws s3 sync` process does — once at the start,
//! every `--remote-sync-frequency` seconds on a thread of its own, and once more at the end
//! (finished, preempted or failed) — and `--resume latest` fetches the newest checkpoint from
//! there when the local directory has none as new.
//!
//! Natively through aws-sdk-s3, with clip-data's client (credentials, region, endpoint and
//! addressing from the usual AWS environment and profile files). A file is sent when the remote
//! lacks it, its size differs, or the local copy is newer (`aws s3 sync`'s rule); files this
//! process sent and that did not change since are not looked at again. Large files go up in
//! parts (`CLIP_TRAIN_REMOTE_SYNC_PART_BYTES`, default 64 MiB, at least 5 MiB): S3 shows a
//! multipart object only once it is complete, and a single PUT replaces an object whole, so a
//! checkpoint on the remote is never partial. Local temp files (`.NAME.tmp-PID`, a checkpoint being written) are never
//! sent. The SDK retries each request (`CLIP_S3_MAX_ATTEMPTS`); a file that still fails is retried
//! with backoff, and a pass that fails is a warning in the log: the next pass tries again, and a
//! remote that stays down never stops training.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use clip_data::s3::{block_on, client, S3Reader};

use crate::checkpoint::{self, Loaded};
use crate::rundir::Log;

/// `s3://bucket/prefix/{name}`: where one run's directory is mirrored.
#[derive(Debug, Clone)]
pub struct Remote {
    bucket: String,
    /// The key prefix of the run directory, ending in `/`.
    prefix: String,
}

/// What a file looked like when this process last sent it (or found the remote up to date).
type Sent = HashMap<String, (u64, SystemTime)>;

impl Remote {
    /// Checks a `--remote-sync` URL: `s3://bucket[/prefix]`.
    pub fn check_url(url: &str) -> Result<()> {
        let Some(rest) = url.strip_prefix("s3://") else {
            bail!("--remote-sync {url}: not an s3:// URL (--remote-sync-protocol s3)");
        };
        if rest.split('/').next().unwrap_or_default().is_empty() {
            bail!("--remote-sync {url}: no bucket");
        }
        Ok(())
    }

    /// The run `name`'s directory under `url` (checked by [`Remote::check_url`]).
    pub fn new(url: &str, name: &str) -> Remote {
        let rest = url.trim_start_matches("s3://").trim_end_matches('/');
        let (bucket, base) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = match base {
            "" => format!("{name}/"),
            base => format!("{base}/{name}/"),
        };
        Remote {
            bucket: bucket.to_string(),
            prefix,
        }
    }

    /// `s3://bucket/prefix/name/`, for messages.
    pub fn url(&self) -> String {
        format!("s3://{}/{}", self.bucket, self.prefix)
    }

    /// Every object under the run's prefix: key relative to it → (size, last modified).
    fn list(&self) -> Result<HashMap<String, (u64, SystemTime)>> {
        let mut found = HashMap::new();
        let mut pages = client()
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(&self.prefix)
            .into_paginator()
            .send();
        while let Some(page) = block_on(pages.next()) {
            let page = page.map_err(|e| anyhow!("listing {}: {}", self.url(), sdk_error(&e)))?;
            for o in page.contents() {
                let (Some(key), Some(size)) = (o.key(), o.size()) else {
                    continue;
                };
                let modified = o
                    .last_modified()
                    .and_then(|t| SystemTime::try_from(*t).ok())
                    .unwrap_or(SystemTime::UNIX_EPOCH);
                let rel = key.strip_prefix(&self.prefix).unwrap_or(key);
                found.insert(rel.to_string(), (size as u64, modified));
            }
        }
        Ok(found)
    }

    /// One pass over `local`: sends every file that is new or changed; returns their relative
    /// paths. A file that still fails after its retries ends the pass (the remote is most likely
    /// down: the next pass starts over).
    pub fn sync(&self, local: &Path, sent: &mut Sent, log: &mut Log) -> Result<Vec<String>> {
        let remote = self.list()?;
        let mut names = Vec::new();
        for (rel, path) in files_under(local) {
            let Ok(meta) = std::fs::metadata(&path) else {
                continue; // removed since the walk (--delete-previous-checkpoint)
            };
            let now = (meta.len(), meta.modified()?);
            if sent.get(&rel) == Some(&now) {
                continue;
            }
            let up_to_date = remote
                .get(&rel)
                .is_some_and(|&(size, modified)| size == now.0 && modified >= now.1);
            if !up_to_date {
                self.send_with_retries(&path, &rel, now.0, log)?;
                names.push(rel.clone());
            }
            sent.insert(rel, now);
        }
        Ok(names)
    }

    /// [`Remote::send`], again after 1, 2 and 4 s when it fails (the SDK has retried each
    /// request already; this outlasts a server restart).
    fn send_with_retries(&self, path: &Path, rel: &str, len: u64, log: &mut Log) -> Result<()> {
        let mut wait = Duration::from_secs(1);
        let mut attempt = 1;
        loop {
            match self.send(path, rel, len) {
                Ok(()) => return Ok(()),
                Err(_) if !path.exists() => return Ok(()), // deleted locally meanwhile
                Err(e) if attempt >= 4 => return Err(e),
                Err(e) => {
                    log.warn(&format!(
                        "remote sync: {e:#} (attempt {attempt}; again in {} s)",
                        wait.as_secs()
                    ));
                    std::thread::sleep(wait);
                    wait *= 2;
                    attempt += 1;
                }
            }
        }
    }

    /// Sends the first `len` bytes of `path` (a log keeps growing) as `rel`: one PUT, or a
    /// multipart upload for files of more than one part.
    fn send(&self, path: &Path, rel: &str, len: u64) -> Result<()> {
        let key = format!("{}{rel}", self.prefix);
        let part = part_bytes();
        let mut file = std::fs::File::open(path)?;
        if len <= part {
            let body = read_at(&mut file, 0, len)?;
            block_on(
                client()
                    .put_object()
                    .bucket(&self.bucket)
                    .key(&key)
                    .body(ByteStream::from(body))
                    .send(),
            )
            .map_err(|e| anyhow!("uploading {rel}: {}", sdk_error(&e)))?;
            return Ok(());
        }
        let upload = block_on(
            client()
                .create_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .send(),
        )
        .map_err(|e| anyhow!("uploading {rel}: {}", sdk_error(&e)))?;
        let id = upload
            .upload_id()
            .ok_or_else(|| anyhow!("uploading {rel}: no upload id"))?
            .to_string();
        let result = self.send_parts(&mut file, rel, &key, &id, len, part);
        if result.is_err() {
            // Best effort: a dead server forgets it anyway; a live one frees the parts.
            let abort = client()
                .abort_multipart_upload()
                .bucket(&self.bucket)
                .key(&key)
                .upload_id(&id)
                .send();
            let _ = block_on(abort);
        }
        result
    }

    fn send_parts(
        &self,
        file: &mut std::fs::File,
        rel: &str,
        key: &str,
        id: &str,
        len: u64,
        part: u64,
    ) -> Result<()> {
        let mut parts = Vec::new();
        for (i, start) in (0..len).step_by(part as usize).enumerate() {
            let body = read_at(file, start, part.min(len - start))?;
            let number = i as i32 + 1;
            let done = block_on(
                client()
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(id)
                    .part_number(number)
                    .body(ByteStream::from(body))
                    .send(),
            )
            .map_err(|e| anyhow!("uploading {rel} (part {number}): {}", sdk_error(&e)))?;
            parts.push(
                CompletedPart::builder()
                    .part_number(number)
                    .set_e_tag(done.e_tag().map(String::from))
                    .build(),
            );
            test_pause_after_part(rel);
        }
        block_on(
            client()
                .complete_multipart_upload()
                .bucket(&self.bucket)
                .key(key)
                .upload_id(id)
                .multipart_upload(
                    CompletedMultipartUpload::builder()
                        .set_parts(Some(parts))
                        .build(),
                )
                .send(),
        )
        .map_err(|e| anyhow!("uploading {rel}: {}", sdk_error(&e)))?;
        Ok(())
    }

    /// The remote's checkpoints newer than step `than`, newest first: (key relative to the run,
    /// step), the step read from each file's header alone (a ranged GET).
    fn checkpoints_newer(&self, than: i64) -> Result<Vec<(String, i64)>> {
        let mut found = Vec::new();
        for rel in self.list()?.into_keys() {
            let name = rel.strip_prefix("checkpoints/").unwrap_or_default();
            if name.is_empty() || name.contains('/') || !name.ends_with(".safetensors") {
                continue;
            }
            if let Ok(step) = self.peek_step(&rel) {
                if step > than {
                    found.push((rel, step));
                }
            }
        }
        found.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
        Ok(found)
    }

    /// The bytes `range` (`bytes=A-B`) of `rel`: a checkpoint's header, without its tensors.
    fn get_range(&self, rel: &str, range: String) -> Result<Vec<u8>> {
        let out = block_on(
            client()
                .get_object()
                .bucket(&self.bucket)
                .key(format!("{}{rel}", self.prefix))
                .range(range)
                .send(),
        )
        .map_err(|e| anyhow!("reading {}{rel}: {}", self.url(), sdk_error(&e)))?;
        Ok(block_on(out.body.collect())
            .with_context(|| format!("reading {}{rel}", self.url()))?
            .to_vec())
    }

    fn peek_step(&self, rel: &str) -> Result<i64> {
        let len = self.get_range(rel, "bytes=0-7".into())?;
        let len = u64::from_le_bytes(len.try_into().map_err(|_| anyhow!("short header"))?);
        if len > 100 << 20 {
            bail!("not a checkpoint");
        }
        let head = self.get_range(rel, format!("bytes=0-{}", 7 + len))?;
        Ok(checkpoint::state_of_header(&head[8..])?.step)
    }

    /// Downloads `rel` to `dest`, atomically (temp file, fsync, rename), streamed through
    /// clip-data's resuming reader (a body that breaks mid-checkpoint continues by Range).
    fn fetch(&self, rel: &str, dest: &Path) -> Result<()> {
        let mut body = S3Reader::open(&format!("{}{rel}", self.url()))?;
        clip_model::weights::write_atomically(dest, |tmp| {
            std::io::copy(&mut body, &mut std::fs::File::create(tmp)?)?;
            Ok(())
        })
    }

    /// The shard files a sharded checkpoint's index (fetched to `index`, in `dir`) lists, each
    /// fetched beside it (none for a full checkpoint).
    fn fetch_shards(&self, index: &Path, dir: &Path) -> Result<()> {
        for rel in crate::fsdp::sharded::listed_files(index).unwrap_or_default() {
            let dest = dir.join(&rel);
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            self.fetch(&format!("checkpoints/{rel}"), &dest)?;
        }
        Ok(())
    }

    /// `--resume latest` with a remote: when the remote holds a checkpoint newer than step
    /// `local_step` (the newest local one that verifies; -1 for none), fetches the newest that
    /// verifies into `dir` and returns it. A remote that cannot be read is a warning: the run
    /// resumes from what it has locally.
    pub fn fetch_newer(
        &self,
        dir: &Path,
        local_step: i64,
        log: &mut Log,
    ) -> Option<(PathBuf, Loaded)> {
        let newer = match self.checkpoints_newer(local_step) {
            Ok(n) => n,
            Err(e) => {
                log.warn(&format!("remote sync: cannot look for checkpoints: {e:#}"));
                return None;
            }
        };
        for (rel, step) in newer {
            let dest = dir.join(Path::new(&rel).file_name()?);
            let fetched = self
                .fetch(&rel, &dest)
                .and_then(|()| self.fetch_shards(&dest, dir))
                .and_then(|()| checkpoint::load_finite(&dest));
            match fetched {
                Ok(loaded) => {
                    log.info(&format!(
                        "Fetched checkpoint {}{rel} (step {step}) from the remote",
                        self.url()
                    ));
                    return Some((dest, loaded));
                }
                Err(e) => {
                    log.warn(&format!("skipping remote checkpoint {rel}: {e:#}"));
                    let _ = std::fs::remove_file(&dest);
                }
            }
        }
        None
    }
}

/// The background sync of one run directory (rank 0).
pub struct RemoteSync {
    stop: mpsc::Sender<()>,
    thread: JoinHandle<()>,
}

impl RemoteSync {
    /// Syncs `local` to `remote` now (OpenCLIP checks the remote this way before training),
    /// then every `every` on a thread; `log` is the run's log, opened again for that thread.
    pub fn start(remote: Remote, local: PathBuf, every: Duration, log: &mut Log) -> Result<Self> {
        let mut sent = Sent::new();
        log.info(&format!("Starting remote sync to {}", remote.url()));
        pass(&remote, &local, &mut sent, log);
        let mut thread_log = log.reopened()?;
        let (stop, stopped) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("remote-sync".into())
            .spawn(move || loop {
                match stopped.recv_timeout(every) {
                    Err(RecvTimeoutError::Timeout) => {
                        pass(&remote, &local, &mut sent, &mut thread_log);
                    }
                    Ok(()) | Err(RecvTimeoutError::Disconnected) => {
                        thread_log.info("Final remote sync.");
                        // The last pass matters most (a preempted node's disk may be gone
                        // next): it tries three times.
                        for wait in [0, 5, 20] {
                            std::thread::sleep(Duration::from_secs(wait));
                            if pass(&remote, &local, &mut sent, &mut thread_log) {
                                thread_log.info("Final remote sync successful.");
                                return;
                            }
                        }
                        thread_log.error(&format!(
                            "Final remote sync failed: {} is behind {}",
                            remote.url(),
                            local.display()
                        ));
                        return;
                    }
                }
            })
            .context("cannot start the remote-sync thread")?;
        Ok(RemoteSync { stop, thread })
    }

    /// Runs the final pass and waits for it.
    pub fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// One sync pass, its failure a warning; true when everything was sent.
fn pass(remote: &Remote, local: &Path, sent: &mut Sent, log: &mut Log) -> bool {
    match remote.sync(local, sent, log) {
        Ok(names) => {
            if !names.is_empty() {
                log.info(&format!("Remote sync: sent {}", names.join(", ")));
            }
            true
        }
        Err(e) => {
            log.warn(&format!(
                "remote sync to {} failed (training goes on; the next pass retries): {e:#}",
                remote.url()
            ));
            false
        }
    }
}

/// The files under `dir`, recursively, keyed by their `/`-separated path relative to it; names
/// starting with `.` (a checkpoint being written) are left out, as are their folders.
fn files_under(dir: &Path) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let path = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(path),
                Ok(t) if t.is_file() => {
                    let rel = path.strip_prefix(dir).unwrap_or(&path);
                    let rel: Vec<_> = rel.iter().map(|c| c.to_string_lossy()).collect();
                    out.push((rel.join("/"), path));
                }
                _ => {}
            }
        }
    }
    // Checkpoints last: a sharded checkpoint's index after its shards, so the remote never holds
    // an index whose shards are missing (a pass stops at its first failed file).
    out.sort_by_key(|(rel, _)| {
        let top_checkpoint = rel.starts_with("checkpoints/")
            && rel.matches('/').count() == 1
            && rel.ends_with(".safetensors");
        (top_checkpoint, rel.clone())
    });
    out
}

fn read_at(file: &mut std::fs::File, start: u64, len: u64) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(start))?;
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// The multipart part size: `CLIP_TRAIN_REMOTE_SYNC_PART_BYTES`, default 64 MiB, at least S3's
/// minimum of 5 MiB.
fn part_bytes() -> u64 {
    std::env::var("CLIP_TRAIN_REMOTE_SYNC_PART_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 << 20)
        .max(5 << 20)
}

/// The SDK error with its cause (its `Display` alone says only "service error").
fn sdk_error(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Test hook (crates/clip-train/tests/it/remote_sync.rs), inert unless the variable is set:
/// `CLIP_TRAIN_TEST_REMOTE_SYNC_PAUSE=PREFIX:FLAG` — after the first part of the first multipart
/// upload of a file whose relative path starts with PREFIX, create FLAG and wait while it exists,
/// so the test can kill the server in the middle of an upload every time.
fn test_pause_after_part(rel: &str) {
    static FIRED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Ok(hook) = std::env::var("CLIP_TRAIN_TEST_REMOTE_SYNC_PAUSE") else {
        return;
    };
    let (prefix, flag) = hook.split_once(':').expect("PREFIX:FLAG");
    if !rel.starts_with(prefix) || FIRED.swap(true, std::sync::atomic::Ordering::SeqCst) {
        return;
    }
    if std::fs::write(flag, b"").is_ok() {
        while Path::new(flag).exists() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}
