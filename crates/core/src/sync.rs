//! The one place that imports atomics and interior mutability.
//!
//! Under `cfg(loom)` every type here comes from [`loom`], so the model checker sees every
//! atomic access and every access to an [`UnsafeCell`]; otherwise they are the `core` types.
//! Nothing else in the crate imports `core::sync::atomic` or `core::cell::UnsafeCell`.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering,
};

#[cfg(all(not(loom), not(feature = "portable-atomic")))]
pub(crate) use core::sync::atomic::{
    fence, AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering,
};

/// With the `portable-atomic` feature the same types come from `portable-atomic`, which
/// provides compare-and-swap on targets without it (thumbv6m-none-eabi) and is a plain
/// re-export of `core`'s atomics where the target has them.
#[cfg(all(not(loom), feature = "portable-atomic"))]
pub(crate) use portable_atomic::{fence, AtomicBool, AtomicU32, AtomicU8, AtomicUsize, Ordering};

/// Spin-loop hint; under loom it yields to the scheduler so spin loops terminate.
#[inline]
pub(crate) fn spin_loop() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

#[cfg(loom)]
pub(crate) use loom::cell::{ConstPtr, MutPtr, UnsafeCell};

/// A shared access to an [`UnsafeCell`]'s contents that loom tracks for as long as it lives.
#[cfg(loom)]
#[inline]
pub(crate) fn const_ptr<T>(cell: &UnsafeCell<T>) -> ConstPtr<T> {
    cell.get()
}

/// A mutable access to an [`UnsafeCell`]'s contents that loom tracks for as long as it lives.
#[cfg(loom)]
#[inline]
pub(crate) fn mut_ptr<T>(cell: &UnsafeCell<T>) -> MutPtr<T> {
    cell.get_mut()
}

/// Without loom, a tracked shared access is just the raw pointer (loom's `ConstPtr` API).
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct ConstPtr<T: ?Sized>(*const T);

#[cfg(not(loom))]
impl<T: ?Sized> ConstPtr<T> {
    /// Dereferences the pointer.
    ///
    /// # Safety
    ///
    /// As for `&*ptr`: the contents are initialised and nothing writes them while the returned
    /// reference lives.
    #[inline]
    pub(crate) unsafe fn deref(&self) -> &T {
        // SAFETY: forwarded to the caller.
        unsafe { &*self.0 }
    }
}

/// Without loom, a tracked mutable access is just the raw pointer (loom's `MutPtr` API).
#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct MutPtr<T: ?Sized>(*mut T);

#[cfg(not(loom))]
impl<T: ?Sized> MutPtr<T> {
    /// Dereferences the pointer.
    ///
    /// # Safety
    ///
    /// As for `&mut *ptr`: the contents are initialised and nothing else reads or writes them
    /// while the returned reference lives.
    #[inline]
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn deref(&self) -> &mut T {
        // SAFETY: forwarded to the caller.
        unsafe { &mut *self.0 }
    }
}

/// A shared access to an [`UnsafeCell`]'s contents (tracked under loom).
#[cfg(not(loom))]
#[inline]
pub(crate) fn const_ptr<T>(cell: &UnsafeCell<T>) -> ConstPtr<T> {
    ConstPtr(cell.get())
}

/// A mutable access to an [`UnsafeCell`]'s contents (tracked under loom).
#[cfg(not(loom))]
#[inline]
pub(crate) fn mut_ptr<T>(cell: &UnsafeCell<T>) -> MutPtr<T> {
    MutPtr(cell.get())
}

/// `core::cell::UnsafeCell` with loom's closure-based API, so code is written once for both.
#[cfg(not(loom))]
#[derive(Debug)]
#[repr(transparent)]
pub(crate) struct UnsafeCell<T: ?Sized>(core::cell::UnsafeCell<T>);

#[cfg(not(loom))]
impl<T> UnsafeCell<T> {
    /// Wraps `data`.
    #[inline]
    pub(crate) const fn new(data: T) -> Self {
        Self(core::cell::UnsafeCell::new(data))
    }
}

#[cfg(not(loom))]
impl<T: ?Sized> UnsafeCell<T> {
    /// Gives `f` a shared raw pointer to the contents.
    #[inline]
    pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
        f(self.0.get())
    }

    /// Gives `f` a mutable raw pointer to the contents.
    #[inline]
    pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
        f(self.0.get())
    }

    /// A raw pointer to the contents (not tracked by loom; only for `const` contexts and
    /// places that hand the pointer straight to a tracked access).
    #[inline]
    pub(crate) fn get(&self) -> *mut T {
        self.0.get()
    }
}
