//! NCCL collectives on CUDA tensors, in place on their device memory, on torch's current CUDA
//! stream (read through `torch_ext::current_cuda_stream` at every call): libtorch enqueues its
//! kernels there too, so NCCL runs after the ops that produced a tensor and before those that
//! consume it, with no extra synchronisation — also under a stream guard (a copy or
//! communication stream), where the legacy default stream would not be ordered with them.
//!
//! Finding NCCL: cudarc's own loader (`cudarc::nccl::sys::culib`) only tries `libnccl.so`,
//! `libnccl.so.13` (the CUDA major), `.12`, `.11`, `.10`, `.9`, `.1` and some Windows-style
//! names — never `libnccl.so.2`, which is the only name pip's `nvidia-nccl` wheel ships (and
//! the soname libtorch_cuda links). So this module resolves the few NCCL functions it needs
//! with `libloading` itself, and takes from cudarc only the NCCL types and the CUDA driver calls.
//! Candidates, first that loads wins — never a path of the machine this was built on:
//! 1. `$CLIP_NCCL_LIB` (a path; if set, nothing else is tried);
//! 2. `libnccl.so.2` by name: in a process that linked libtorch_cuda this is the NCCL libtorch
//!    already loaded (found through libtorch_cuda's `$ORIGIN/../../nvidia/nccl/lib` rpath; glibc
//!    matches the name against loaded sonames), otherwise the system's;
//! 3. beside the torch install this process runs against (the folder of the libtorch_cuda.so /
//!    libtorch_cpu.so in `/proc/self/maps`): `<lib>/../../nvidia/nccl/lib/libnccl.so.2` (pip's
//!    layout) and `<lib>/libnccl.so.2`;
//! 4. `libnccl.so` (a system install with the dev symlink).
//!
//! A failure lists every path tried and why each failed.

use crate::error::{Error, Result};
use crate::group::Transport;
use crate::host::Dtype;
use crate::store::StoreClient;
use crate::ReduceOp;
use cudarc::driver::{result as cu, sys as cusys, DriverError};
use cudarc::nccl::sys::{
    cudaStream_t, ncclComm, ncclComm_t, ncclDataType_t, ncclRedOp_t, ncclUniqueId,
};
use libloading::Library;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::{Mutex, OnceLock};
use tch::{Device, Kind, Tensor};

/// `ncclResult_t`, received as a plain int: a code newer than cudarc's enum must not be UB.
type NcclResult = c_int;

/// `ncclAllReduce` and `ncclReduceScatter`: (send, recv, count, type, op, comm, stream).
type ReduceFn = unsafe extern "C" fn(
    *const c_void,
    *mut c_void,
    usize,
    ncclDataType_t,
    ncclRedOp_t,
    ncclComm_t,
    cudaStream_t,
) -> NcclResult;

/// The NCCL entry points used here, resolved once per process.
struct Api {
    path: String,
    get_unique_id: unsafe extern "C" fn(*mut ncclUniqueId) -> NcclResult,
    comm_init_rank: unsafe extern "C" fn(*mut ncclComm_t, c_int, ncclUniqueId, c_int) -> NcclResult,
    comm_abort: unsafe extern "C" fn(ncclComm_t) -> NcclResult,
    comm_get_async_error: unsafe extern "C" fn(ncclComm_t, *mut NcclResult) -> NcclResult,
    get_error_string: unsafe extern "C" fn(NcclResult) -> *const c_char,
    all_reduce: ReduceFn,
    all_gather: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        ncclComm_t,
        cudaStream_t,
    ) -> NcclResult,
    reduce_scatter: ReduceFn,
    broadcast: unsafe extern "C" fn(
        *const c_void,
        *mut c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> NcclResult,
    /// `ncclSend`: (send, count, type, peer, comm, stream).
    send: unsafe extern "C" fn(
        *const c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> NcclResult,
    /// `ncclRecv`: (recv, count, type, peer, comm, stream).
    recv: unsafe extern "C" fn(
        *mut c_void,
        usize,
        ncclDataType_t,
        c_int,
        ncclComm_t,
        cudaStream_t,
    ) -> NcclResult,
    group_start: unsafe extern "C" fn() -> NcclResult,
    group_end: unsafe extern "C" fn() -> NcclResult,
    /// Keeps the function pointers above valid.
    _lib: Library,
}

/// The variable naming libnccl.so.2 explicitly.
pub(crate) const NCCL_LIB_VAR: &str = "CLIP_NCCL_LIB";

/// The candidates of the module documentation, from `$CLIP_NCCL_LIB` (`env`) and the text of
/// `/proc/self/maps` (`maps`).
pub(crate) fn candidates(env: Option<String>, maps: &str) -> Vec<String> {
    if let Some(path) = env {
        return vec![path];
    }
    let mut out = vec!["libnccl.so.2".to_string()];
    let torch_lib = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libtorch_cuda.so") || p.ends_with("/libtorch_cpu.so"))
        .and_then(|p| Path::new(p).parent());
    if let Some(lib) = torch_lib {
        if let Some(site) = lib.parent().and_then(Path::parent) {
            out.push(
                site.join("nvidia/nccl/lib/libnccl.so.2")
                    .display()
                    .to_string(),
            );
        }
        out.push(lib.join("libnccl.so.2").display().to_string());
    }
    out.push("libnccl.so".to_string());
    out
}

fn api() -> Result<&'static Api> {
    static API: OnceLock<std::result::Result<Api, String>> = OnceLock::new();
    API.get_or_init(load)
        .as_ref()
        .map_err(|e| Error::Unavailable(e.clone()))
}

fn load() -> std::result::Result<Api, String> {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
    let mut tried = Vec::new();
    for path in candidates(std::env::var(NCCL_LIB_VAR).ok(), &maps) {
        // SAFETY: loading NCCL runs only its (trivial) initialisers.
        match unsafe { Library::new(&path) } {
            Ok(lib) => return resolve(lib, path),
            // libloading's own message is only "dlopen failed"; dlerror's is in its source.
            Err(e) => {
                let why = std::error::Error::source(&e).map_or(e.to_string(), |s| s.to_string());
                tried.push(format!("{path} ({why})"))
            }
        }
    }
    Err(format!(
        "cannot load NCCL; tried {}; set {NCCL_LIB_VAR} to the path of libnccl.so.2",
        tried.join(", ")
    ))
}

fn resolve(lib: Library, path: String) -> std::result::Result<Api, String> {
    // SAFETY: each symbol is read with the signature nccl.h declares for it.
    unsafe {
        macro_rules! sym {
            ($name:literal) => {
                *lib.get(concat!($name, "\0").as_bytes())
                    .map_err(|e| format!("{path} has no {}: {e}", $name))?
            };
        }
        Ok(Api {
            get_unique_id: sym!("ncclGetUniqueId"),
            comm_init_rank: sym!("ncclCommInitRank"),
            comm_abort: sym!("ncclCommAbort"),
            comm_get_async_error: sym!("ncclCommGetAsyncError"),
            get_error_string: sym!("ncclGetErrorString"),
            all_reduce: sym!("ncclAllReduce"),
            all_gather: sym!("ncclAllGather"),
            reduce_scatter: sym!("ncclReduceScatter"),
            broadcast: sym!("ncclBroadcast"),
            send: sym!("ncclSend"),
            recv: sym!("ncclRecv"),
            group_start: sym!("ncclGroupStart"),
            group_end: sym!("ncclGroupEnd"),
            path,
            _lib: lib,
        })
    }
}

impl Api {
    fn check(&self, call: &'static str, code: NcclResult) -> Result<()> {
        if code == 0 {
            return Ok(());
        }
        // SAFETY: NCCL returns a static string for any code.
        let message = unsafe { CStr::from_ptr((self.get_error_string)(code)) };
        Err(Error::Nccl {
            call,
            code,
            message: message.to_string_lossy().into_owned(),
            library: self.path.clone(),
        })
    }
}

/// A CUDA driver call that failed while setting up or selecting the device.
fn cuda(what: &'static str) -> impl FnOnce(DriverError) -> Error {
    move |e| Error::Unavailable(format!("{what}: {e}"))
}

/// NCCL collectives for tensors on one CUDA device (`cuda:device`, the local rank).
pub(crate) struct NcclCollectives {
    world: usize,
    device: usize,
    api: &'static Api,
    cu_device: cusys::CUdevice,
    /// The device's primary context, which libtorch's runtime also uses.
    ctx: cusys::CUcontext,
    /// A communicator must not be used by two threads at once; held around every call.
    busy: Mutex<()>,
    /// The communicator; null once aborted. Read without `busy` by the watchdog, which may
    /// abort it (or ask for its asynchronous error) while a call holds `busy`, as NCCL allows.
    comm: AtomicPtr<ncclComm>,
}

/// `ncclInProgress`: a nonblocking operation still running, not an error.
const NCCL_IN_PROGRESS: NcclResult = 7;

// SAFETY: the communicator is only touched under `comm`'s lock; the context handle is a
// process-wide driver object valid on any thread.
unsafe impl Send for NcclCollectives {}
unsafe impl Sync for NcclCollectives {}

impl NcclCollectives {
    /// Makes `cuda:device` current on this thread, shares rank 0's NCCL id through the store
    /// (`None`: a world of one, nobody to share it with) and joins the communicator (which blocks
    /// until every rank has joined).
    pub(crate) fn new(
        store: Option<&StoreClient>,
        rank: usize,
        world: usize,
        device: usize,
    ) -> Result<Self> {
        if let Some(problem) = crate::driver_problem_here() {
            return Err(Error::Unavailable(problem));
        }
        let api = api()?;
        // SAFETY: only asks whether libcuda can be opened.
        if !unsafe { cusys::is_culib_present() } {
            return Err(Error::Unavailable(
                "NCCL needs the CUDA driver, and libcuda.so.1 cannot be loaded".into(),
            ));
        }
        cu::init().map_err(cuda("cuInit"))?;
        let cu_device = cu::device::get(device as c_int).map_err(|e| {
            Error::Unavailable(format!("CUDA device {device} (the local rank): {e}"))
        })?;
        // SAFETY: `cu_device` came from `device::get`.
        let ctx =
            unsafe { cu::primary_ctx::retain(cu_device) }.map_err(cuda("CUDA primary context"))?;
        // SAFETY: `ctx` is a live primary context.
        unsafe { cu::ctx::set_current(ctx) }.map_err(cuda("making the CUDA context current"))?;

        let mut id = ncclUniqueId { internal: [0; 128] };
        if rank == 0 {
            // SAFETY: `id` is a valid out-pointer.
            api.check("ncclGetUniqueId", unsafe { (api.get_unique_id)(&mut id) })?;
            if let Some(store) = store {
                let bytes: Vec<u8> = id.internal.iter().map(|&c| c as u8).collect();
                store.set("nccl/id", &bytes)?;
            }
        } else {
            let store =
                store.ok_or_else(|| Error::Invalid("NCCL rank > 0 without a store".into()))?;
            let bytes = store.take("nccl/id", world - 1)?;
            if bytes.len() != id.internal.len() {
                return Err(Error::Protocol(
                    "rank 0 published a malformed NCCL id".into(),
                ));
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
            world,
            device,
            api,
            cu_device,
            ctx,
            busy: Mutex::new(()),
            comm: AtomicPtr::new(comm),
        })
    }

    /// Runs one NCCL call `what` on the communicator: locks it, makes this device current on the
    /// calling thread, and turns the result code into an error. `f` gets the communicator and
    /// torch's current stream on this device.
    fn call(
        &self,
        what: &'static str,
        f: impl FnOnce(ncclComm_t, cudaStream_t) -> NcclResult,
    ) -> Result<()> {
        let stream = torch_ext::current_cuda_stream(self.device)
            .map_err(|e| Error::Unavailable(format!("{what}: {e:#}")))?
            as cudaStream_t;
        let code = {
            let _busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            let comm = self.comm.load(Ordering::Acquire);
            if comm.is_null() {
                return Err(Error::Unavailable(format!(
                    "{what}: the NCCL communicator was aborted"
                )));
            }
            // SAFETY: `ctx` stays retained for the life of `self`.
            unsafe { cu::ctx::set_current(self.ctx) }
                .map_err(cuda("making the CUDA context current"))?;
            f(comm, stream)
        };
        self.api.check(what, code)
    }

    /// The NCCL type of `t`, which must live on this backend's device.
    fn dtype(&self, t: &Tensor) -> Result<ncclDataType_t> {
        if t.device() != Device::Cuda(self.device) {
            return Err(Error::Invalid(format!(
                "NCCL collectives need tensors on cuda:{}, got one on {:?}",
                self.device,
                t.device()
            )));
        }
        Ok(match Dtype::of(t)? {
            Dtype::F32 => ncclDataType_t::ncclFloat32,
            Dtype::Bf16 => ncclDataType_t::ncclBfloat16,
            Dtype::F64 => ncclDataType_t::ncclFloat64,
            Dtype::I64 => ncclDataType_t::ncclInt64,
        })
    }

    /// The in-place call `what` on `t`'s memory: `f(buffer, count, type, comm)`. A
    /// non-contiguous `t` goes through a contiguous copy, copied back.
    fn in_place(
        &self,
        what: &'static str,
        t: &mut Tensor,
        f: impl FnOnce(*mut c_void, usize, ncclDataType_t, ncclComm_t, cudaStream_t) -> NcclResult,
    ) -> Result<()> {
        let dt = self.dtype(t)?;
        if t.numel() == 0 {
            return Ok(());
        }
        let d = dense(t);
        self.call(what, |comm, s| f(d.data_ptr(), d.numel(), dt, comm, s))?;
        if !t.is_contiguous() {
            tch::no_grad(|| t.copy_(&d));
        }
        Ok(())
    }

    /// The call `what` from `t` into a new tensor of `out_shape`: `f(src, out, type, comm)`.
    fn out_of_place(
        &self,
        what: &'static str,
        t: &Tensor,
        out_shape: &[i64],
        f: impl FnOnce(
            *const c_void,
            *mut c_void,
            ncclDataType_t,
            ncclComm_t,
            cudaStream_t,
        ) -> NcclResult,
    ) -> Result<Tensor> {
        let dt = self.dtype(t)?;
        let out = Tensor::empty(out_shape, (t.kind(), t.device()));
        if out.numel() == 0 {
            return Ok(out);
        }
        let src = dense(t);
        self.call(what, |comm, s| {
            f(src.data_ptr(), out.data_ptr(), dt, comm, s)
        })?;
        Ok(out)
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

// SAFETY (every call below): the buffers are contiguous on this backend's device, hold `count`
// elements of the given type (the output of a gather W times the input, of a reduce-scatter
// 1/W of it), and NCCL allows in-place (send == recv) reductions and broadcasts.
impl Transport for NcclCollectives {
    fn all_reduce(&self, t: &mut Tensor, op: ReduceOp) -> Result<()> {
        self.in_place("ncclAllReduce", t, |buf, count, dt, comm, s| unsafe {
            (self.api.all_reduce)(buf, buf, count, dt, red_op(op), comm, s)
        })
    }

    fn all_gather(&self, t: &Tensor, out_shape: &[i64]) -> Result<Tensor> {
        let count = t.numel();
        self.out_of_place(
            "ncclAllGather",
            t,
            out_shape,
            |src, out, dt, comm, s| unsafe { (self.api.all_gather)(src, out, count, dt, comm, s) },
        )
    }

    fn reduce_scatter(&self, t: &Tensor, op: ReduceOp, out_shape: &[i64]) -> Result<Tensor> {
        let count = out_shape.iter().product::<i64>() as usize;
        self.out_of_place(
            "ncclReduceScatter",
            t,
            out_shape,
            |src, out, dt, comm, s| unsafe {
                (self.api.reduce_scatter)(src, out, count, dt, red_op(op), comm, s)
            },
        )
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<()> {
        self.in_place("ncclBroadcast", t, |buf, count, dt, comm, s| unsafe {
            (self.api.broadcast)(buf, buf, count, dt, root as c_int, comm, s)
        })
    }

    /// Every send and receive inside one NCCL group (`ncclGroupStart` … `ncclGroupEnd`), so they
    /// progress together as `batch_isend_irecv`'s do; a non-contiguous receiver gets a
    /// contiguous buffer, copied back after the group (on the same stream, so in order).
    fn send_recv(
        &self,
        sends: &[(usize, &Tensor)],
        recvs: &mut [(usize, &mut Tensor)],
    ) -> Result<()> {
        let sends: Vec<(usize, Tensor, ncclDataType_t)> = sends
            .iter()
            .map(|(p, t)| Ok((*p, dense(t), self.dtype(t)?)))
            .collect::<Result<_>>()?;
        let landing: Vec<(usize, Tensor, ncclDataType_t)> = recvs
            .iter()
            .map(|(p, t)| Ok((*p, dense(t), self.dtype(t)?)))
            .collect::<Result<_>>()?;
        // One lock for the whole group: no other call on this communicator may fall inside it.
        // SAFETY: each buffer is contiguous on this device and holds `numel` elements of its
        // type; a receive's buffer is written only by NCCL until the group ends.
        self.call("ncclSend/ncclRecv", |comm, stream| unsafe {
            let started = (self.api.group_start)();
            if started != 0 {
                return started;
            }
            let mut code = 0;
            for (p, t, dt) in &sends {
                if code == 0 {
                    code = (self.api.send)(t.data_ptr(), t.numel(), *dt, *p as c_int, comm, stream);
                }
            }
            for (p, t, dt) in &landing {
                if code == 0 {
                    code = (self.api.recv)(t.data_ptr(), t.numel(), *dt, *p as c_int, comm, stream);
                }
            }
            // The group is closed whatever happened inside it; the first error wins.
            let ended = (self.api.group_end)();
            if code == 0 {
                ended
            } else {
                code
            }
        })?;
        for ((_, t), (_, d, _)) in recvs.iter_mut().zip(&landing) {
            if !t.is_contiguous() {
                tch::no_grad(|| t.copy_(d));
            }
        }
        Ok(())
    }

    /// `ncclCommAbort`, once: NCCL ends the kernels of this communicator, and every call after
    /// it fails instead of touching a freed communicator.
    fn abort(&self) {
        let comm = self.comm.swap(std::ptr::null_mut(), Ordering::AcqRel);
        if !comm.is_null() {
            // SAFETY: `comm` came from ncclCommInitRank and nothing uses it after the swap
            // (NCCL allows aborting while another thread is inside a call on it).
            unsafe { (self.api.comm_abort)(comm) };
        }
    }

    /// `ncclCommGetAsyncError`: a failure NCCL met after a call returned (a peer's network
    /// error, a timeout inside NCCL), which only surfaces if asked.
    fn async_error(&self) -> Result<()> {
        let comm = self.comm.load(Ordering::Acquire);
        if comm.is_null() {
            return Ok(());
        }
        let mut state: NcclResult = 0;
        // SAFETY: valid communicator and out-pointer; NCCL allows this from any thread.
        let code = unsafe { (self.api.comm_get_async_error)(comm, &mut state) };
        self.api.check("ncclCommGetAsyncError", code)?;
        match state {
            0 | NCCL_IN_PROGRESS => Ok(()),
            failed => self.api.check("a collective (asynchronous error)", failed),
        }
    }

    /// An all-reduce of one element, then reading it on the host: returns once every rank's
    /// earlier GPU work has reached this point.
    fn barrier(&self) -> Result<()> {
        let mut one = Tensor::ones([1], (Kind::Float, Device::Cuda(self.device)));
        self.all_reduce(&mut one, ReduceOp::Sum)?;
        let n = one.double_value(&[0]);
        if n != self.world as f64 {
            return Err(Error::Protocol(format!(
                "NCCL barrier counted {n} ranks, expected {}",
                self.world
            )));
        }
        Ok(())
    }
}

impl Drop for NcclCollectives {
    /// Aborts rather than destroys the communicator: `ncclCommDestroy` waits for peers and would
    /// hang an exit after a peer died; after a clean shutdown nothing is pending either way.
    fn drop(&mut self) {
        self.abort();
        // SAFETY: retained in `new`, released once.
        unsafe {
            let _ = cu::primary_ctx::release(self.cu_device);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The torch install this process runs against, from its memory map: pip's layout and the
    /// libtorch folder itself; `$CLIP_NCCL_LIB` alone when set.
    #[test]
    fn nccl_is_looked_for_beside_the_torch_install_in_use() {
        let maps = "7f00-7f10 r-xp 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6\n\
                    7f20-7f30 r-xp 00000000 08:01 456 \
                    /opt/venv/lib/python3.11/site-packages/torch/lib/libtorch_cuda.so\n";
        assert_eq!(
            candidates(None, maps),
            [
                "libnccl.so.2",
                "/opt/venv/lib/python3.11/site-packages/nvidia/nccl/lib/libnccl.so.2",
                "/opt/venv/lib/python3.11/site-packages/torch/lib/libnccl.so.2",
                "libnccl.so",
            ]
        );
        assert_eq!(candidates(None, ""), ["libnccl.so.2", "libnccl.so"]);
        assert_eq!(
            candidates(Some("/x/libnccl.so.2".into()), maps),
            ["/x/libnccl.so.2"]
        );
    }
}
