//! Dense layers with weights stored transposed (`wt[in][out]`, row-major), so that the
//! forward pass (axpy over contiguous output rows) and the input gradient (dot products
//! of contiguous rows) both stream memory in order. Summation orders are fixed, so
//! every target gets the same bits.

/// y = b + Σ_i x_i · wt[i, :]
#[inline(always)]
pub fn dense(x: &[f32], wt: &[f32], b: &[f32], y: &mut [f32]) {
    let out = y.len();
    y.copy_from_slice(&b[..out]);
    accumulate_dense(x, wt, y);
}

/// y = Σ_i x_i · wt[i, :] (a layer without bias).
#[inline(always)]
pub fn dense_no_bias(x: &[f32], wt: &[f32], y: &mut [f32]) {
    y.fill(0.0);
    accumulate_dense(x, wt, y);
}

/// y += Σ_i x_i · wt[i, :]
#[inline(always)]
fn accumulate_dense(x: &[f32], wt: &[f32], y: &mut [f32]) {
    let out = y.len();
    for (i, &xi) in x.iter().enumerate() {
        let row = &wt[i * out..(i + 1) * out];
        for (yo, &w) in y.iter_mut().zip(row) {
            *yo += xi * w;
        }
    }
}

/// gx_i = Σ_o wt[i, o] · gy_o  (the gradient of `dense` with respect to its input).
#[inline(always)]
pub fn dense_grad_input(gy: &[f32], wt: &[f32], gx: &mut [f32]) {
    let out = gy.len();
    for (i, g) in gx.iter_mut().enumerate() {
        *g = dot(&wt[i * out..(i + 1) * out], gy);
    }
}

/// Dot product with eight interleaved partial sums (vectorises on the CPU; the order
/// is part of the definition, so the GPU reproduces it).
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let mut acc = [0.0f32; 8];
    let full = n - n % 8;
    let mut i = 0;
    while i < full {
        for l in 0..8 {
            acc[l] += a[i + l] * b[i + l];
        }
        i += 8;
    }
    let mut tail = 0.0f32;
    while i < n {
        tail += a[i] * b[i];
        i += 1;
    }
    ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7])) + tail
}

/// In place: x ← SiLU(x), keeping SiLU'(x) in `grad` when given.
#[inline(always)]
pub fn silu_in_place(x: &mut [f32], grad: Option<&mut [f32]>) {
    match grad {
        Some(grad) => {
            for (v, g) in x.iter_mut().zip(grad.iter_mut()) {
                let (s, ds) = crate::math::silu_and_grad(*v);
                *v = s;
                *g = ds;
            }
        }
        None => {
            for v in x.iter_mut() {
                *v = crate::math::silu(*v);
            }
        }
    }
}

/// Splits `scratch` into consecutive slices of the given lengths.
#[inline(always)]
pub fn split_scratch<'a, const N: usize>(mut scratch: &'a mut [f32], lengths: [usize; N]) -> [&'a mut [f32]; N] {
    let mut parts: [&'a mut [f32]; N] = core::array::from_fn(|_| &mut [][..]);
    for (part, len) in parts.iter_mut().zip(lengths) {
        let (head, tail) = scratch.split_at_mut(len);
        *part = head;
        scratch = tail;
    }
    parts
}
