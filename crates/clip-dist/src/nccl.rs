//! NCCL collectives on CUDA tensors, in place on their device memory, on the CUDA legacy
//! default ("null") stream: libtorch enqueues its kernels there too, so NCCL runs after the ops
//! that produced a tensor and before those that consume it, with no extra synchronisation.
//!
//! Finding NCCL: cudarc's own loader (`cudarc::nccl::sys::culib`) only tries `libnccl.so`,
//! `libnccl.so.13` (the CUDA major), `.12`, `.11`, `.10`, `.9`, `.1` and some Windows-style
//! names — never `libnccl.so.2`, which is the only name pip's `nvidia-nccl` wheel ships (and
//! the soname libtorch_cuda links). So this module resolves the few NCCL functions it needs
//! with `libloading` itself, and takes from cudarc only the NCCL types and the CUDA driver calls.
//! Candidates, first that loads wins:
//! 1. `$CLIP_NCCL_LIBRARY` (a path; if set, nothing else is tried);
//! 2. `libnccl.so.2` by name: in a process that linked libtorch_cuda this is the NCCL libtorch
//!    already loaded (found through libtorch_cuda's `$ORIGIN/../../nvidia/nccl/lib` rpath; glibc
//!    matches the name against loaded sonames), otherwise the system's;
//! 3. `libnccl.so` (a system install with the dev symlink);
//! 4. `<libtorch lib>/../../nvidia/nccl/lib/libnccl.so.2` for the libtorch this was built with.

use crate::host::Dtype;
use crate::store::StoreClient;
use crate::{Collectives, ReduceOp};
use anyhow::{anyhow, bail, Context, Result};
use cudarc::driver::{result as cu, sys as cusys};
use cudarc::nccl::sys::{cudaStream_t, ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclUniqueId};
use libloading::Library;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::{Mutex, OnceLock};
use tch::{Device, Kind, Tensor};

/// `ncclResult_t`, received as a plain int: a code newer than cudarc's enum must not be UB.
type NcclResult = c_int;

/// The NCCL entry points used here, resolved once per process.
struct Api {
    path: String,
    get_unique_id: unsafe extern "C" fn(*mut ncclUniqueId) -> NcclResult,
    comm_init_rank: unsafe extern "C" fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int) -> NcclResult,
    comm_abort: unsafe extern "C" fn(ncclComm_t) -> NcclResult,
    get_error_string: unsafe extern "C" fn(NcclResult) -> *const c_char,
    all_reduce: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        ncclRedOp_t,
        ncclComm_t,
        cudaStream_t,
    ) -> NcclResult,
    all_gather: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        ncclComm_t,
        cudaStream_t,
    ) -> NcclResult,
    reduce_scatter: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        ncclRedOp_t,
        ncclComm_t,
        cudaStream_t,
    ) -> NcclResult,
    broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> NcclResult,
    /// Keeps the function pointers above valid.
    _lib: Library,
}

fn candidates() -> Vec<String> {
    if let Ok(path) = std::env::var("CLIP_NCCL_LIBRARY") {
        return vec![path];
    }
    vec![
        "libnccl.so.2".into(),
        "libnccl.so".into(),
        format!(
            "{}/../../nvidia/nccl/lib/libnccl.so.2",
            env!("CLIP_DIST_LIBTORCH_LIB")
        ),
    ]
}

fn api() -> Result<&'static Api> {
    static API: OnceLock<Result<Api, String>> = OnceLock::new();
    API.get_or_init(|| load().map_err(|e| format!("{e:#}")))
        .as_ref()
        .map_err(|e| anyhow!("{e}"))
}

fn load() -> Result<Api> {
    let mut tried = Vec::new();
    for path in candidates() {
        // SAFETY: loading NCCL runs only its (trivial) initialisers.
        match unsafe { Library::new(&path) } {
            Ok(lib) => return resolve(lib, path),
            Err(e) => tried.push(format!("{path} ({e})")),
        }
    }
    bail!(
        "cannot load NCCL; tried {}; set CLIP_NCCL_LIBRARY to the path of libnccl.so.2",
        tried.join(", ")
    )
}

fn resolve(lib: Library, path: String) -> Result<Api> {
    // SAFETY: each symbol is read with the signature nccl.h declares for it.
    unsafe {
        macro_rules! sym {
            ($name:literal) => {
                *lib.get(concat!($name, "\0").as_bytes())
                    .with_context(|| format!("{path} has no {}", $name))?
            };
        }
        Ok(Api {
            get_unique_id: sym!("ncclGetUniqueId"),
            comm_init_rank: sym!("ncclCommInitRank"),
            comm_abort: sym!("ncclCommAbort"),
            get_error_string: sym!("ncclGetErrorString"),
            all_reduce: sym!("ncclAllReduce"),
            all_gather: sym!("ncclAllGather"),
            reduce_scatter: sym!("ncclReduceScatter"),
            broadcast: sym!("ncclBroadcast"),
            path,
            _lib: lib,
        })
    }
}

impl Api {
    fn check(&self, what: &str, code: NcclResult) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: NCCL returns a static string for any code.
        let msg = unsafe { CStr::from_ptr((self.get_error_string)(code)) };
        bail!(
            "NCCL {what} failed: {} (code {code}, {})",
            msg.to_string_lossy(),
            self.path
        )
    }
}

/// NCCL collectives for tensors on one CUDA device (`cuda:device`, the local rank).
pub struct NcclCollectives {
    rank: usize,
    world: usize,
    device: usize,
    api: &'static Api,
    cu_device: cusys::CUdevice,
    /// The device's primary context, which libtorch's runtime also uses.
    ctx: cusys::CUcontext,
    /// A communicator must not be used by two threads at once.
    comm: Mutex<ncclComm_t>,
}

// SAFETY: the communicator is only touched under `comm`'s lock; the context handle is a
// process-wide driver object valid on any thread.
unsafe impl Send for NcclCollectives {}
unsafe impl Sync for NcclCollectives {}

impl NcclCollectives {
    /// Makes `cuda:device` current on this thread, shares rank 0's NCCL id through the store and
    /// joins the communicator (which blocks until every rank has joined).
    pub fn new(store: &StoreClient, rank: usize, world: usize, device: usize) -> Result<Self> {
        let api = api()?;
        // SAFETY: only asks whether libcuda can be opened.
        if !unsafe { cusys::is_culib_present() } {
            bail!("NCCL needs the CUDA driver, and libcuda.so.1 cannot be loaded");
        }
        cu::init().context("cuInit")?;
        let cu_device = cu::device::get(device as c_int)
            .with_context(|| format!("CUDA device {device} (the local rank)"))?;
        // SAFETY: `cu_device` came from `device::get`.
        let ctx = unsafe { cu::primary_ctx::retain(cu_device) }.context("CUDA primary context")?;
        // SAFETY: `ctx` is a live primary context.
        unsafe { cu::ctx::set_current(ctx) }.context("making the CUDA context current")?;

        let mut id = ncclUniqueId { internal: [0; 128] };
        if rank == 0 {
            // SAFETY: `id` is a valid out-pointer.
            api.check("ncclGetUniqueId", unsafe { (api.get_unique_id)(&mut id) })?;
            let bytes: Vec<u8> = id.internal.iter().map(|&c| c as u8).collect();
            store.set("nccl/id", &bytes)?;
        } else {
            let bytes = store.get("nccl/id")?;
            if bytes.len() != id.internal.len() {
                bail!("rank 0 published a malformed NCCL id");
            }
            for (dst, src) in id.internal.iter_mut().zip(bytes) {
                *dst = src as c_char;
            }
        }
        let mut comm: ncclComm_t = std::ptr::null_mut();
        // SAFETY: valid out-pointer; the id is rank 0's; rank < world.
        let code = unsafe { (api.comm_init_rank)(&mut comm, world as c_int, id, rank as c_int) };
        api.check("ncclCommInitRank", code)?;
        Ok(NcclCollectives {
            rank,
            world,
            device,
            api,
            cu_device,
            ctx,
            comm: Mutex::new(comm),
        })
    }

    /// Runs one NCCL call `what` on the communicator: locks it, makes this device current on the
    /// calling thread (the null stream is per device), and turns the result code into an error.
    fn call(&self, what: &str, f: impl FnOnce(ncclComm_t) -> NcclResult) -> Result<()> {
        let code = {
            let comm = self.comm.lock().unwrap_or_else(|e| e.into_inner());
            // SAFETY: `ctx` stays retained for the life of `self`.
            unsafe { cu::ctx::set_current(self.ctx) }.context("making the CUDA context current")?;
            f(*comm)
        };
        self.api.check(what, code)
    }

    /// The NCCL type of `t`, which must live on this backend's device.
    fn dtype(&self, t: &Tensor) -> Result<ncclDataType_t> {
        if t.device() != Device::Cuda(self.device) {
            bail!(
                "NCCL collectives need tensors on cuda:{}, got one on {:?}",
                self.device,
                t.device()
            );
        }
        Ok(match Dtype::of(t)? {
            Dtype::F32 => ncclDataType_t::ncclFloat32,
            Dtype::Bf16 => ncclDataType_t::ncclBfloat16,
            Dtype::F64 => ncclDataType_t::ncclFloat64,
            Dtype::I64 => ncclDataType_t::ncclInt64,
        })
    }
}

fn red_op(op: ReduceOp) -> ncclRedOp_t {
    match op {
        ReduceOp::Sum => ncclRedOp_t::ncclSum,
        ReduceOp::Mean => ncclRedOp_t::ncclAvg,
    }
}

/// `t` itself when contiguous, else a contiguous copy (written back by the caller).
fn dense(t: &Tensor) -> Tensor {
    if t.is_contiguous() {
        t.shallow_clone()
    } else {
        tch::no_grad(|| t.contiguous())
    }
}

/// The null stream: CUDA's legacy default stream, libtorch's default.
fn null_stream() -> cudaStream_t {
    std::ptr::null_mut()
}

impl Collectives for NcclCollectives {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world
    }

    fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        let dt = self.dtype(t)?;
        Dtype::of(t)?.check_reduce(op)?;
        if t.numel() == 0 {
            return Ok(());
        }
        let d = dense(t);
        // SAFETY: `d` is contiguous on this device with `numel` elements of type `dt`; NCCL
        // allows in-place (send == recv) reductions.
        self.call("ncclAllReduce", |comm| unsafe {
            (self.api.all_reduce)(
                d.data_ptr(),
                d.data_ptr(),
                d.numel(),
                dt,
                red_op(op),
                comm,
                null_stream(),
            )
        })?;
        if !t.is_contiguous() {
            tch::no_grad(|| t.copy_(&d));
        }
        Ok(())
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let dt = self.dtype(t)?;
        let mut shape = t.size();
        if shape.is_empty() {
            shape.push(1);
        }
        shape[0] *= self.world as i64;
        let out = Tensor::empty(&shape, (t.kind(), t.device()));
        if t.numel() == 0 {
            return Ok(out);
        }
        let src = dense(t);
        // SAFETY: `out` holds world × numel elements of `dt` on this device.
        self.call("ncclAllGather", |comm| unsafe {
            (self.api.all_gather)(
                src.data_ptr(),
                out.data_ptr(),
                src.numel(),
                dt,
                comm,
                null_stream(),
            )
        })?;
        Ok(out)
    }

    fn reduce_scatter(&self, t: &Tensor, op: ReduceOp) -> Result<Tensor> {
        let dt = self.dtype(t)?;
        Dtype::of(t)?.check_reduce(op)?;
        let w = self.world as i64;
        let mut shape = t.size();
        match shape.first_mut() {
            Some(d0) if *d0 % w == 0 => *d0 /= w,
            _ => bail!(
                "reduce_scatter needs a first dimension divisible by the world size {w}, got shape {:?}",
                t.size()
            ),
        }
        let out = Tensor::empty(&shape, (t.kind(), t.device()));
        if out.numel() == 0 {
            return Ok(out);
        }
        let src = dense(t);
        // SAFETY: `src` holds world × out.numel() elements; `out` is fresh and contiguous.
        self.call("ncclReduceScatter", |comm| unsafe {
            (self.api.reduce_scatter)(
                src.data_ptr(),
                out.data_ptr(),
                out.numel(),
                dt,
                red_op(op),
                comm,
                null_stream(),
            )
        })?;
        Ok(out)
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        let dt = self.dtype(t)?;
        if root >= self.world {
            bail!(
                "broadcast root {root} is outside a world of size {}",
                self.world
            );
        }
        if t.numel() == 0 {
            return Ok(());
        }
        let d = dense(t);
        // SAFETY: in-place broadcast of a contiguous buffer of `numel` elements on this device.
        self.call("ncclBroadcast", |comm| unsafe {
            (self.api.broadcast)(
                d.data_ptr(),
                d.data_ptr(),
                d.numel(),
                dt,
                root as c_int,
                comm,
                null_stream(),
            )
        })?;
        if !t.is_contiguous() {
            tch::no_grad(|| t.copy_(&d));
        }
        Ok(())
    }

    /// An all-reduce of one element, then reading it on the host: returns once every rank's
    /// earlier GPU work has reached this point.
    fn barrier(&self) -> Result<()> {
        let mut one = Tensor::ones([1], (Kind::Float, Device::Cuda(self.device)));
        self.all_reduce(&mut one, ReduceOp::Sum)?;
        let n = one.double_value(&[0]);
        if n != self.world as f64 {
            bail!("NCCL barrier counted {n} ranks, expected {}", self.world);
        }
        Ok(())
    }
}

impl Drop for NcclCollectives {
    /// Aborts rather than destroys the communicator: `ncclCommDestroy` waits for peers and would
    /// hang an exit after a peer died; after a clean shutdown nothing is pending either way.
    fn drop(&mut self) {
        let comm = *self.comm.get_mut().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `comm` came from ncclCommInitRank and is not used after this.
        unsafe {
            (self.api.comm_abort)(comm);
            let _ = cu::primary_ctx::release(self.cu_device);
        }
    }
}
