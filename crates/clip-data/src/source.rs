//! Byte sources for shard URLs: local files, `pipe:CMD` and native `s3://bucket/key`.

use anyhow::{Context, Result};
use std::io::{self, Read};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

/// Open a shard URL for streaming.
/// - `pipe:CMD`: `sh -c CMD`, its stdout streamed (see [`PipeReader`]);
/// - `s3://bucket/key`: native S3 GET with resume on broken bodies (see [`crate::s3`]);
/// - `file://path` or anything else: a local path.
pub fn open(url: &str) -> Result<Box<dyn Read + Send>> {
    if let Some(cmd) = url.strip_prefix("pipe:") {
        Ok(Box::new(PipeReader::spawn(cmd)?))
    } else if url.starts_with("s3://") {
        Ok(Box::new(crate::s3::S3Reader::open(url)?))
    } else {
        let path = url.strip_prefix("file://").unwrap_or(url);
        let f = std::fs::File::open(path).with_context(|| format!("cannot open shard {path}"))?;
        Ok(Box::new(io::BufReader::with_capacity(1 << 20, f)))
    }
}

/// Bytes `start..end` of a shard URL (`end` None: to its end). A file seeks, `s3://` asks for
/// the range (one GET: only those bytes cross the network), `pipe:` cannot seek: its command's
/// output is read from the start and the first `start` bytes dropped.
pub fn open_range(url: &str, start: u64, end: Option<u64>) -> Result<Box<dyn Read + Send>> {
    if start == 0 && end.is_none() {
        return open(url);
    }
    if url.starts_with("s3://") {
        return Ok(Box::new(crate::s3::S3Reader::open_range(url, start, end)?));
    }
    let mut r: Box<dyn Read + Send> = if let Some(cmd) = url.strip_prefix("pipe:") {
        let mut p = PipeReader::spawn(cmd)?;
        let skipped = io::copy(&mut (&mut p).take(start), &mut io::sink())
            .with_context(|| format!("reading pipe command {cmd:?} up to byte {start}"))?;
        if skipped < start {
            anyhow::bail!("pipe command {cmd:?} ended at byte {skipped}, before byte {start}");
        }
        Box::new(p)
    } else {
        use std::io::Seek;
        let path = url.strip_prefix("file://").unwrap_or(url);
        let mut f =
            std::fs::File::open(path).with_context(|| format!("cannot open shard {path}"))?;
        f.seek(io::SeekFrom::Start(start))
            .with_context(|| format!("cannot seek {path} to byte {start}"))?;
        Box::new(io::BufReader::with_capacity(1 << 20, f))
    };
    if let Some(end) = end {
        r = Box::new(r.take(end.saturating_sub(start)));
    }
    Ok(r)
}

const STDERR_TAIL: usize = 2048;

/// Process groups of the pipe commands started by one loader epoch, so that dropping the epoch
/// can kill a command its reader thread is blocked on (see [`PipeGroups::kill_all`]).
#[derive(Clone, Default)]
pub struct PipeGroups(Arc<Mutex<Vec<i32>>>);

impl PipeGroups {
    /// Register pipe commands started on this thread from now on.
    pub fn enter(&self) {
        CURRENT_GROUPS.with(|g| *g.borrow_mut() = Some(self.clone()));
    }
    /// SIGKILL every registered, still running command (their readers then see EOF and reap them).
    pub fn kill_all(&self) {
        for &pg in self.0.lock().unwrap().iter() {
            // SAFETY: plain syscall on a process group we created
            unsafe {
                libc::killpg(pg, libc::SIGKILL);
            }
        }
    }
}

thread_local! {
    static CURRENT_GROUPS: std::cell::RefCell<Option<PipeGroups>> = const { std::cell::RefCell::new(None) };
}

/// The stdout of `sh -c CMD`.
///
/// The child runs in its own process group. At end of stream the child is reaped: exit status 0
/// or 141 (SIGPIPE, also when killed by SIGPIPE) is fine; any other status turns the final read
/// into an error naming the command and the tail of its stderr. Dropped early, the reader kills
/// the whole process group (so `aws s3 cp` under `sh` goes too) and reaps the child: no zombies.
pub struct PipeReader {
    cmd: String,
    groups: Option<PipeGroups>,
    child: Option<Child>,
    stdout: Option<std::process::ChildStdout>,
    stderr_tail: Arc<Mutex<Vec<u8>>>,
    stderr_thread: Option<JoinHandle<()>>,
}

impl PipeReader {
    pub fn spawn(cmd: &str) -> Result<PipeReader> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start pipe command {cmd:?}"))?;
        let stdout = child.stdout.take();
        let mut stderr = child.stderr.take().expect("piped stderr");
        let tail = Arc::new(Mutex::new(Vec::new()));
        let t2 = tail.clone();
        let th = std::thread::Builder::new()
            .name("pipe-stderr".into())
            .spawn(move || {
                let mut buf = [0u8; 4096];
                loop {
                    match stderr.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut t = t2.lock().unwrap();
                            t.extend_from_slice(&buf[..n]);
                            if t.len() > 2 * STDERR_TAIL {
                                let cut = t.len() - STDERR_TAIL;
                                t.drain(..cut);
                            }
                        }
                    }
                }
            })?;
        let groups = CURRENT_GROUPS.with(|g| g.borrow().clone());
        if let Some(g) = &groups {
            g.0.lock().unwrap().push(child.id() as i32);
        }
        Ok(PipeReader {
            cmd: cmd.to_string(),
            groups,
            child: Some(child),
            stdout,
            stderr_tail: tail,
            stderr_thread: Some(th),
        })
    }

    fn stderr_tail(&self) -> String {
        let t = self.stderr_tail.lock().unwrap();
        let s = &t[t.len().saturating_sub(STDERR_TAIL)..];
        String::from_utf8_lossy(s).trim().to_string()
    }

    /// Reap the child after EOF and judge its exit status.
    fn unregister(&self, pid: u32) {
        if let Some(g) = &self.groups {
            g.0.lock().unwrap().retain(|&p| p != pid as i32);
        }
    }

    fn finish(&mut self) -> io::Result<()> {
        self.stdout = None;
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let status = child.wait()?;
        self.unregister(child.id());
        if let Some(th) = self.stderr_thread.take() {
            let _ = th.join();
        }
        let ok = status.code() == Some(0)
            || status.code() == Some(141)
            || status.signal() == Some(libc::SIGPIPE);
        if ok {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "pipe command {:?} failed ({status}); stderr tail: {}",
                self.cmd,
                self.stderr_tail()
            )))
        }
    }
}

impl Read for PipeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(out) = self.stdout.as_mut() else {
            return Ok(0);
        };
        let n = out.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.finish()?;
        }
        Ok(n)
    }
}

impl Drop for PipeReader {
    fn drop(&mut self) {
        self.stdout = None; // close our end first: a writer gets SIGPIPE
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                // SAFETY: plain syscall on the process group we created (pgid == child pid).
                unsafe {
                    libc::killpg(child.id() as libc::pid_t, libc::SIGKILL);
                }
            }
            let _ = child.wait();
            self.unregister(child.id());
        }
        if let Some(th) = self.stderr_thread.take() {
            let _ = th.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(url: &str) -> io::Result<Vec<u8>> {
        let mut r = open(url).map_err(io::Error::other)?;
        let mut v = Vec::new();
        r.read_to_end(&mut v)?;
        Ok(v)
    }

    #[test]
    fn pipe_ok_and_sigpipe() {
        assert_eq!(read_all("pipe:printf hello").unwrap(), b"hello");
        assert_eq!(read_all("pipe:printf x; exit 141").unwrap(), b"x");
    }

    #[test]
    fn pipe_failure_names_command_and_stderr() {
        let e = read_all("pipe:echo some-output; echo 'boom: no such key' >&2; exit 3")
            .unwrap_err()
            .to_string();
        assert!(e.contains("exit 3") || e.contains("exit status: 3"), "{e}");
        assert!(
            e.contains("boom: no such key") && e.contains("exit 3"),
            "{e}"
        );
    }

    #[test]
    fn pipe_dropped_early_kills_and_reaps() {
        let mut r = PipeReader::spawn("yes; sleep 100").unwrap();
        let pid = r.child.as_ref().unwrap().id();
        let mut b = [0u8; 10];
        r.read_exact(&mut b).unwrap();
        drop(r);
        // reaped: no /proc entry left (not even a zombie)
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn missing_file() {
        let e = open("/nonexistent/shard-000.tar")
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("/nonexistent/shard-000.tar"), "{e}");
    }
}
