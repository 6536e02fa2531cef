//! `clip-train`: OpenCLIP's `python -m open_clip_train.main <flags>`, in Rust.
use clip_train::trainer::{self, Outcome};
use clip_train::{params, plan};

fn main() {
    let p = match params::parse(std::env::args_os()) {
        Ok(p) => p,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            std::process::exit(0);
        }
        Err(e) => {
            // One line naming the culprit; argparse's exit status.
            let text = e.render().to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("clip-train: {}", first.trim_start_matches("error: "));
            std::process::exit(2);
        }
    };
    if p.print_params {
        use std::io::Write;
        // A closed pipe (`| head`) is not an error worth a panic.
        let _ = writeln!(
            std::io::stdout(),
            "{}",
            serde_json::to_string_pretty(&p).expect("params serialise")
        );
        return;
    }
    // Every rank reports its own errors; with several, say which one (rank 0's log has the rest).
    let who = match clip_dist::WorldInfo::from_env() {
        Ok(w) if w.world_size > 1 => format!("clip-train (rank {})", w.rank),
        _ => "clip-train".to_string(),
    };
    let plan = match plan::validate(p) {
        Ok(plan) => plan,
        Err(e) => {
            eprintln!("{who}: {e}");
            std::process::exit(clip_train::EXIT_USAGE);
        }
    };
    match trainer::run(plan) {
        Ok(Outcome::Finished) => {}
        Ok(Outcome::Preempted) => std::process::exit(clip_train::EXIT_PREEMPTED),
        Err(e) => {
            eprintln!("{who}: error: {e:#}");
            std::process::exit(exit_status(&e));
        }
    }
}

/// The exit status of a failed run, by the error's type: clip-dist's [`clip_dist::Fault`] of the
/// error under it — 70 a rank died, hung or disagreed (not requeued blindly, unlike a
/// preemption's 75), 2 the job was launched wrong (bad rendezvous settings) — else 1.
fn exit_status(e: &anyhow::Error) -> i32 {
    clip_train::ddp::dist_error(e).map_or(1, |d| d.fault().exit_status())
}
