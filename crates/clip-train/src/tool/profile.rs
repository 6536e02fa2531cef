//! `clip-tool profile TRACE [--json]`: what a `--profile-steps` trace (torch.profiler's Chrome
//! trace) says about the steps it recorded — per step and per phase (`data`, `to_device`,
//! `forward_backward`, `grad_allreduce`, `clip_grad`, `optimizer`): wall time, aten ops and host
//! syncs (`aten::_local_scalar_dense`: a value read back from the device, which waits for it),
//! with the top-level op each sync happened under.
//!
//! "Ops" counts top-level aten ops: those no other op on the same thread encloses (an op's
//! redispatches and the kernels it calls are not counted again); a range owns the ops that start
//! inside it.
use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

/// The phases a step is cut into (named ranges in the trace), in step order.
pub const PHASES: [&str; 6] = [
    "data",
    "to_device",
    "forward_backward",
    "grad_allreduce",
    "clip_grad",
    "optimizer",
];

/// The range around each recorded step, as torch.profiler's schedule names it.
pub const STEP_PREFIX: &str = "ProfilerStep#";

/// The op a host sync shows as.
pub const SYNC_OP: &str = "aten::_local_scalar_dense";

/// Kernels whose CPU implementation reads scalars of CPU tensors (no device to wait for) where
/// their CUDA implementation reads them on the device: libtorch's CPU `_fused_adamw_` calls
/// `.item()` on every step count, the CUDA kernel does not (torch.optim.AdamW(fused=True) on
/// CPU shows the same reads). Their reads are counted apart, as `kernel_reads`, not as syncs.
pub const CPU_KERNEL_READS: [&str; 1] = ["aten::_fused_adamw_"];

#[derive(clap::Args)]
pub struct Args {
    /// The trace (`{logs}/{name}/profile/*.pt.trace.json`).
    trace: PathBuf,
    /// Print the summary as one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// The figures of one phase (or of whole steps), summed over the recorded steps.
#[derive(Debug, Default, Serialize, Clone)]
pub struct Figures {
    /// Ranges of this name seen.
    pub count: usize,
    pub ms: f64,
    /// Top-level aten ops.
    pub ops: usize,
    pub syncs: usize,
    /// `_local_scalar_dense` inside a [`CPU_KERNEL_READS`] kernel (not syncs on a GPU).
    pub kernel_reads: usize,
    /// Top-level ops by name.
    pub op_names: BTreeMap<String, usize>,
    /// The top-level op each host sync happened under, with counts.
    pub sync_sites: BTreeMap<String, usize>,
}

#[derive(Debug, Serialize)]
pub struct Summary {
    pub steps: usize,
    /// Whole steps (the `ProfilerStep#N` ranges).
    pub total: Figures,
    pub phases: BTreeMap<String, Figures>,
}

struct Event {
    name: String,
    tid: i64,
    ts: f64,
    end: f64,
}

fn events(trace: &Value, cat: &str) -> Vec<Event> {
    let all = trace["traceEvents"].as_array().map(Vec::as_slice);
    all.unwrap_or(&[])
        .iter()
        .filter(|e| e["ph"] == "X" && e["cat"] == cat)
        .filter_map(|e| {
            let ts = e["ts"].as_f64()?;
            Some(Event {
                name: e["name"].as_str()?.to_string(),
                tid: e["tid"].as_i64().unwrap_or(0),
                ts,
                end: ts + e["dur"].as_f64().unwrap_or(0.0),
            })
        })
        .collect()
}

/// Sums the ops and syncs starting inside each range of `ranges` into `f`.
fn add(f: &mut Figures, ranges: &[&Event], ops: &[Event], top: &[bool]) {
    for r in ranges {
        f.count += 1;
        f.ms += (r.end - r.ts) / 1000.0;
        let inside = |e: &Event| r.ts <= e.ts && e.ts <= r.end;
        let mut enclosing: Option<&Event> = None;
        for (op, &is_top) in ops.iter().zip(top) {
            if !inside(op) {
                continue;
            }
            if is_top {
                f.ops += 1;
                *f.op_names.entry(op.name.clone()).or_default() += 1;
                enclosing = Some(op);
            }
            if op.name == SYNC_OP {
                let site = enclosing.filter(|t| t.tid == op.tid && t.end >= op.ts);
                let site = site.map_or(SYNC_OP, |t| t.name.as_str()).to_string();
                if CPU_KERNEL_READS.contains(&site.as_str()) {
                    f.kernel_reads += 1;
                    continue;
                }
                f.syncs += 1;
                *f.sync_sites.entry(site).or_default() += 1;
            }
        }
    }
}

/// The summary of a parsed trace.
pub fn summarize(trace: &Value) -> Summary {
    let mut ops = events(trace, "cpu_op");
    ops.sort_by(|a, b| a.ts.total_cmp(&b.ts).then(b.end.total_cmp(&a.end)));
    // Top-level: not inside an earlier op of the same thread (ops sorted by start, longest
    // first among equal starts).
    let mut open_until: BTreeMap<i64, f64> = BTreeMap::new();
    let top: Vec<bool> = ops
        .iter()
        .map(|op| {
            let until = open_until.entry(op.tid).or_insert(f64::MIN);
            if op.ts < *until {
                return false;
            }
            *until = op.end;
            true
        })
        .collect();
    let ranges = events(trace, "user_annotation");
    let named = |pred: &dyn Fn(&str) -> bool| -> Vec<&Event> {
        ranges.iter().filter(|r| pred(&r.name)).collect()
    };
    let steps = named(&|n| n.starts_with(STEP_PREFIX));
    let mut total = Figures::default();
    add(&mut total, &steps, &ops, &top);
    let mut phases = BTreeMap::new();
    for phase in PHASES {
        let mut f = Figures::default();
        add(&mut f, &named(&|n| n == phase), &ops, &top);
        phases.insert(phase.to_string(), f);
    }
    Summary {
        steps: steps.len(),
        total,
        phases,
    }
}

pub fn run(args: Args) -> Result<()> {
    let text = std::fs::read_to_string(&args.trace)
        .with_context(|| format!("cannot read {}", args.trace.display()))?;
    let trace: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not a JSON trace", args.trace.display()))?;
    let s = summarize(&trace);
    if args.json {
        println!("{}", serde_json::to_string(&s)?);
        return Ok(());
    }
    let per = |x: f64| x / s.steps.max(1) as f64;
    println!("{} steps; per step:", s.steps);
    println!("{:<18} {:>10} {:>8} {:>8}", "phase", "ms", "ops", "syncs");
    let rows = PHASES.iter().map(|p| (*p, &s.phases[*p]));
    for (name, f) in std::iter::once(("step", &s.total)).chain(rows) {
        let (ms, ops, syncs) = (per(f.ms), per(f.ops as f64), per(f.syncs as f64));
        println!("{name:<18} {ms:>10.3} {ops:>8.1} {syncs:>8.1}");
    }
    for (site, n) in &s.total.sync_sites {
        println!("host sync under {site}: {n}");
    }
    if s.total.kernel_reads > 0 {
        println!(
            "scalar reads inside CPU kernels ({}; none on a GPU): {}",
            CPU_KERNEL_READS.join(", "),
            s.total.kernel_reads
        );
    }
    Ok(())
}
