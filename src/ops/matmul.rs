//! f32 matrix products for the host-side code of the crate (the linear probe, kNN, benches): one
//! safe, bounds-checked entry to the `gemm` crate, so no raw `gemm::gemm` call lives outside
//! [`crate::ops`]. (The convolutions call `gemm` through their own scratch-buffer views.)

/// A read-only strided matrix in a slice: element `(i, j)` at `data[i·rs + j·cs]`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    pub data: &'a [f32],
    /// Row stride.
    pub rs: usize,
    /// Column stride.
    pub cs: usize,
}

/// A writable strided matrix in a slice: element `(i, j)` at `data[i·rs + j·cs]`.
#[derive(Debug)]
pub struct MatMut<'a> {
    pub data: &'a mut [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> MatRef<'a> {
    /// Row-major `rows × cols` (`rs = cols`, `cs = 1`) is `MatRef::new(data, cols, 1)`.
    pub fn new(data: &'a [f32], rs: usize, cs: usize) -> Self {
        Self { data, rs, cs }
    }
}

impl<'a> MatMut<'a> {
    pub fn new(data: &'a mut [f32], rs: usize, cs: usize) -> Self {
        Self { data, rs, cs }
    }
}

/// Where the product runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Threads {
    /// On the calling thread (callers that parallelise over blocks themselves).
    One,
    /// On rayon's current pool.
    Rayon,
}

/// Panics unless every element of a `rows × cols` matrix with strides `(rs, cs)` lies in `len`.
fn check(what: &str, (rows, cols): (usize, usize), (rs, cs): (usize, usize), len: usize) {
    if rows > 0 && cols > 0 {
        let last = (rows - 1) * rs + (cols - 1) * cs;
        assert!(
            last < len,
            "matmul: {what} ({rows}×{cols}, strides {rs}/{cs}) exceeds its slice of {len}"
        );
    }
}

/// `dst (m × n) = lhs (m × k) · rhs (k × n)`, or `dst += …` with `accumulate`, in f32.
///
/// # Panics
/// If a matrix does not fit its slice.
pub fn matmul(
    (m, n, k): (usize, usize, usize),
    dst: MatMut<'_>,
    accumulate: bool,
    lhs: MatRef<'_>,
    rhs: MatRef<'_>,
    threads: Threads,
) {
    check("dst", (m, n), (dst.rs, dst.cs), dst.data.len());
    check("lhs", (m, k), (lhs.rs, lhs.cs), lhs.data.len());
    check("rhs", (k, n), (rhs.rs, rhs.cs), rhs.data.len());
    if m == 0 || n == 0 {
        return;
    }
    let parallelism = match threads {
        Threads::One => gemm::Parallelism::None,
        Threads::Rayon => gemm::Parallelism::Rayon(0),
    };
    // SAFETY: every element the strides reach lies in its slice (checked above); `dst` is a
    // unique borrow, so it aliases neither operand.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.data.as_mut_ptr(),
            dst.cs as isize,
            dst.rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_match_the_definition_on_every_layout() {
        // lhs 2×3, rhs 3×2, row-major and transposed views
        let a = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [7.0, 8.0, 9.0, 10.0, 11.0, 12.0];
        let mut d = [0.0; 4];
        matmul(
            (2, 2, 3),
            MatMut::new(&mut d, 2, 1),
            false,
            MatRef::new(&a, 3, 1),
            MatRef::new(&b, 2, 1),
            Threads::One,
        );
        assert_eq!(d, [58.0, 64.0, 139.0, 154.0]);
        // accumulate, column-major destination, rhs read as the transpose of a 2×3 row-major
        let bt = [7.0, 9.0, 11.0, 8.0, 10.0, 12.0];
        let mut e = [1.0; 4];
        matmul(
            (2, 2, 3),
            MatMut::new(&mut e, 1, 2),
            true,
            MatRef::new(&a, 3, 1),
            MatRef::new(&bt, 1, 3),
            Threads::Rayon,
        );
        assert_eq!(e, [59.0, 140.0, 65.0, 155.0]);
    }

    #[test]
    #[should_panic(expected = "exceeds its slice")]
    fn a_matrix_outside_its_slice_panics() {
        let mut d = [0.0; 3];
        matmul(
            (2, 2, 1),
            MatMut::new(&mut d, 2, 1),
            false,
            MatRef::new(&[1.0, 2.0], 1, 1),
            MatRef::new(&[1.0, 2.0], 2, 1),
            Threads::One,
        );
    }
}
