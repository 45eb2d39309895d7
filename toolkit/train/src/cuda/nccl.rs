//! NCCL for data-parallel training, one thread per GPU in one process: communicators made for
//! every GPU at once (`ncclCommInitAll`), sums enqueued on each engine's stream in launch order.
//! libnccl is dlopened like every other CUDA library; without it the group fails to form with a
//! message naming it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaStream};
use cudarc::nccl::{result, sys};

use crate::cuda::plan::Summed;
use crate::TrainError;

/// The communicators of one group, in rank order. Shared by its members so any of them can abort
/// all (a failed replica must not leave the others spinning in a collective).
pub struct NcclGroup {
    comms: Vec<sys::ncclComm_t>,
    /// Set by the first abort, which frees the communicators (so nothing may touch them after).
    aborted: AtomicBool,
    /// The devices' contexts, kept alive until the communicators are destroyed (fields drop after
    /// `Drop::drop` has run), whichever replica goes last.
    _contexts: Vec<Arc<CudaContext>>,
}

// NCCL communicators may be used from any thread; each member only launches on its own, and
// abort is documented as callable while others are in flight.
unsafe impl Send for NcclGroup {}
unsafe impl Sync for NcclGroup {}

/// Whether libnccl loads here.
pub fn nccl_present() -> bool {
    unsafe { sys::is_culib_present() }
}

impl NcclGroup {
    /// One communicator per device, rank `i` on `contexts[i]`'s GPU.
    pub fn new(contexts: Vec<Arc<CudaContext>>) -> Result<Arc<Self>, TrainError> {
        let ordinals: Vec<i32> = contexts.iter().map(|c| c.ordinal() as i32).collect();
        if !nccl_present() {
            return Err(TrainError::Device("no NCCL found (libnccl.so.2: install NCCL or add its folder to LD_LIBRARY_PATH); data-parallel training over several GPUs needs it".into()));
        }
        let mut comms = vec![std::ptr::null_mut(); ordinals.len()];
        unsafe { result::comm_init_all(comms.as_mut_ptr(), ordinals.len() as i32, ordinals.as_ptr()) }.map_err(|e| TrainError::Device(format!("creating NCCL communicators for GPUs {ordinals:?}: {e:?}")))?;
        Ok(Arc::new(NcclGroup { comms, aborted: AtomicBool::new(false), _contexts: contexts }))
    }

    pub fn world(&self) -> usize {
        self.comms.len()
    }

    /// Enqueue an in-place sum of `count` elements at device address `ptr` on `stream`, as rank `rank`.
    ///
    /// # Safety
    /// `ptr` must address `count` elements of `dtype` on the rank's device, alive until the stream
    /// has run the sum; every rank must enqueue the same sums in the same order.
    pub unsafe fn all_reduce(&self, rank: usize, ptr: u64, count: usize, dtype: Summed, stream: &Arc<CudaStream>) -> Result<(), TrainError> {
        let dt = match dtype {
            Summed::F32 => sys::ncclDataType_t::ncclFloat32,
            Summed::F64 => sys::ncclDataType_t::ncclFloat64,
        };
        if self.aborted.load(Ordering::Acquire) {
            return Err(TrainError::GroupAborted);
        }
        let p = ptr as *mut std::ffi::c_void;
        unsafe { result::all_reduce(p, p, count, dt, sys::ncclRedOp_t::ncclSum, self.comms[rank], stream.cu_stream() as _) }
            .map(drop)
            .map_err(|e| TrainError::Device(format!("NCCL all-reduce of {count} {dtype:?} on rank {rank}: {e:?}")))
    }

    /// Abort every communicator: collectives in flight return, later ones fail.
    pub fn abort(&self) {
        if self.aborted.swap(true, Ordering::AcqRel) {
            return;
        }
        for &c in &self.comms {
            // An abort that fails leaves nothing better to do.
            let _ = unsafe { result::comm_abort(c) };
        }
    }
}

impl Drop for NcclGroup {
    fn drop(&mut self) {
        if *self.aborted.get_mut() {
            return;
        }
        for &c in &self.comms {
            let _ = unsafe { result::comm_destroy(c) };
        }
    }
}
