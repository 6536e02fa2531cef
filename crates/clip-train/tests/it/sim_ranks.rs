//! `clip-tool sim-ranks`: the trainer's control path for W ranks (threads of one process)
//! against the real store. What a step costs rank 0's store must grow at most linearly with the
//! world (a 512-rank job), a plain step stays within 4·W store requests, and an evaluation moves
//! its features over the collectives, not through the store.
use serde_json::Value;
use std::collections::HashMap;
use std::process::Command;

/// `(world, kind)` → the row's figures, from `--json`.
fn simulate(ranks: &str, extra: &[&str]) -> HashMap<(u64, String), Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_clip-tool"))
        .args(["sim-ranks", "--ranks", ranks, "--json"])
        .args(extra)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let key = (
                v["world"].as_u64().unwrap(),
                v["kind"].as_str().unwrap().to_string(),
            );
            (key, v)
        })
        .collect()
}

#[test]
fn store_requests_per_step_grow_at_most_linearly_with_the_world() {
    // convnext_large_d_320's feature width; 1024 val pairs over 8 loader streams.
    let (val, dim) = (1024.0, 768.0);
    let rows = simulate("16,64", &["--steps", "30", "--val-samples", "1024"]);
    assert_eq!(rows.len(), 8, "{rows:?}");
    for kind in ["plain", "log", "checkpoint", "evaluation"] {
        let per_rank = |w: u64| {
            let row = &rows[&(w, kind.to_string())];
            assert!(row["steps"].as_u64().unwrap() >= 3, "{row}");
            row["store_requests_per_step"].as_f64().unwrap() / w as f64
        };
        let (small, large) = (per_rank(16), per_rank(64));
        // O(W) in all: the requests per rank do not grow with the world. (Before the control
        // tree, a plain step at 64 ranks cost 131 requests per rank: O(W²) in all.)
        assert!(
            large <= (1.5 * small).max(4.0),
            "{kind}: {small:.2} store requests per rank and step at 16 ranks, {large:.2} at 64"
        );
    }
    let plain = rows[&(64, "plain".to_string())]["store_requests_per_step"]
        .as_f64()
        .unwrap();
    assert!(
        plain <= 4.0 * 64.0,
        "a plain step at 64 ranks: {plain} store requests"
    );
    // Every rank gathers every pair's two features (f32): none of them through the store.
    let features = val * 2.0 * dim * 4.0;
    let eval = rows[&(64, "evaluation".to_string())]["store_bytes_per_step"]
        .as_f64()
        .unwrap();
    assert!(
        eval < features / 20.0,
        "an evaluation at 64 ranks moved {eval} bytes through the store ({features} of features)"
    );
}
