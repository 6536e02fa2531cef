//! A real S3-compatible server for the tests (s3s-fs, started and stopped through
//! `scripts/start-s3.sh` / `scripts/stop-s3.sh`), shared by clip-data's and clip-train's tests
//! (included with `#[path]`, next to `skip.rs`).
// Each test binary uses its own part of it (clip-data puts objects by file and restarts in one
// go; clip-train kills and restarts around an upload).
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use super::procs::kill_by_pid;
use super::skip::skip;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The s3s-fs binary: `$CLIP_S3S_FS`, else `.deps/s3s/bin/s3s-fs`; missing: `None` after a loud
/// skip (a failure under CI).
pub fn s3s_fs_or_skip() -> Option<PathBuf> {
    let p = std::env::var_os("CLIP_S3S_FS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".deps/s3s/bin/s3s-fs"));
    if p.is_file() {
        return Some(p);
    }
    skip(&format!(
        "s3s-fs not found at {} (set CLIP_S3S_FS, or run `bash scripts/start-s3.sh \
         --install-only` once)",
        p.display()
    ));
    None
}

/// A running s3s-fs with a bucket `ci-bucket`, its data under `base`. Dropping it kills the
/// server by the pid it was started with — not through the pid file under `base`, which a test
/// may have removed with its temporary folder before the guard drops.
pub struct S3Server {
    pub base: PathBuf,
    pub bin: PathBuf,
    /// The objects, as files: `data/<bucket>/<key>`.
    pub data: PathBuf,
    pub endpoint: String,
    /// The client environment (`AWS_ENDPOINT_URL`, keys, region) from `s3.env`.
    pub env: Vec<(String, String)>,
    /// The server's pid, as its last (re)start wrote it.
    pid: std::cell::Cell<u32>,
}

impl S3Server {
    /// Starts a server whose files live in a fresh folder `base`.
    pub fn start(bin: &Path, base: PathBuf) -> S3Server {
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let mut s = S3Server {
            data: base.join("data"),
            base,
            bin: bin.to_path_buf(),
            endpoint: String::new(),
            env: Vec::new(),
            pid: std::cell::Cell::new(0),
        };
        s.run_start();
        let env = std::fs::read_to_string(s.base.join("s3.env")).unwrap();
        for line in env.lines() {
            if let Some((k, v)) = line.trim_start_matches("export ").split_once('=') {
                if k == "AWS_ENDPOINT_URL" {
                    s.endpoint = v.to_string();
                }
                s.env.push((k.to_string(), v.to_string()));
            }
        }
        s
    }

    fn run_start(&self) {
        let st = std::process::Command::new(repo_root().join("scripts/start-s3.sh"))
            .env("S3_BASE", &self.base)
            .env("CLIP_S3S_FS", &self.bin)
            .status()
            .unwrap();
        assert!(st.success(), "start-s3.sh failed");
        let pid = std::fs::read_to_string(self.base.join("s3s-fs.pid")).unwrap();
        self.pid.set(pid.trim().parse().unwrap());
    }

    /// SIGKILL the server (connections drop mid-body).
    pub fn kill(&self) {
        let st = std::process::Command::new(repo_root().join("scripts/stop-s3.sh"))
            .env("S3_BASE", &self.base)
            .env("S3_STOP_HARD", "1")
            .status()
            .unwrap();
        assert!(st.success());
    }

    /// Starts the server again on the same port, with the same data.
    pub fn restart(&self) {
        self.run_start();
    }

    /// [`S3Server::kill`], `pause`, [`S3Server::restart`].
    pub fn kill_and_restart(&self, pause: std::time::Duration) {
        self.kill();
        std::thread::sleep(pause);
        self.restart();
    }

    pub fn put(&self, bucket: &str, key: &str, src: &Path) {
        let dst = self.data.join(bucket).join(key);
        std::fs::create_dir_all(dst.parent().unwrap()).unwrap();
        std::fs::copy(src, dst).unwrap();
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        kill_by_pid(self.pid.get(), "s3s-fs");
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// A TCP proxy in front of an S3 server that counts the bytes the server sends (bodies and
/// headers): what a client really read, measured outside it.
#[allow(dead_code)] // clip-train's tests use it, clip-data's (which share this file) do not
pub struct CountingProxy {
    /// `http://127.0.0.1:PORT`: give it to clients as `AWS_ENDPOINT_URL`
    pub endpoint: String,
    served: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

#[allow(dead_code)]
impl CountingProxy {
    pub fn start(upstream: &str) -> CountingProxy {
        use std::net::{TcpListener, TcpStream};
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::sync::Arc;
        let target = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let served = Arc::new(AtomicU64::new(0));
        let count = served.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&target) else {
                    continue;
                };
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let count = count.clone();
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64 * 1024];
                    loop {
                        use std::io::{Read, Write};
                        match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                count.fetch_add(n as u64, Ordering::Relaxed);
                                if c_out.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        CountingProxy { endpoint, served }
    }

    /// Bytes the server has sent through the proxy so far.
    pub fn served(&self) -> u64 {
        self.served.load(std::sync::atomic::Ordering::Relaxed)
    }
}
