//! The Environment Abstraction Layer: start once per process, launch work on lcores.

use std::ffi::{CString, c_char, c_int, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::Error;

/// EAL may be initialised once per process, ever (even after cleanup).
static STARTED: AtomicBool = AtomicBool::new(false);

#[derive(Debug, thiserror::Error)]
pub enum EalError {
    #[error("EAL was already started in this process; DPDK allows one start per process")]
    AlreadyStarted,
    #[error("EAL argument {0:?} contains a NUL byte")]
    NulInArgument(String),
    #[error("rte_eal_init failed: {0}")]
    Init(Error),
}

/// A DPDK logical core id.
pub type Lcore = u32;

/// The running EAL. Cloning is cheap; EAL is cleaned up (`rte_eal_cleanup`)
/// when the last clone, and every mempool and port made from it, is dropped.
#[derive(Clone, Debug)]
pub struct Eal {
    /// Held for its `Drop`: EAL is cleaned up when the last clone goes.
    _alive: Arc<EalInner>,
}

#[derive(Debug)]
struct EalInner;

impl Drop for EalInner {
    fn drop(&mut self) {
        // SAFETY: every DPDK object holds an `Eal` clone, so none is left.
        // Launched lcores have been waited for by whoever launched them
        // (`LcoreJoin` waits on drop).
        unsafe {
            dpdk_sys::rte_eal_cleanup();
        }
    }
}

impl Eal {
    /// Start EAL with `args` (as on a DPDK command line; `args[0]` is the
    /// program name).
    ///
    /// `rte_eal_init` keeps pointers into argv for the life of the process, so
    /// the strings are deliberately leaked: EAL starts once, so this is bounded.
    pub fn init<S: AsRef<str>>(args: &[S]) -> Result<Eal, EalError> {
        let mut c_args = Vec::with_capacity(args.len());
        for a in args {
            let a = a.as_ref();
            c_args.push(CString::new(a).map_err(|_| EalError::NulInArgument(a.to_owned()))?);
        }
        if STARTED.swap(true, Ordering::SeqCst) {
            return Err(EalError::AlreadyStarted);
        }
        let argv: &'static mut [*mut c_char] = Vec::leak(
            c_args
                .into_iter()
                .map(CString::into_raw)
                .collect::<Vec<_>>(),
        );
        // SAFETY: argv holds argc valid NUL-terminated strings that are never
        // freed; EAL may permute the pointer array, which it owns from here on.
        let ret = unsafe { dpdk_sys::rte_eal_init(argv.len() as c_int, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(EalError::Init(Error::from_code("rte_eal_init", ret)));
        }
        Ok(Eal {
            _alive: Arc::new(EalInner),
        })
    }

    /// The main lcore (the thread that called [`Eal::init`]).
    pub fn main_lcore(&self) -> Lcore {
        // SAFETY: EAL is initialised.
        unsafe { dpdk_sys::rte_get_main_lcore() }
    }

    /// Worker lcores (every enabled lcore but the main one), in id order.
    pub fn worker_lcores(&self) -> Vec<Lcore> {
        let mut out = Vec::new();
        let mut i = u32::MAX; // rte_get_next_lcore(-1, ...) starts from the first
        loop {
            // SAFETY: EAL is initialised; skip_main=1, wrap=0.
            i = unsafe { dpdk_sys::rte_get_next_lcore(i, 1, 0) };
            if i >= dpdk_sys::RTE_MAX_LCORE {
                return out;
            }
            out.push(i);
        }
    }

    /// NUMA socket of an lcore; -1 for an id EAL does not know.
    pub fn lcore_socket(&self, lcore: Lcore) -> i32 {
        if lcore >= dpdk_sys::RTE_MAX_LCORE {
            return -1;
        }
        // SAFETY: EAL is initialised and the id is inside lcore_config.
        unsafe { dpdk_sys::rte_lcore_to_socket_id(lcore) as i32 }
    }

    /// Run `f` on worker `lcore`. The returned handle waits for it.
    ///
    /// Must be called from the main lcore (DPDK's launch and wait are main-lcore
    /// only), and `lcore` must be an enabled worker lcore that is idle.
    pub fn launch<F>(&self, lcore: Lcore, f: F) -> crate::Result<LcoreJoin>
    where
        F: FnOnce() -> i32 + Send + 'static,
    {
        let op = format!("launch on lcore {lcore}");
        if current_lcore() != Some(self.main_lcore()) {
            return Err(Error::other(op, "only the main lcore may launch work"));
        }
        if !self.worker_lcores().contains(&lcore) {
            return Err(Error::other(
                op,
                format!("not a worker lcore (workers: {:?})", self.worker_lcores()),
            ));
        }
        type Job = Box<dyn FnOnce() -> i32 + Send>;
        unsafe extern "C" fn trampoline(arg: *mut c_void) -> c_int {
            // SAFETY: `arg` is the Box<Job> leaked by `launch` below, handed to
            // exactly one lcore, so it is reclaimed exactly once.
            let job: Box<Job> = unsafe { Box::from_raw(arg.cast()) };
            // A panic must not unwind into C.
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).unwrap_or(-1)
        }
        let job: Box<Job> = Box::new(Box::new(f));
        let arg = Box::into_raw(job).cast::<c_void>();
        // SAFETY: we are the main lcore and `lcore` is an enabled worker, so
        // lcore_config[lcore] is valid and only this thread writes it;
        // trampoline has the lcore_function_t signature and frees arg.
        let ret = unsafe { dpdk_sys::rte_eal_remote_launch(Some(trampoline), arg, lcore) };
        if ret != 0 {
            if ret == -(libc::EBUSY) {
                // SAFETY: EBUSY is returned before the job is handed over: the
                // trampoline never saw it, so we reclaim it once.
                drop(unsafe { Box::from_raw(arg.cast::<Job>()) });
            }
            // Other failures (EPIPE) may have reached the worker: leak rather
            // than risk a double free.
            return Err(Error::from_code(op, ret));
        }
        Ok(LcoreJoin {
            lcore,
            eal: self.clone(),
            done: false,
            _main_only: std::marker::PhantomData,
        })
    }

    /// TSC ticks per second.
    pub fn tsc_hz(&self) -> u64 {
        // SAFETY: EAL is initialised (it calibrates the TSC).
        unsafe { dpdk_sys::rte_get_tsc_hz() }
    }
}

/// Read the time-stamp counter. Cheap (an inline `rdtsc` behind one call).
#[inline]
pub fn rdtsc() -> u64 {
    // SAFETY: no preconditions.
    unsafe { dpdk_sys::rte_rdtsc() }
}

/// The calling thread's lcore id, or `None` on a non-EAL thread.
pub fn current_lcore() -> Option<Lcore> {
    // SAFETY: reads a thread-local; no preconditions.
    let id = unsafe { dpdk_sys::rte_lcore_id() };
    (id < dpdk_sys::RTE_MAX_LCORE).then_some(id)
}

/// Waits for a launched lcore function; waits on drop if not joined.
/// Not `Send`: DPDK's wait is for the main lcore, which launched it.
#[derive(Debug)]
pub struct LcoreJoin {
    lcore: Lcore,
    eal: Eal,
    done: bool,
    _main_only: std::marker::PhantomData<*const ()>,
}

impl LcoreJoin {
    pub fn lcore(&self) -> Lcore {
        self.lcore
    }

    /// Block until the function returns; yields its return code (-1 if it panicked).
    pub fn join(mut self) -> i32 {
        self.done = true;
        let _ = &self.eal;
        // SAFETY: the lcore was launched by us, from this (main) thread, and is
        // waited for once.
        unsafe { dpdk_sys::rte_eal_wait_lcore(self.lcore) }
    }
}

impl Drop for LcoreJoin {
    fn drop(&mut self) {
        if !self.done {
            // SAFETY: as in join.
            unsafe {
                dpdk_sys::rte_eal_wait_lcore(self.lcore);
            }
        }
    }
}
