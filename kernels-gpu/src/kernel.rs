//! Typed kernel handles. [`kernels!`](crate::kernels) writes each `extern "ptx-kernel"`
//! entry point of the PTX module and, beside it, a [`Kernel`] constant that names the
//! entry together with the type of its argument struct. The host launches through
//! those constants, so a kernel's name and its argument type are written once, here,
//! and a launch with the wrong argument struct does not compile.

use core::marker::PhantomData;

/// The argument struct of a kernel: passed by value as the kernel's one parameter.
///
/// # Safety
/// An implementor is `#[repr(C)]` (so host and device agree on its layout) and holds
/// only plain values and device addresses: nothing with a destructor, no host
/// references. Launching with one is still `unsafe` (its addresses must be live).
pub unsafe trait KernelArgs: Copy {}

/// An entry point of the PTX module and the type of its argument struct. Only
/// [`kernels!`](crate::kernels) makes these, next to the entry point it names.
pub struct Kernel<A: KernelArgs> {
    name: &'static str,
    args: PhantomData<fn(A)>,
}

impl<A: KernelArgs> Kernel<A> {
    #[doc(hidden)]
    pub const fn new(name: &'static str) -> Self {
        Kernel { name, args: PhantomData }
    }

    /// The entry point's symbol in the PTX module.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

impl<A: KernelArgs> Clone for Kernel<A> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<A: KernelArgs> Copy for Kernel<A> {}

impl<A: KernelArgs> PartialEq for Kernel<A> {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl<A: KernelArgs> Eq for Kernel<A> {}

impl<A: KernelArgs> core::fmt::Debug for Kernel<A> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name)
    }
}

/// Writes, for each `HANDLE = entry(Args) => body;`:
/// - `pub const HANDLE: Kernel<Args>`, the host's handle of the entry (every target);
/// - on `nvptx64`, `#[no_mangle] pub extern "ptx-kernel" fn entry(args: Args)` that
///   calls `body(&args)`.
///
/// `body` is an `unsafe fn(&Args)` (a kernel body of this crate, const generics
/// given), and its attributes (doc comments) go on both items.
#[macro_export]
macro_rules! kernels {
    ($($(#[$attr:meta])* $handle:ident = $entry:ident($args:ty) => $body:expr;)*) => {$(
        $(#[$attr])*
        pub const $handle: $crate::kernel::Kernel<$args> = $crate::kernel::Kernel::new(stringify!($entry));

        $(#[$attr])*
        #[cfg(target_arch = "nvptx64")]
        #[no_mangle]
        pub extern "ptx-kernel" fn $entry(args: $args) {
            // SAFETY: the host launches this entry only through its `Kernel` handle,
            // whose launch contract (`Gpu::launch` in mlff-host) is that every address
            // in `args` points to a live device buffer at least as long as the kernel
            // reads given the other fields of `args`.
            unsafe { ($body)(&args) }
        }
    )*};
}
