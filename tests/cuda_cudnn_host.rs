//! The CUDA path's cuDNN descriptors against the real cuDNN 9 library, without a GPU.
//!
//! cuDNN's descriptor calls run on the host, so this needs `libcudnn.so.9` on the library path
//! but no device: it builds every descriptor kind through `ops::cuda::cudnn` (the wrappers the
//! convolutions use) and reads it back with cuDNN's getters, which catches arguments passed in
//! the wrong order or meaning (the prototypes themselves are checked against the headers by
//! `src/ops/cuda/cudnn_abi.c`). It also asks cuDNN for each ResNet-32/Conv-4 convolution's
//! output size and compares it with `ops::out_size`.
//!
//! Feature `cuda`; built by `scripts/cuda-build.sh`, run by `scripts/gpu-check.sh` (step 1) and
//! wherever a real cuDNN 9 is at hand (e.g. PyTorch's `nvidia/cudnn/lib`). Against the link stub
//! every call fails (the stub answers "not initialised"), so this is not run in CI.
#![cfg(feature = "cuda")]

use spatial_reasoning::ops::cuda::cudnn::{self, Conv, Filter, Tensor4d};
use spatial_reasoning::ops::out_size;
use std::ffi::c_int;

extern "C" {
    fn cudnnGetTensor4dDescriptor(
        d: cudnn::TensorDesc,
        data_type: *mut i32,
        n: *mut c_int,
        c: *mut c_int,
        h: *mut c_int,
        w: *mut c_int,
        ns: *mut c_int,
        cs: *mut c_int,
        hs: *mut c_int,
        ws: *mut c_int,
    ) -> i32;
    fn cudnnGetFilter4dDescriptor(
        d: cudnn::FilterDesc,
        data_type: *mut i32,
        format: *mut i32,
        k: *mut c_int,
        c: *mut c_int,
        h: *mut c_int,
        w: *mut c_int,
    ) -> i32;
    fn cudnnGetConvolution2dDescriptor(
        d: cudnn::ConvDesc,
        pad_h: *mut c_int,
        pad_w: *mut c_int,
        u: *mut c_int,
        v: *mut c_int,
        dil_h: *mut c_int,
        dil_w: *mut c_int,
        mode: *mut i32,
        compute: *mut i32,
    ) -> i32;
    fn cudnnGetConvolutionMathType(d: cudnn::ConvDesc, math: *mut i32) -> i32;
    fn cudnnGetConvolution2dForwardOutputDim(
        conv: cudnn::ConvDesc,
        x: cudnn::TensorDesc,
        w: cudnn::FilterDesc,
        n: *mut c_int,
        c: *mut c_int,
        h: *mut c_int,
        wd: *mut c_int,
    ) -> i32;
}

#[test]
fn descriptors_read_back_as_built() {
    let version = cudnn::version();
    eprintln!("cuDNN version {version}");
    assert!(version >= 90000, "expected cuDNN 9, found {version}");
    // (n, c, h, w) with distinct values, so a swapped pair shows.
    let t = Tensor4d::new([5, 3, 11, 7]).unwrap();
    let mut v = [0i32; 9];
    let mut dt = -1;
    let [n, c, h, w, ns, cs, hs, ws, _] = &mut v;
    // SAFETY: a live descriptor; out-pointers to locals.
    let s = unsafe { cudnnGetTensor4dDescriptor(t.0, &mut dt, n, c, h, w, ns, cs, hs, ws) };
    assert_eq!(s, 0);
    assert_eq!(dt, cudnn::DATA_FLOAT);
    assert_eq!(
        &v[..8],
        &[5, 3, 11, 7, 3 * 11 * 7, 11 * 7, 7, 1],
        "NCHW, packed"
    );

    let f = Filter::new([16, 3, 3, 5]).unwrap();
    let (mut dt, mut fmt, mut k, mut c, mut h, mut w) = (-1, -1, 0, 0, 0, 0);
    // SAFETY: as above.
    let s = unsafe {
        cudnnGetFilter4dDescriptor(f.0, &mut dt, &mut fmt, &mut k, &mut c, &mut h, &mut w)
    };
    assert_eq!(s, 0);
    assert_eq!((dt, fmt), (cudnn::DATA_FLOAT, cudnn::TENSOR_NCHW));
    assert_eq!((k, c, h, w), (16, 3, 3, 5));

    for (math, name) in [(cudnn::FMA_MATH, "fma"), (cudnn::DEFAULT_MATH, "default")] {
        let conv = Conv::new(2, 3, math).unwrap();
        let mut g = [0i32; 8];
        let [ph, pw, u, vv, dh, dw, mode, compute] = &mut g;
        // SAFETY: as above.
        let s = unsafe {
            cudnnGetConvolution2dDescriptor(conv.0, ph, pw, u, vv, dh, dw, mode, compute)
        };
        assert_eq!(s, 0);
        assert_eq!(
            g,
            [
                2,
                2,
                3,
                3,
                1,
                1,
                cudnn::CROSS_CORRELATION,
                cudnn::DATA_FLOAT
            ],
            "pad, stride, dilation, mode, compute type ({name})"
        );
        let mut m = -1;
        // SAFETY: as above.
        assert_eq!(unsafe { cudnnGetConvolutionMathType(conv.0, &mut m) }, 0);
        assert_eq!(m, math, "{name}");
    }
}

#[test]
fn output_sizes_agree_with_ops_out_size() {
    // (n, i, h, w, o, k, stride, pad): ResNet-32's and Conv-4's geometries, 32 and 64 px, odd.
    let cases = [
        (8, 3, 32, 32, 16, 3, 1, 1),
        (8, 16, 32, 32, 32, 3, 2, 1),
        (8, 16, 32, 32, 32, 1, 2, 0),
        (8, 32, 16, 16, 64, 3, 2, 1),
        (896, 16, 64, 64, 16, 3, 1, 1),
        (3, 5, 9, 7, 7, 3, 1, 0),
        (2, 4, 9, 8, 6, 3, 2, 1),
    ];
    for (n, i, h, w, o, k, stride, pad) in cases {
        let x = Tensor4d::new([n, i, h, w]).unwrap();
        let f = Filter::new([o, i, k, k]).unwrap();
        let conv = Conv::new(pad, stride, cudnn::FMA_MATH).unwrap();
        let (mut on, mut oc, mut oh, mut ow) = (0, 0, 0, 0);
        // SAFETY: live descriptors; out-pointers to locals.
        let s = unsafe {
            cudnnGetConvolution2dForwardOutputDim(
                conv.0, x.0, f.0, &mut on, &mut oc, &mut oh, &mut ow,
            )
        };
        assert_eq!(s, 0);
        let want = (
            n,
            o,
            out_size(h, k, stride, pad),
            out_size(w, k, stride, pad),
        );
        assert_eq!(
            (on as usize, oc as usize, oh as usize, ow as usize),
            want,
            "conv {i}->{o} k{k} s{stride} p{pad} on {h}x{w}"
        );
    }
}

#[test]
fn errors_map_to_their_class_with_cudnns_message() {
    // A descriptor with a zero dimension is a bad parameter (2xxx in cuDNN 9).
    let err = Tensor4d::new([0, 3, 4, 4]).unwrap_err();
    let text = format!("{err:?}");
    assert!(text.contains("BAD_PARAM"), "{text}");
}
