//! Shared by every crate's integration tests (included with `#[path]`): a test that cannot run
//! here says so where a person sees it, and fails where every test must run.

use std::io::Write;

/// Whether every test must really run: `CI` set to anything but empty, `0` or `false`
/// (`.ci/run` sets `CI=true`).
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A test that cannot run here: prints `SKIPPED: TEST: REASON` straight to stderr (past the test
/// harness's capture, which would hide it in a passing test), or panics under CI. The caller
/// returns right after.
pub fn skip(reason: &str) {
    let test = std::thread::current().name().unwrap_or("?").to_string();
    if under_ci() {
        panic!("SKIPPED: {test}: {reason} (a skip is a failure under CI)");
    }
    let banner = "*".repeat(78);
    let _ = writeln!(
        std::io::stderr(),
        "\n{banner}\nSKIPPED: {test}: {reason}\n{banner}"
    );
}
