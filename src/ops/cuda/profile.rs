//! Where a step's GPU time goes: CUDA events recorded on the device's stream around each op of
//! the CUDA path (forward and backward separately) while profiling is on ([`enable`]);
//! [`report`] waits for the device and sums the time between each pair of events per op name.
//!
//! An op's time is measured on the GPU's timeline from its first to its last launch, so it
//! includes any time the GPU waited for the host to queue that op's work (when the host, not the
//! GPU, is the bottleneck, that shows here). Work between our ops (dfdx's own kernels: the loss,
//! the relation head, reshapes; cuBLAS) is the difference between a whole-step scope and the sum
//! of the ops. Off by default: then an op pays one relaxed atomic load.

use super::State;
use cudarc::driver::{result, sys};
use dfdx::prelude::*;
use dfdx::tensor::CudaError;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(false);

/// Turns event recording on or off (process-wide; the events of each thread are its own).
pub fn enable(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Whether ops record events.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

#[derive(Default)]
struct Events {
    free: Vec<sys::CUevent>,
    pending: Vec<(&'static str, sys::CUevent, sys::CUevent)>,
}

thread_local! {
    static EVENTS: RefCell<Events> = RefCell::new(Events::default());
}

fn event() -> Result<sys::CUevent, CudaError> {
    if let Some(e) = EVENTS.with(|e| e.borrow_mut().free.pop()) {
        return Ok(e);
    }
    Ok(result::event::create(sys::CUevent_flags::CU_EVENT_DEFAULT)?)
}

/// An open measurement: its end event is recorded when it is dropped.
pub struct Scope {
    name: &'static str,
    start: sys::CUevent,
    stream: sys::CUstream,
}

/// Starts measuring `name` on `st`'s stream, when profiling is on.
pub fn scope(st: &State, name: &'static str) -> Option<Scope> {
    if !enabled() {
        return None;
    }
    let stream = *st.dev.cu_stream();
    st.dev.bind_to_thread().ok()?;
    let start = event().ok()?;
    // SAFETY: a live event and the device's stream (the context is current: ops bind it).
    unsafe { result::event::record(start, stream) }.ok()?;
    Some(Scope {
        name,
        start,
        stream,
    })
}

/// Starts measuring `name` on `dev`'s stream (e.g. a whole training step), when profiling is on.
pub fn scope_on(dev: &Cuda, name: &'static str) -> Option<Scope> {
    if !enabled() {
        return None;
    }
    let st = super::state(dev).ok()?;
    scope(&st, name)
}

impl Drop for Scope {
    fn drop(&mut self) {
        let Ok(end) = event() else { return };
        // SAFETY: a live event on the stream the start event was recorded on.
        if unsafe { result::event::record(end, self.stream) }.is_ok() {
            EVENTS.with(|e| e.borrow_mut().pending.push((self.name, self.start, end)));
        }
    }
}

/// Total GPU time of one op name.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct OpTime {
    pub name: &'static str,
    pub calls: u64,
    pub ms: f64,
}

/// Waits for the device, then returns the time per op name of every scope closed since the last
/// report (this thread's), largest first.
pub fn report(dev: &Cuda) -> Result<Vec<OpTime>, CudaError> {
    dev.try_synchronize()?;
    let pending = EVENTS.with(|e| std::mem::take(&mut e.borrow_mut().pending));
    let mut totals: BTreeMap<&'static str, (u64, f64)> = BTreeMap::new();
    for (name, start, end) in pending {
        // SAFETY: both events were recorded and the device has finished (synchronised above).
        let ms = unsafe { result::event::elapsed(start, end) }?;
        let t = totals.entry(name).or_default();
        t.0 += 1;
        t.1 += ms as f64;
        EVENTS.with(|e| e.borrow_mut().free.extend([start, end]));
    }
    let mut out: Vec<OpTime> = totals
        .into_iter()
        .map(|(name, (calls, ms))| OpTime { name, calls, ms })
        .collect();
    out.sort_by(|a, b| b.ms.total_cmp(&a.ms));
    Ok(out)
}

/// Forgets the scopes closed so far (e.g. after warm-up).
pub fn reset(dev: &Cuda) -> Result<(), CudaError> {
    report(dev).map(|_| ())
}
