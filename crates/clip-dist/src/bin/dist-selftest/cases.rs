//! The collective cases of the multi-process tests, shared by `dist-selftest` (which runs them
//! as one rank) and `tests/it/multiprocess.rs` (which computes the reference from the same inputs).

use tch::{Kind, Tensor};

/// One input shape and dtype and the collectives run on it.
pub struct Case {
    pub kind: Kind,
    pub shape: Vec<i64>,
    pub collectives: &'static [&'static str],
}

/// Every case for a world of `world` ranks: odd, empty, one-element and 0-dim shapes, shapes
/// for reduce_scatter with 0, 1 and 5 rows per rank, and buffers larger than socket buffers.
pub fn cases(world: usize) -> Vec<Case> {
    let w = world as i64;
    let general: &[&str] = &[
        "all_reduce_sum",
        "all_reduce_mean",
        "all_gather",
        "broadcast",
    ];
    let scatter: &[&str] = &[
        "reduce_scatter_sum",
        "reduce_scatter_mean",
        "all_reduce_sum",
    ];
    let mut out = Vec::new();
    for kind in [Kind::Float, Kind::BFloat16] {
        for shape in [vec![], vec![0], vec![1], vec![7], vec![2, 3, 4], vec![1001]] {
            out.push(Case {
                kind,
                shape,
                collectives: general,
            });
        }
        out.push(Case {
            kind,
            shape: vec![3, 5],
            collectives: &[
                "all_reduce_sum",
                "all_reduce_sum_transposed",
                "broadcast_transposed",
            ],
        });
        for rows in [0, 1, 5] {
            out.push(Case {
                kind,
                shape: vec![w * rows, 3],
                collectives: scatter,
            });
        }
    }
    out.push(Case {
        kind: Kind::Float,
        shape: vec![2_000_003],
        collectives: &["all_reduce_sum", "broadcast"],
    });
    out.push(Case {
        kind: Kind::BFloat16,
        shape: vec![w * 250_001],
        collectives: &["all_reduce_mean", "reduce_scatter_sum"],
    });
    // Point to point (another rank needed): OpenCLIP's ring exchange one way, and both ways
    // once left and right differ; one buffer larger than the sockets' so every rank's writes
    // block until its neighbour reads.
    let p2p: &[&str] = match world {
        0 | 1 => &[],
        2 => &["send_recv_ring"],
        _ => &["send_recv_ring", "send_recv_bidir"],
    };
    if !p2p.is_empty() {
        for (kind, shape) in [
            (Kind::Float, vec![5, 3]),
            (Kind::BFloat16, vec![7]),
            (Kind::Float, vec![0]),
            (Kind::Float, vec![1_000_003]),
        ] {
            out.push(Case {
                kind,
                shape,
                collectives: p2p,
            });
        }
    }
    for kind in [Kind::Double, Kind::Int64] {
        out.push(Case {
            kind,
            shape: vec![w * 2, 3],
            collectives: &[
                "all_reduce_sum",
                "all_gather",
                "broadcast",
                "reduce_scatter_sum",
            ],
        });
    }
    out
}

/// splitmix64: a tiny, thread-safe generator (torch's global RNG is neither, under a test
/// harness running tests in parallel).
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Rank `rank`'s input for case `index`: seeded by (index, rank), some exact ±0.
pub fn input(index: usize, case: &Case, rank: usize) -> Tensor {
    let n: i64 = case.shape.iter().product();
    let mut state = (index as u64) << 32 | rank as u64;
    let t = if case.kind == Kind::Int64 {
        let v: Vec<i64> = (0..n)
            .map(|_| (splitmix(&mut state) % 2001) as i64 - 1000)
            .collect();
        Tensor::from_slice(&v)
    } else {
        let v: Vec<f32> = (0..n)
            .map(|_| {
                let u = splitmix(&mut state);
                match u % 16 {
                    0 => -0.0,
                    1 => 0.0,
                    _ => ((u >> 11) as f64 / (1u64 << 53) as f64 * 8.0 - 4.0) as f32,
                }
            })
            .collect();
        Tensor::from_slice(&v).to_kind(case.kind)
    };
    t.reshape(&case.shape)
}

/// The broadcast root of case `index`: every rank is a root somewhere.
pub fn root(index: usize, world: usize) -> usize {
    index % world
}

/// What rank `rank` sends in the byte collectives' call `call` (the broadcast from root `call`,
/// or with `call` = W the all-gather): over 16 KiB of UTF-8 with multi-byte characters and NULs,
/// a different length for every (call, rank).
pub fn text(call: usize, rank: usize) -> String {
    let len = 16 * 1024 + 1 + 997 * call + 131 * rank;
    let mut s = format!("call {call} rank {rank}: ");
    let unit = "données\u{0}→🙂 ";
    while s.len() < len {
        s.push_str(unit);
    }
    s
}

/// Rank `rank`'s bytes in the last all-gather: lengths differ, rank 1's is empty.
pub fn short(rank: usize) -> String {
    match rank {
        1 => String::new(),
        r => format!("rank {r}"),
    }
}
