//! The CUDA path's fused kernels (`src/ops/kernels.cu`) run on the CPU, without a GPU.
//!
//! `kernels.cu` is written in the C subset that nvcc and a C compiler both accept; here it is
//! compiled with the host C compiler (`$CC`, default `cc`) together with `tests/emu/sr_emu.c`, an
//! emulator that runs every block's threads as cooperative fibers (switching only at
//! `__syncthreads` or when a thread returns), into a shared library that this test loads. The
//! launch sequences are the library's own (`spatial_reasoning::ops::kernels`, the same code the
//! GPU path calls), so what runs here is the kernels' source, their index arithmetic and
//! reductions, the launch plans and the parameter structs' layout. Each op's output and gradients
//! are compared with the CPU ops (`ops::cpu`, themselves checked against finite differences in
//! `tests/ops_grad.rs`) on odd shapes, with the tolerance of `tests/cuda_ops.rs`.
//!
//! Race check: every launch sequence runs twice, blocks and threads scheduled in opposite orders;
//! the results must be bit-identical (a shared-memory read that misses a `__syncthreads` sees a
//! different value in one of the orders). The emulator also fails a launch in which some threads
//! of a block return while others wait at `__syncthreads`, or threads wait at different
//! `__syncthreads` calls (divergent barriers), and its buffers end at a guard page,
//! so a read or write past a buffer's end crashes the test.
//!
//! What this cannot show: the GPU's own behaviour (warp scheduling, memory model, the PTX
//! compiler, FMA contraction), the cuDNN convolutions and the dfdx tape glue on `Cuda`: those are
//! `tests/cuda_ops.rs`, on a GPU.
//!
//! Without a C compiler the tests print why and pass, except under CI (`CI` set), where that fails.
#![cfg(target_os = "linux")]

use dfdx::prelude::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use spatial_reasoning::ops::kernels::{self as k, KernelBackend, KernelParams, Ptr};
use spatial_reasoning::ops::{cpu, BnMode, BnParams, BN_EPS, BN_MOMENTUM};
use std::cell::Cell;
use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, OnceLock};

extern "C" {
    fn dlopen(filename: *const c_char, flag: c_int) -> *mut c_void;
    fn dlsym(handle: *mut c_void, symbol: *const c_char) -> *mut c_void;
    fn dlerror() -> *const c_char;
}
const RTLD_NOW: c_int = 2;

type LaunchFn = unsafe extern "C" fn(
    *const c_char,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    *const c_void,
    usize,
    c_int,
) -> c_int;
type AllocFn = unsafe extern "C" fn(usize) -> *mut c_void;
type FreeFn = unsafe extern "C" fn(*mut c_void, usize);
type ErrorFn = unsafe extern "C" fn() -> *const c_char;

struct Lib {
    launch: LaunchFn,
    alloc: AllocFn,
    free: FreeFn,
    error: ErrorFn,
}

/// Builds and loads the emulator once per test process; `None` when there is no C compiler.
fn lib() -> Option<&'static Lib> {
    static LIB: OnceLock<Option<Lib>> = OnceLock::new();
    LIB.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("libsr_emu.so");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let run = std::process::Command::new(&cc)
            .args([
                "-std=gnu11",
                "-O1",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-shared",
                "-fPIC",
            ])
            .arg(format!("-I{}", root.join("src/ops").display()))
            .arg(format!("-I{}", root.join("tests/emu").display()))
            .arg(root.join("tests/emu/sr_emu.c"))
            .arg("-o")
            .arg(&out)
            .arg("-lm")
            .output();
        let run = match run {
            Ok(r) => r,
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "no C compiler ({cc}: {e}): the kernel emulator cannot run"
                );
                eprintln!("SKIPPED: no C compiler ({cc}: {e}); the kernel emulator needs one");
                return None;
            }
        };
        assert!(
            run.status.success(),
            "{cc} failed on tests/emu/sr_emu.c + src/ops/kernels.cu:\n{}",
            String::from_utf8_lossy(&run.stderr)
        );
        let path = CString::new(out.to_str().unwrap()).unwrap();
        // SAFETY: loading a library we just built; its symbols have the types declared above.
        unsafe {
            let h = dlopen(path.as_ptr(), RTLD_NOW);
            assert!(!h.is_null(), "dlopen: {:?}", CStr::from_ptr(dlerror()));
            let sym = |name: &str| {
                let c = CString::new(name).unwrap();
                let p = dlsym(h, c.as_ptr());
                assert!(!p.is_null(), "{name} missing from the emulator");
                p
            };
            Some(Lib {
                launch: std::mem::transmute::<*mut c_void, LaunchFn>(sym("sr_emu_launch")),
                alloc: std::mem::transmute::<*mut c_void, AllocFn>(sym("sr_emu_alloc")),
                free: std::mem::transmute::<*mut c_void, FreeFn>(sym("sr_emu_free")),
                error: std::mem::transmute::<*mut c_void, ErrorFn>(sym("sr_emu_error")),
            })
        }
    })
    .as_ref()
}

/// The emulator is one global machine: one test at a time.
fn emu() -> Option<(MutexGuard<'static, ()>, Emu)> {
    static ONE: Mutex<()> = Mutex::new(());
    let lib = lib()?;
    let guard = ONE.lock().unwrap_or_else(|e| e.into_inner());
    Some((
        guard,
        Emu {
            lib,
            reverse: Cell::new(false),
            launches: Cell::new(0),
        },
    ))
}

struct Emu {
    lib: &'static Lib,
    reverse: Cell<bool>,
    launches: Cell<usize>,
}

impl KernelBackend for Emu {
    type Err = String;
    fn launch<P: KernelParams>(
        &self,
        grid: (u32, u32, u32),
        block: u32,
        params: &P,
    ) -> Result<(), String> {
        let name = CString::new(P::NAME).unwrap();
        self.launches.set(self.launches.get() + 1);
        // SAFETY: `params` is a live #[repr(C)] struct of `size_of::<P>()` bytes; the emulator
        // checks that size against the C struct's.
        let rc = unsafe {
            (self.lib.launch)(
                name.as_ptr(),
                grid.0,
                grid.1,
                grid.2,
                block,
                1,
                1,
                params as *const P as *const c_void,
                std::mem::size_of::<P>(),
                self.reverse.get() as c_int,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            // SAFETY: the emulator returns a NUL-terminated static buffer.
            Err(unsafe { CStr::from_ptr((self.lib.error)()) }
                .to_string_lossy()
                .into_owned())
        }
    }
}

/// An emulator buffer (ends at a guard page).
struct Buf {
    lib: &'static Lib,
    ptr: *mut u8,
    bytes: usize,
}

impl Emu {
    fn raw(&self, bytes: usize) -> Buf {
        let bytes = bytes.max(4);
        // SAFETY: plain allocation.
        let ptr = unsafe { (self.lib.alloc)(bytes) } as *mut u8;
        assert!(!ptr.is_null(), "emulator allocation of {bytes} bytes");
        Buf {
            lib: self.lib,
            ptr,
            bytes,
        }
    }
    fn f32s(&self, v: &[f32]) -> Buf {
        let b = self.raw(4 * v.len());
        // SAFETY: the buffer holds at least 4·len bytes.
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), b.ptr as *mut f32, v.len()) };
        b
    }
    fn zeros(&self, n: usize) -> Buf {
        self.f32s(&vec![0.0; n])
    }
    /// Uninitialised: every byte 0xff (NaN as f32 or f64).
    fn scratch(&self, bytes: usize) -> Buf {
        self.raw(bytes)
    }
}

impl Buf {
    fn p(&self) -> Ptr {
        self.ptr as Ptr
    }
    fn read(&self, n: usize) -> Vec<f32> {
        assert!(4 * n <= self.bytes);
        let mut v = vec![0.0f32; n];
        // SAFETY: in bounds (checked above).
        unsafe { std::ptr::copy_nonoverlapping(self.ptr as *const f32, v.as_mut_ptr(), n) };
        v
    }
    fn read_u32(&self, n: usize) -> Vec<u32> {
        self.read(n).iter().map(|f| f.to_bits()).collect()
    }
}

impl Drop for Buf {
    fn drop(&mut self) {
        // SAFETY: allocated by sr_emu_alloc with this size.
        unsafe { (self.lib.free)(self.ptr as *mut c_void, self.bytes) }
    }
}

fn randv(rng: &mut ChaCha8Rng, n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| rng.gen_range(-1.0f32..1.0) * scale)
        .collect()
}

/// `tests/cuda_ops.rs`'s tolerance: `|emu − cpu| ≤ 1e-4·max|cpu| + 1e-6` per element.
fn assert_close(what: &str, got: &[f32], cpu: &[f32]) {
    assert_eq!(got.len(), cpu.len(), "{what}: length");
    let scale = cpu.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let tol = 1e-4 * scale + 1e-6;
    for (i, (g, c)) in got.iter().zip(cpu).enumerate() {
        assert!(
            (g - c).abs() <= tol && g.is_finite(),
            "{what}[{i}]: emulated kernel {g}, cpu {c} (tolerance {tol})"
        );
    }
}

/// Runs `f` with blocks/threads in order and again reversed; the outputs must be bit-identical.
fn both_orders(emu: &Emu, what: &str, f: impl Fn(&Emu) -> Vec<Vec<f32>>) -> Vec<Vec<f32>> {
    emu.reverse.set(false);
    let a = f(emu);
    emu.reverse.set(true);
    let b = f(emu);
    emu.reverse.set(false);
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let same = x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(
            same && x.len() == y.len(),
            "{what}: output {i} depends on the order blocks/threads run in (a race)"
        );
    }
    a
}

/// CPU reference: output, dx, dγ, dβ, running mean, running var of `Σ r ⊙ bn(x)`.
#[allow(clippy::too_many_arguments)]
fn bn_cpu<const C: usize>(
    (n, h, w): (usize, usize, usize),
    xv: &[f32],
    gv: &[f32],
    bv: &[f32],
    rs: (&[f32], &[f32]),
    mode: BnMode,
    relu: bool,
    r: &[f32],
) -> Vec<Vec<f32>> {
    let dev = Cpu::default();
    let x = dev.tensor_from_vec(xv.to_vec(), (n, Const::<C>, h, w));
    let weight: Tensor<Rank1<C>, f32, Cpu> = dev.tensor_from_vec(gv.to_vec(), (Const,));
    let bias: Tensor<Rank1<C>, f32, Cpu> = dev.tensor_from_vec(bv.to_vec(), (Const,));
    let mut rm: Tensor<Rank1<C>, f32, Cpu> = dev.tensor_from_vec(rs.0.to_vec(), (Const,));
    let mut rv: Tensor<Rank1<C>, f32, Cpu> = dev.tensor_from_vec(rs.1.to_vec(), (Const,));
    let params = BnParams {
        weight: &weight,
        bias: &bias,
        running_mean: &mut rm,
        running_var: &mut rv,
    };
    let y = cpu::batch_norm2d(x.clone().leaky_traced(), params, mode, relu).unwrap();
    let yv = y.as_vec();
    let rt = dev.tensor_from_vec(r.to_vec(), *y.shape());
    let g = y.try_mul(rt).unwrap().sum().backward();
    vec![
        yv,
        g.get(&x).as_vec(),
        g.get(&weight).as_vec(),
        g.get(&bias).as_vec(),
        rm.as_vec(),
        rv.as_vec(),
    ]
}

/// The same through the kernels: forward, then backward with dy = r.
#[allow(clippy::too_many_arguments)]
fn bn_emu(
    emu: &Emu,
    plan: &k::BnPlan,
    xv: &[f32],
    gv: &[f32],
    bv: &[f32],
    rs: (&[f32], &[f32]),
    train: bool,
    relu: bool,
    r: &[f32],
) -> Vec<Vec<f32>> {
    let c = plan.c as usize;
    let (x, gamma, beta) = (emu.f32s(xv), emu.f32s(gv), emu.f32s(bv));
    let (rm, rvar) = (emu.f32s(rs.0), emu.f32s(rs.1));
    // Out of place in training (as the GPU path does); untouched in eval.
    let (rm_out, rv_out) = if train {
        (emu.scratch(4 * c), emu.scratch(4 * c))
    } else {
        (emu.f32s(rs.0), emu.f32s(rs.1))
    };
    let y = emu.scratch(4 * xv.len());
    let saved = emu.scratch(16 * c);
    let partial = emu.scratch(8 * plan.partial_len());
    let fwd = k::BnForwardBufs {
        x: x.p(),
        y: y.p(),
        gamma: gamma.p(),
        beta: beta.p(),
        run_mean: rm.p(),
        run_var: rvar.p(),
        run_mean_out: rm_out.p(),
        run_var_out: rv_out.p(),
        saved: saved.p(),
        partial: partial.p(),
    };
    k::bn_forward(emu, plan, &fwd, train, relu, BN_MOMENTUM, BN_EPS).unwrap();
    let dy = emu.f32s(r);
    let (dx, dg, db) = (emu.zeros(xv.len()), emu.zeros(c), emu.zeros(c));
    let partial2 = emu.scratch(8 * plan.partial_len());
    let bwd = k::BnBackwardBufs {
        x: x.p(),
        dy: dy.p(),
        gamma: gamma.p(),
        saved: saved.p(),
        dx: dx.p(),
        dgamma: dg.p(),
        dbeta: db.p(),
        partial: partial2.p(),
    };
    k::bn_backward(emu, plan, &bwd, train, relu).unwrap();
    vec![
        y.read(xv.len()),
        dx.read(xv.len()),
        dg.read(c),
        db.read(c),
        rm_out.read(c),
        rv_out.read(c),
    ]
}

fn bn_case<const C: usize>(emu: &Emu, (n, h, w): (usize, usize, usize), slices: Option<u32>) {
    let mut rng = ChaCha8Rng::seed_from_u64(5 + (n * h * w) as u64);
    let len = n * C * h * w;
    let xv: Vec<f32> = randv(&mut rng, len, 3.0).iter().map(|v| v + 1.0).collect();
    let gv = randv(&mut rng, C, 1.5);
    let bv = randv(&mut rng, C, 0.5);
    let rm = randv(&mut rng, C, 0.5);
    let rv: Vec<f32> = randv(&mut rng, C, 0.5).iter().map(|v| v + 1.0).collect();
    let r = randv(&mut rng, len, 1.0);
    let hw = h * w;
    let plan = match slices {
        Some(s) => k::BnPlan::with_slices(n, C, hw, s),
        None => k::BnPlan::new(n, C, hw),
    };
    for mode in [BnMode::Train, BnMode::Eval] {
        for relu in [false, true] {
            let train = mode == BnMode::Train;
            let tag = format!("bn {mode:?} relu={relu} ({n},{C},{h},{w}) {plan:?}");
            let cpu = bn_cpu::<C>((n, h, w), &xv, &gv, &bv, (&rm, &rv), mode, relu, &r);
            let got = both_orders(emu, &tag, |e| {
                bn_emu(e, &plan, &xv, &gv, &bv, (&rm, &rv), train, relu, &r)
            });
            let names = ["y", "dx", "dweight", "dbias", "running_mean", "running_var"];
            for (i, name) in names.iter().enumerate() {
                assert_close(&format!("{tag} {name}"), &got[i], &cpu[i]);
            }
        }
    }
}

#[test]
fn batch_norm_kernels_match_the_cpu_op() {
    let Some((_g, emu)) = emu() else { return };
    // hw < 256 (several images per block step, the walk wraps rows), hw > 256, hw = 1; one and
    // several slices per channel, slices that end mid-image.
    bn_case::<5>(&emu, (3, 9, 7), None);
    bn_case::<5>(&emu, (3, 9, 7), Some(3));
    bn_case::<3>(&emu, (2, 17, 19), Some(4));
    bn_case::<4>(&emu, (6, 1, 1), Some(5));
    bn_case::<2>(&emu, (64, 4, 4), None);
    // Several steps of 256 per thread: the walk's wrap-around (hw does not divide 256, or
    // exceeds it).
    bn_case::<2>(&emu, (20, 9, 7), Some(1));
    bn_case::<2>(&emu, (4, 17, 19), Some(1));
    bn_case::<3>(&emu, (50, 5, 5), Some(2));
    assert!(emu.launches.get() > 0);
}

fn pool_case(emu: &Emu, (n, c, h, w): (usize, usize, usize, usize), max: bool, ties: bool) {
    const C: usize = 3;
    assert_eq!(c, C);
    let mut rng = ChaCha8Rng::seed_from_u64(3 + h as u64);
    let len = n * C * h * w;
    let mut xv = randv(&mut rng, len, 2.0);
    if ties {
        // Few distinct values: windows with tied maxima.
        xv.iter_mut().for_each(|v| *v = v.round());
    }
    let dev = Cpu::default();
    let x = dev.tensor_from_vec(xv.clone(), (n, Const::<C>, h, w));
    let y = if max {
        cpu::max_pool2x2(x.clone().leaky_traced())
    } else {
        cpu::avg_pool2x2(x.clone().leaky_traced())
    }
    .unwrap();
    let yv = y.as_vec();
    let r = randv(&mut rng, yv.len(), 1.0);
    let shape = *y.shape();
    let g = y
        .try_mul(dev.tensor_from_vec(r.clone(), shape))
        .unwrap()
        .sum()
        .backward();
    let dxv = g.get(&x).as_vec();
    let geo = k::PoolGeo::new(n * C, h, w);
    let tag = format!("pool max={max} ties={ties} ({n},{C},{h},{w})");
    let got = both_orders(emu, &tag, |e| {
        let (xb, yb) = (e.f32s(&xv), e.scratch(4 * yv.len()));
        k::pool_forward(e, &geo, xb.p(), yb.p(), max).unwrap();
        let (dy, dx) = (e.f32s(&r), e.zeros(len));
        k::pool_backward(e, &geo, xb.p(), dy.p(), dx.p(), max).unwrap();
        vec![yb.read(yv.len()), dx.read(len)]
    });
    assert_close(&format!("{tag} y"), &got[0], &yv);
    assert_close(&format!("{tag} dx"), &got[1], &dxv);
}

#[test]
fn pooling_kernels_match_the_cpu_ops() {
    let Some((_g, emu)) = emu() else { return };
    for max in [false, true] {
        // Odd height and width: trailing row/column dropped.
        pool_case(&emu, (3, 3, 9, 7), max, false);
        pool_case(&emu, (2, 3, 16, 16), max, max);
    }
}

fn gap_case(emu: &Emu, (n, h, w): (usize, usize, usize)) {
    const C: usize = 4;
    let mut rng = ChaCha8Rng::seed_from_u64(7 + h as u64);
    let len = n * C * h * w;
    let xv = randv(&mut rng, len, 2.0);
    let dev = Cpu::default();
    let x = dev.tensor_from_vec(xv.clone(), (n, Const::<C>, h, w));
    let y = cpu::global_avg_pool(x.clone().leaky_traced()).unwrap();
    let yv = y.as_vec();
    let r = randv(&mut rng, yv.len(), 1.0);
    let shape = *y.shape();
    let g = y
        .try_mul(dev.tensor_from_vec(r.clone(), shape))
        .unwrap()
        .sum()
        .backward();
    let dxv = g.get(&x).as_vec();
    let tag = format!("global avg pool ({n},{C},{h},{w})");
    let got = both_orders(emu, &tag, |e| {
        let (xb, yb) = (e.f32s(&xv), e.scratch(4 * yv.len()));
        k::gap_forward(e, n * C, h * w, xb.p(), yb.p()).unwrap();
        let (dy, dx) = (e.f32s(&r), e.zeros(len));
        k::gap_backward(e, n * C, h * w, dy.p(), dx.p()).unwrap();
        vec![yb.read(yv.len()), dx.read(len)]
    });
    assert_close(&format!("{tag} y"), &got[0], &yv);
    assert_close(&format!("{tag} dx"), &got[1], &dxv);
}

#[test]
fn global_avg_pool_kernels_match_the_cpu_op() {
    let Some((_g, emu)) = emu() else { return };
    gap_case(&emu, (3, 9, 7)); // 63 values: 64 threads
    gap_case(&emu, (2, 20, 20)); // 400 values: 256 threads, two per thread
    gap_case(&emu, (5, 1, 1)); // 1 value: 32 threads, 31 idle
}

#[test]
fn add_relu_kernels_match_the_cpu_op() {
    let Some((_g, emu)) = emu() else { return };
    const C: usize = 6;
    let (n, h, w) = (3, 7, 5);
    let len = n * C * h * w;
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let (av, bv, r) = (
        randv(&mut rng, len, 1.0),
        randv(&mut rng, len, 1.0),
        randv(&mut rng, len, 1.0),
    );
    let dev = Cpu::default();
    let shape = (n, Const::<C>, h, w);
    let a = dev.tensor_from_vec(av.clone(), shape);
    let b = dev.tensor_from_vec(bv.clone(), shape);
    let y = cpu::add_relu(a.clone().leaky_traced(), b.clone().leaky_traced()).unwrap();
    let yv = y.as_vec();
    let g = y
        .try_mul(dev.tensor_from_vec(r.clone(), shape))
        .unwrap()
        .sum()
        .backward();
    let (dav, dbv) = (g.get(&a).as_vec(), g.get(&b).as_vec());
    let got = both_orders(&emu, "add_relu", |e| {
        let (ab, bb, yb) = (e.f32s(&av), e.f32s(&bv), e.scratch(4 * len));
        k::add_relu_forward(e, len, ab.p(), bb.p(), yb.p()).unwrap();
        let (dy, da, db) = (e.f32s(&r), e.zeros(len), e.zeros(len));
        k::add_relu_backward(e, len, yb.p(), dy.p(), da.p(), db.p()).unwrap();
        // relu(x + x): both gradients land in one buffer.
        let same = e.zeros(len);
        k::add_relu_backward(e, len, yb.p(), dy.p(), same.p(), same.p()).unwrap();
        vec![yb.read(len), da.read(len), db.read(len), same.read(len)]
    });
    assert_close("add_relu y", &got[0], &yv);
    assert_close("add_relu da", &got[1], &dav);
    assert_close("add_relu db", &got[2], &dbv);
    let twice: Vec<f32> = dav.iter().map(|d| 2.0 * d).collect();
    assert_close("add_relu da=db", &got[3], &twice);
}

#[test]
fn count_nonfinite_counts_exactly() {
    let Some((_g, emu)) = emu() else { return };
    // 40 tensors (two launches), lengths from 1 to ~5000 (several blocks each).
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let mut tensors = Vec::new();
    let mut want = Vec::new();
    for t in 0..40usize {
        let n = 1 + (t * 131) % 5000;
        let mut v = randv(&mut rng, n, 1e30);
        // The largest finite values count as finite.
        v[n - 1] = if t % 2 == 0 { f32::MAX } else { f32::MIN };
        for j in 0..(t % 5) {
            let i = (j * 977 + t) % n;
            v[i] = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY, -f32::NAN][j % 4];
        }
        want.push(v.iter().filter(|x| !x.is_finite()).count() as u32);
        tensors.push(v);
    }
    let got = both_orders(&emu, "count_nonfinite", |e| {
        let bufs: Vec<Buf> = tensors.iter().map(|v| e.f32s(v)).collect();
        let list: Vec<(Ptr, u64)> = bufs
            .iter()
            .zip(&tensors)
            .map(|(b, v)| (b.p(), v.len() as u64))
            .collect();
        let counts = e.zeros(tensors.len());
        k::count_nonfinite(e, &list, counts.p()).unwrap();
        // (u32 counts carried as f32 bit patterns, for both_orders)
        let c = counts.read_u32(tensors.len());
        vec![c.iter().map(|&u| f32::from_bits(u)).collect()]
    });
    let counts: Vec<u32> = got[0].iter().map(|f| f.to_bits()).collect();
    assert_eq!(counts, want);
    assert!(want.iter().any(|&c| c > 0) && want.contains(&0));
}

#[test]
fn a_wrong_parameter_struct_size_is_refused() {
    let Some((_g, emu)) = emu() else { return };
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct TooShort {
        x: u64,
    }
    // SAFETY: never runs: the emulator refuses the size first (this is what the test checks).
    unsafe impl KernelParams for TooShort {
        const NAME: &'static str = "sr_add_relu_forward";
    }
    let err = emu.launch((1, 1, 1), 32, &TooShort { x: 0 }).unwrap_err();
    assert!(err.contains("bytes in C"), "{err}");
    // Every entry point the GPU path loads exists in kernels.cu (a wrong size is refused by
    // name; an unknown name would be "no kernel named").
    for name in k::KERNEL_NAMES {
        let c = CString::new(name).unwrap();
        // SAFETY: the emulator refuses the 1-byte parameter before running anything.
        let rc =
            unsafe { (emu.lib.launch)(c.as_ptr(), 1, 1, 1, 32, 1, 1, [0u8].as_ptr() as _, 1, 0) };
        // SAFETY: NUL-terminated static buffer.
        let err = unsafe { CStr::from_ptr((emu.lib.error)()) }.to_string_lossy();
        assert!(rc != 0 && err.contains("bytes in C"), "{name}: {err}");
    }
}
