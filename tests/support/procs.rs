//! Processes a test starts end with the test — when it passes, fails or panics (included with
//! `#[path]`, next to `skip.rs`). [`Guarded::spawn`] starts a command in a process group of its
//! own and kills the whole group when the guard is dropped or its process has been waited for,
//! so whatever it started in turn (a wandb sink, a `pipe:` reader, an srun step) goes too; and
//! the process is killed by the kernel if the test process itself dies first
//! (`PR_SET_PDEATHSIG`, tied to the thread that spawned it: the test's). `scripts/test.sh`
//! checks at the end that nothing the suite started is left (`scripts/check-leftovers.py`).
// Each test binary uses its own part of it.
#![allow(dead_code)]

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output};

extern "C" {
    fn kill(pid: i32, sig: i32) -> i32;
    fn prctl(option: i32, ...) -> i32;
}

const SIGKILL: i32 = 9;
const PR_SET_PDEATHSIG: i32 = 1;

/// A started process that ends with its owner (see the module documentation).
pub struct Guarded {
    child: Option<Child>,
}

impl Guarded {
    /// Starts `cmd` (panics if it cannot).
    pub fn spawn(cmd: &mut Command) -> Guarded {
        cmd.process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                prctl(PR_SET_PDEATHSIG, SIGKILL);
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        Guarded { child: Some(child) }
    }

    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("not waited for").id()
    }

    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("not waited for")
    }

    /// Waits for the process, then ends what it left behind.
    pub fn wait(mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("not waited for");
        let status = child.wait().unwrap();
        // SAFETY: a signal to the group this guard created (no such group: a no-op error).
        unsafe { kill(-(child.id() as i32), SIGKILL) };
        status
    }

    /// Waits for the process (collecting its piped output), then ends what it left behind.
    pub fn wait_with_output(mut self) -> Output {
        let child = self.child.take().expect("not waited for");
        let pgid = child.id() as i32;
        let out = child.wait_with_output().unwrap();
        // SAFETY: a signal to the group this guard created (no such group: a no-op error).
        unsafe { kill(-pgid, SIGKILL) };
        out
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: as above; then the process is reaped, so no zombie is left either.
            unsafe { kill(-(child.id() as i32), SIGKILL) };
            let _ = child.wait();
        }
    }
}

/// Kills the process `pid` (not a child of this process: e.g. a server a script started in the
/// background) if it still runs `comm`, and waits until it is gone. For guards of such servers:
/// it never panics (a guard may drop during a panic); a process that outlives SIGKILL is only
/// reported here, and `scripts/check-leftovers.py` fails the suite on it.
pub fn kill_by_pid(pid: u32, comm: &str) {
    let running = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // `pid (comm) state …`: a zombie (Z) or dead (X) process is gone for this purpose.
        let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
        let same = std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim_end() == comm);
        same && !matches!(state, None | Some('Z') | Some('X'))
    };
    if !running() {
        return;
    }
    // SAFETY: a signal to a process checked just above to be the one meant.
    unsafe { kill(pid as i32, SIGKILL) };
    for _ in 0..200 {
        if !running() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    eprintln!("{comm} (pid {pid}) still runs 2 s after SIGKILL");
}
