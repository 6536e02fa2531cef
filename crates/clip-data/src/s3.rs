//! Native S3 reads with aws-sdk-s3.
//!
//! Credentials, region and endpoint come from the usual environment (`AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`/`AWS_DEFAULT_REGION`, `AWS_ENDPOINT_URL[_S3]`, profiles).
//! With a custom endpoint the client uses path-style addressing (`http://host/bucket/key`).
//! Requests are retried by the SDK (standard mode, exponential backoff). The SDK does not retry a
//! body that breaks mid-object, so [`S3Reader`] does: it re-issues the GET with
//! `Range: bytes=<reached>-` and continues from the byte it had reached, with exponential backoff,
//! up to `CLIP_S3_MAX_RESUMES` (default 20) consecutive failures without progress. A body that
//! stalls longer than `CLIP_S3_READ_TIMEOUT_S` (default 60 s) counts as broken.

use anyhow::{anyhow, bail, Context, Result};
use aws_sdk_s3::Client;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
static CLIENT: OnceLock<Client> = OnceLock::new();
static RESUMES: AtomicU64 = AtomicU64::new(0);

/// How many Range resumes happened in this process (for tests and logs).
pub fn resume_count() -> u64 {
    RESUMES.load(Ordering::Relaxed)
}

fn runtime() -> &'static tokio::runtime::Runtime {
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("clip-s3")
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// Runs `fut` on the S3 runtime and waits for it (callers are plain threads, not async).
pub fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    runtime().block_on(fut)
}

fn env_num(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The process's S3 client, configured as the module documentation says (shared by the data
/// readers and clip-train's `--remote-sync`).
pub fn client() -> &'static Client {
    CLIENT.get_or_init(|| {
        runtime().block_on(async {
            let conf = aws_config::defaults(aws_config::BehaviorVersion::latest())
                .retry_config(
                    aws_config::retry::RetryConfig::standard().with_max_attempts(env_num(
                        "CLIP_S3_MAX_ATTEMPTS",
                        5,
                    )
                        as u32),
                )
                .load()
                .await;
            let custom_endpoint = std::env::var_os("AWS_ENDPOINT_URL").is_some()
                || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some();
            let mut b = aws_sdk_s3::config::Builder::from(&conf);
            if conf.region().is_none() {
                b = b.region(aws_sdk_s3::config::Region::new("us-east-1"));
            }
            if custom_endpoint {
                b = b.force_path_style(true);
            }
            Client::from_conf(b.build())
        })
    })
}

/// Split `s3://bucket/key`.
pub fn parse_url(url: &str) -> Result<(String, String)> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| anyhow!("not an s3:// URL: {url}"))?;
    let (b, k) = rest
        .split_once('/')
        .ok_or_else(|| anyhow!("s3 URL without key: {url}"))?;
    if b.is_empty() || k.is_empty() {
        bail!("s3 URL needs a bucket and a key: {url}");
    }
    Ok((b.to_string(), k.to_string()))
}

/// A streaming, resuming reader of one S3 object.
pub struct S3Reader {
    url: String,
    bucket: String,
    key: String,
    pos: u64,
    len: Option<u64>,
    body: Option<aws_sdk_s3::primitives::ByteStream>,
    chunk: bytes_chunk::Chunk,
    failures: u32,
}

mod bytes_chunk {
    /// The unread rest of the last body chunk.
    #[derive(Default)]
    pub struct Chunk {
        pub data: Vec<u8>,
        pub off: usize,
    }
}

impl S3Reader {
    /// Issue the first GET (errors such as a missing key surface here).
    pub fn open(url: &str) -> Result<S3Reader> {
        Self::open_range(url, 0, None)
    }

    /// Bytes `start..end` of the object (`end` None: to its end), by Range GETs.
    pub fn open_range(url: &str, start: u64, end: Option<u64>) -> Result<S3Reader> {
        let (bucket, key) = parse_url(url)?;
        let mut r = S3Reader {
            url: url.to_string(),
            bucket,
            key,
            pos: start,
            len: end,
            body: None,
            chunk: Default::default(),
            failures: 0,
        };
        r.get().with_context(|| format!("cannot open {url}"))?;
        Ok(r)
    }

    fn get(&mut self) -> Result<()> {
        let c = client();
        let mut req = c.get_object().bucket(&self.bucket).key(&self.key);
        // `len` is where reading stops (exclusive): the object's size, or a range's end
        match self.len {
            Some(end) if end <= self.pos => {
                return Ok(()); // an empty range: nothing to ask for (a GET would be refused)
            }
            Some(end) => req = req.range(format!("bytes={}-{}", self.pos, end - 1)),
            None if self.pos > 0 => req = req.range(format!("bytes={}-", self.pos)),
            None => {}
        }
        let out = runtime().block_on(req.send()).map_err(|e| {
            let e = aws_sdk_s3::error::DisplayErrorContext(e);
            anyhow!("GET {} (from byte {}): {e}", self.url, self.pos)
        })?;
        if self.len.is_none() {
            self.len = out.content_length().map(|l| self.pos + l as u64);
        }
        self.body = Some(out.body);
        Ok(())
    }

    /// Next chunk of the body; `Ok(None)` at the end of the object.
    fn next_chunk(&mut self) -> Result<Option<Vec<u8>>> {
        let timeout = Duration::from_secs(env_num("CLIP_S3_READ_TIMEOUT_S", 60));
        let body = self.body.as_mut().expect("body");
        match runtime().block_on(async { tokio::time::timeout(timeout, body.next()).await }) {
            Err(_) => bail!("no data for {timeout:?}"),
            Ok(None) => Ok(None),
            Ok(Some(Ok(b))) => Ok(Some(b.to_vec())),
            Ok(Some(Err(e))) => Err(anyhow!("{}", aws_sdk_s3::error::DisplayErrorContext(e))),
        }
    }
}

impl Read for S3Reader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.chunk.off < self.chunk.data.len() {
                let n = buf.len().min(self.chunk.data.len() - self.chunk.off);
                buf[..n].copy_from_slice(&self.chunk.data[self.chunk.off..self.chunk.off + n]);
                self.chunk.off += n;
                return Ok(n);
            }
            if self.len.is_some_and(|l| self.pos >= l) {
                return Ok(0);
            }
            let res = if self.body.is_some() {
                self.next_chunk()
            } else {
                self.get().map(|_| Some(Vec::new()))
            };
            match res {
                Ok(Some(data)) => {
                    if !data.is_empty() {
                        self.failures = 0;
                    }
                    self.pos += data.len() as u64;
                    self.chunk = bytes_chunk::Chunk { data, off: 0 };
                }
                Ok(None) => {
                    // Body ended. Short of the announced length means the connection closed early.
                    match self.len {
                        Some(l) if self.pos < l => {
                            self.broken(anyhow!("body ended at byte {} of {l}", self.pos))?
                        }
                        _ => return Ok(0),
                    }
                }
                Err(e) => self.broken(e)?,
            }
        }
    }
}

impl S3Reader {
    /// Record a failure; back off; arrange for a Range GET from `pos`. Error out when exhausted.
    fn broken(&mut self, e: anyhow::Error) -> io::Result<()> {
        self.body = None;
        self.failures += 1;
        let max = env_num("CLIP_S3_MAX_RESUMES", 20) as u32;
        if self.failures > max {
            return Err(io::Error::other(format!(
                "{}: giving up after {max} resume attempts at byte {}: {e:#}",
                self.url, self.pos
            )));
        }
        let backoff = Duration::from_millis((100u64 << self.failures.min(6)).min(5000));
        eprintln!(
            "[clip-data] {}: {e:#}; resuming from byte {} in {backoff:?} (attempt {})",
            self.url, self.pos, self.failures
        );
        RESUMES.fetch_add(1, Ordering::Relaxed);
        std::thread::sleep(backoff);
        Ok(())
    }
}
