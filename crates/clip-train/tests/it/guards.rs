//! The tests' own guards (`tests/support/procs.rs`, `tests/support/s3.rs`): what a test starts
//! ends with the test — when it panics too, with whatever it started in turn, and a server even
//! when the test removed its folder (pid file included) before the guard dropped, as the
//! resume-bytes test does.
use crate::common::{tempdir, wait_until};
use crate::procs::Guarded;
use crate::s3_server::{s3s_fs_or_skip, S3Server};
use std::process::Command;

/// Whether process `pid` has ended (gone, or a zombie nobody reaped yet).
fn ended(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next());
    matches!(state, None | Some('Z') | Some('X'))
}

#[test]
fn a_guarded_process_and_its_children_end_when_the_test_panics() {
    let dir = tempdir("guard-panic");
    let file = dir.join("child");
    let f = file.clone();
    let shell = std::panic::catch_unwind(move || {
        let script = format!(
            "sleep 300 & echo $! > {}.tmp; mv {0}.tmp {0}; sleep 300",
            f.display()
        );
        let g = Guarded::spawn(Command::new("sh").args(["-c", &script]));
        wait_until("the background child", || f.exists());
        std::panic::panic_any(g.id());
    })
    .unwrap_err();
    let shell = *shell.downcast::<u32>().unwrap();
    let child: u32 = std::fs::read_to_string(&file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    wait_until("both to end", || ended(shell) && ended(child));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_s3_server_ends_with_its_guard_when_its_folder_is_already_gone() {
    let Some(bin) = s3s_fs_or_skip() else { return };
    let dir = tempdir("guard-s3");
    let srv = S3Server::start(&bin, dir.join("s3"));
    let pid: u32 = std::fs::read_to_string(dir.join("s3/s3s-fs.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!ended(pid));
    std::fs::remove_dir_all(&dir).unwrap();
    drop(srv);
    assert!(ended(pid), "s3s-fs {pid} still runs");
}
