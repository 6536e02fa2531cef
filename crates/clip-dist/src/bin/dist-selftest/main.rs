//! One rank of the multi-process tests (`tests/it/multiprocess.rs`). Rank and world come from the
//! environment like any launcher's (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT,
//! CLIP_DIST_TIMEOUT); the mode from the arguments:
//!
//! - `collectives OUT`: runs every case of `cases.rs` and saves the results to `OUT.<rank>`;
//! - `nccl OUT`: the same cases on `cuda:LOCAL_RANK` (`cuda:0` when CUDA_VISIBLE_DEVICES lists
//!   one device) through NCCL, at any world size (one GPU
//!   runs the real backend); in a world of one each result is also compared bitwise with the
//!   local stand-in's, a produce → all-reduce → consume chain with no host sync in between is
//!   checked, and out-of-place collectives of a buffer written behind a long kernel must read
//!   what was written (`scripts/gpu-check.sh` runs it, and once more with
//!   `CLIP_TRAIN_FAULT=skip-comm-wait`, its negative control: the collectives then run on a
//!   stream that does not wait, and the check must fail);
//! - `rendezvous`: joins and leaves;
//! - `train`: all-reduces and heartbeats in a loop under the watchdog until killed;
//! - `heartbeat STALL_RANK`: heartbeats without collectives under the watchdog; rank STALL_RANK
//!   (if any) stops after a few steps (the watchdog must name it);
//! - `stall STALL_RANK`: all-reduces once; rank STALL_RANK sleeps instead (the collective must
//!   time out naming it);
//! - `bytes OUT`: the byte collectives (`cases::text`): a broadcast from every root, then two
//!   all-gathers; each result saved to `OUT.<rank>.<b ROOT | g RANK | e RANK>`;
//! - `shutdown VICTIM`: all-reduces once, then rank VICTIM exits without a goodbye while the
//!   others shut down (their final barrier must name it);
//! - `mismatch`: rank 0 broadcasts bytes while the others all-gather bytes;
//! - `p2p-mismatch`: rank 0 sends rank 1 three floats, rank 1 expects four;
//! - `stop CULPRIT` / `skip CULPRIT`: all-reduces and heartbeats in a loop under the watchdog;
//!   before its fifth all-reduce rank CULPRIT stops itself (SIGSTOP) or skips it and only
//!   heartbeats from then on. `stop` is caught by the watchdog and `skip` by the collective's
//!   own timeout (CLIP_DIST_TIMEOUT each; the other waits ten times longer), and either prints
//!   the flight recorder naming CULPRIT.
//!
//! Errors go to stderr as one line; a `clip_dist::Error` also goes to stdout as
//! `variant: {:?}` (so tests match the variant and its fields), and decides the exit status as
//! a launcher would (`Fault::exit_status`); any other error exits 1.

mod cases;

use anyhow::{bail, Context, Result};
use clip_dist::{Backend, Collectives, Dist, InitOptions, ReduceOp, WorldInfo};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

fn main() {
    if let Err(e) = run() {
        eprintln!("error: {e:#}");
        let status = match e.downcast_ref::<clip_dist::Error>() {
            Some(typed) => {
                println!("variant: {typed:?}");
                typed.fault().exit_status()
            }
            None => 1,
        };
        std::process::exit(status);
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let world = WorldInfo::from_env()?;
    let mut opts = InitOptions::from_env(&world, None, Backend::Cpu)?;
    let timeout = opts.timeout;
    match args.first().map(String::as_str) {
        Some("stop") => opts.timeout = timeout * 10,
        Some("nccl") => {
            opts.backend = Backend::Nccl {
                device_index: clip_dist::local_cuda_device_from_env(world.local_rank),
            };
            opts.backend_at_world_1 = true;
        }
        _ => {}
    }
    let mut dist = clip_dist::init(world, opts)?;
    let rank = world.rank;
    let arg = |i: usize| args.get(i).with_context(|| format!("missing argument {i}"));
    match arg(0)?.as_str() {
        "collectives" => {
            let out = format!("{}.{rank}", arg(1)?);
            let results = run_cases(dist.collectives(), Device::Cpu)?;
            Tensor::save_multi(&results, &out).with_context(|| format!("saving {out}"))?;
        }
        "nccl" => {
            let out = format!("{}.{rank}", arg(1)?);
            let device = clip_dist::local_cuda_device_from_env(world.local_rank);
            let results = run_nccl(dist.collectives(), Device::Cuda(device))?;
            Tensor::save_multi(&results, &out).with_context(|| format!("saving {out}"))?;
        }
        "rendezvous" => {}
        "train" => {
            dist.start_watchdog(Duration::from_secs(30))?;
            println!("ready");
            for step in 0.. {
                let mut t = Tensor::ones([1000], (Kind::Float, tch::Device::Cpu));
                dist.collectives().all_reduce(&mut t, ReduceOp::Sum)?;
                dist.heartbeat(step)?;
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        "heartbeat" => {
            let stall: usize = arg(1)?.parse()?;
            dist.start_watchdog(Duration::from_secs(2))?;
            println!("ready");
            for step in 0..2000 {
                if rank != stall || step < 5 {
                    dist.heartbeat(step)?;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            bail!("the watchdog did not fire");
        }
        "stall" => {
            let stall: usize = arg(1)?.parse()?;
            if rank == stall {
                std::thread::sleep(Duration::from_secs(20));
                return Ok(());
            }
            let mut t = Tensor::ones([10], (Kind::Float, tch::Device::Cpu));
            dist.collectives().all_reduce(&mut t, ReduceOp::Sum)?;
        }
        "bytes" => run_bytes(dist.collectives(), arg(1)?)?,
        "shutdown" => {
            let victim: usize = arg(1)?.parse()?;
            let mut t = Tensor::ones([10], (Kind::Float, tch::Device::Cpu));
            dist.collectives().all_reduce(&mut t, ReduceOp::Sum)?;
            if rank == victim {
                // Dies: no barrier, no goodbye.
                std::process::exit(3);
            }
        }
        "mismatch" => {
            let c = dist.collectives();
            if rank == 0 {
                c.broadcast_bytes(b"from rank 0", 0)?;
            } else {
                c.all_gather_bytes(b"from another rank")?;
            }
        }
        "p2p-mismatch" => {
            let c = dist.collectives();
            if rank == 0 {
                c.send_recv(
                    &[(1, &Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)))],
                    &mut [],
                )?;
            } else {
                let mut four = Tensor::zeros([4], (Kind::Float, tch::Device::Cpu));
                c.send_recv(&[], &mut [(0, &mut four)])?;
            }
        }
        mode @ ("stop" | "skip") => flight(&mut dist, mode, arg(1)?.parse()?, timeout)?,
        mode => bail!("unknown mode {mode}"),
    }
    Ok(dist.shutdown()?)
}

/// The `stop` and `skip` modes (see the module documentation); never returns `Ok`.
fn flight(dist: &mut Dist, mode: &str, culprit: usize, timeout: Duration) -> Result<()> {
    let watchdog = if mode == "stop" {
        timeout
    } else {
        timeout * 10
    };
    dist.start_watchdog(watchdog)?;
    println!("ready");
    let pause = Duration::from_millis(10);
    for step in 0..2000 {
        if dist.rank() == culprit && step == 4 {
            if mode == "stop" {
                stop_self();
            } else {
                for beat in step..step + 6000 {
                    dist.heartbeat(beat)?;
                    std::thread::sleep(pause);
                }
                bail!("no rank timed out waiting for the skipped all-reduce");
            }
        }
        let mut t = Tensor::ones([1000], (Kind::Float, tch::Device::Cpu));
        dist.collectives().all_reduce(&mut t, ReduceOp::Sum)?;
        dist.heartbeat(step)?;
        std::thread::sleep(pause);
    }
    bail!("the {mode} job did not end")
}

/// SIGSTOP to this process: it stays alive, holding its connections, and does nothing (what a
/// rank stuck in the kernel or a debugger looks like to the others).
fn stop_self() {
    extern "C" {
        fn raise(sig: std::ffi::c_int) -> std::ffi::c_int;
    }
    /// SIGSTOP on Linux (x86_64 and aarch64).
    const SIGSTOP: std::ffi::c_int = 19;
    // SAFETY: raise(3) with a valid signal number.
    unsafe { raise(SIGSTOP) };
}

/// Every byte collective of the `bytes` mode; see `cases::text` for what each rank sends.
fn run_bytes(c: &dyn Collectives, out: &str) -> Result<()> {
    let (rank, world) = (c.rank(), c.world_size());
    let save = |what: String, bytes: &[u8]| {
        let path = format!("{out}.{rank}.{what}");
        std::fs::write(&path, bytes).with_context(|| format!("saving {path}"))
    };
    for root in 0..world {
        // Only the root's bytes count; the others pass their own, which must be ignored.
        let got = c.broadcast_bytes(cases::text(root, rank).as_bytes(), root)?;
        save(format!("b{root}"), &got)?;
    }
    let all = c.all_gather_bytes(cases::text(world, rank).as_bytes())?;
    for (p, bytes) in all.iter().enumerate() {
        save(format!("g{p}"), bytes)?;
    }
    let all = c.all_gather_bytes(cases::short(rank).as_bytes())?;
    for (p, bytes) in all.iter().enumerate() {
        save(format!("e{p}"), bytes)?;
    }
    Ok(())
}

/// `x` to the right neighbour, the left one's `x` back (into a transposed, non-contiguous
/// buffer for a matrix).
fn send_recv_ring(c: &dyn Collectives, x: &Tensor) -> Result<Tensor> {
    let (rank, world) = (c.rank(), c.world_size());
    let mut got = match x.size()[..] {
        [a, b] => Tensor::zeros([b, a], (x.kind(), x.device())).transpose(0, 1),
        _ => x.zeros_like(),
    };
    c.send_recv(
        &[((rank + 1) % world, x)],
        &mut [((rank + world - 1) % world, &mut got)],
    )?;
    Ok(got.contiguous())
}

/// A tensor's raw bytes: comparisons are bitwise (-0.0 ≠ +0.0).
fn raw(t: &Tensor) -> Vec<u8> {
    let t = t.to_device(Device::Cpu).contiguous();
    let mut v = vec![0u8; t.numel() * t.kind().elt_size_in_bytes()];
    t.copy_data_u8(&mut v, t.numel());
    v
}

/// The `nccl` mode's cases on `device`; in a world of one, checked against the local stand-in
/// and followed by the produce → all-reduce → consume chain.
fn run_nccl(c: &dyn Collectives, device: Device) -> Result<Vec<(String, Tensor)>> {
    let results = run_cases(c, device)?;
    if c.world_size() > 1 {
        return Ok(results);
    }
    let single = WorldInfo::single();
    let local = clip_dist::init(single, InitOptions::from_env(&single, None, Backend::Cpu)?)?;
    let want = run_cases(local.collectives(), Device::Cpu)?;
    for ((name, got), (_, want)) in results.iter().zip(&want) {
        if got.kind() != want.kind() || got.size() != want.size() || raw(got) != raw(want) {
            bail!("{name}: NCCL's result differs from the local reference");
        }
    }
    // Produce on the GPU, all-reduce, consume, and only then read on the host: without NCCL on
    // torch's stream the consumer could read the buffer before (or while) NCCL writes it.
    let x = Tensor::arange(1 << 24, (Kind::Float, Device::Cpu)) / 7.0;
    let mut y = x.to_device(device) * 3.0;
    c.all_reduce(&mut y, ReduceOp::Sum)?;
    let z = (y + 1.0).to_device(Device::Cpu);
    if raw(&z) != raw(&(x * 3.0 + 1.0)) {
        bail!("produce → all_reduce → consume: NCCL was not ordered with torch's kernels");
    }
    println!(
        "nccl: {} results bitwise equal to the local reference; the produce → all_reduce → \
         consume chain is ordered",
        results.len()
    );
    out_of_place_after_a_long_kernel(c, device)?;
    Ok(results)
}

/// A buffer holding -1s is rewritten behind a long kernel (≈0.15 s of matmuls on torch's
/// current stream), then all-gathered and reduce-scattered (mean) out of place at once, with no
/// host sync: NCCL runs on the current stream, so both must read what was written. Under the
/// negative control's fault (`CLIP_TRAIN_FAULT=skip-comm-wait`) they run on a stream of torch's
/// pool that does not wait, and must read the -1s: the check then fails, as it must.
fn out_of_place_after_a_long_kernel(c: &dyn Collectives, device: Device) -> Result<()> {
    let Device::Cuda(index) = device else {
        bail!("the ordering check needs a CUDA device");
    };
    let skip_wait = std::env::var("CLIP_TRAIN_FAULT")
        .is_ok_and(|v| v.split(',').any(|f| f.trim() == "skip-comm-wait"));
    let want = Tensor::arange(1 << 22, (Kind::Float, device)) / 7.0;
    let mut x = Tensor::full([1 << 22], -1.0, (Kind::Float, device));
    tch::Cuda::synchronize(index as i64);
    torch_ext::cuda::occupy(index, 100)?;
    x.copy_(&want);
    let side = match skip_wait {
        true => Some(torch_ext::cuda::StreamGuard::new(
            torch_ext::cuda::Stream::from_pool(index)?,
        )?),
        false => None,
    };
    let gathered = c.all_gather(&x)?;
    let scattered = c.reduce_scatter(&x, ReduceOp::Mean)?;
    drop(side);
    tch::Cuda::synchronize(index as i64);
    let wrong = |got: &Tensor| -> i64 { got.ne_tensor(&want).sum(Kind::Int64).int64_value(&[]) };
    let (g, s) = (wrong(&gathered), wrong(&scattered));
    let what = "out-of-place all_gather and reduce_scatter (mean) of a buffer written behind a long kernel";
    if g + s > 0 {
        bail!(
            "{what}: {g} and {s} of {} elements are not what was written: the collective read \
             its input before the write (fault planted: {skip_wait})",
            want.numel()
        );
    }
    println!("nccl: {what}: read what was written (fault planted: {skip_wait})");
    Ok(())
}

/// Every case's results on `device`, named `c<index>_<collective>`, moved to the CPU.
fn run_cases(c: &dyn Collectives, device: Device) -> Result<Vec<(String, Tensor)>> {
    let (rank, world) = (c.rank(), c.world_size());
    let mut results = Vec::new();
    for (i, case) in cases::cases(world).iter().enumerate() {
        let x = cases::input(i, case, rank).to_device(device);
        for &name in case.collectives {
            let out = match name {
                "all_reduce_sum" | "all_reduce_mean" => {
                    let mut t = x.copy();
                    let op = if name.ends_with("sum") {
                        ReduceOp::Sum
                    } else {
                        ReduceOp::Mean
                    };
                    c.all_reduce(&mut t, op)?;
                    t
                }
                "all_reduce_sum_transposed" => {
                    let mut t = x.copy().transpose(0, 1);
                    c.all_reduce(&mut t, ReduceOp::Sum)?;
                    t.contiguous()
                }
                "broadcast_transposed" => {
                    let mut t = x.copy().transpose(0, 1);
                    c.broadcast(&mut t, cases::root(i, world))?;
                    t.contiguous()
                }
                "all_gather" => c.all_gather(&x)?,
                "broadcast" => {
                    let mut t = x.copy();
                    c.broadcast(&mut t, cases::root(i, world))?;
                    t
                }
                "send_recv_ring" => send_recv_ring(c, &x)?,
                "send_recv_bidir" => {
                    // To the left x, to the right -x; what arrives: the right's x, the left's -x.
                    let (left, right) = ((rank + world - 1) % world, (rank + 1) % world);
                    let (mut from_right, mut from_left) = (x.zeros_like(), x.zeros_like());
                    let neg = -&x;
                    c.send_recv(
                        &[(left, &x), (right, &neg)],
                        &mut [(right, &mut from_right), (left, &mut from_left)],
                    )?;
                    Tensor::cat(&[from_right, from_left], 0)
                }
                "reduce_scatter_sum" => c.reduce_scatter(&x, ReduceOp::Sum)?,
                "reduce_scatter_mean" => c.reduce_scatter(&x, ReduceOp::Mean)?,
                other => bail!("unknown collective {other}"),
            };
            results.push((format!("c{i}_{name}"), out.to_device(Device::Cpu)));
        }
        c.barrier()?;
    }
    Ok(results)
}
