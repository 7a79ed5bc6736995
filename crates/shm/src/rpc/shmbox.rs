//! [`ShmBox`]: a value of a flat type in shared memory, lent to a server with its type's
//! signature (flatipc's `IpcFoo` lent with `lend` / `lend_mut`).

use super::buf::ShmBuf;
use crate::error::ShmError;
use courier_core::flat::{FlatError, IpcSafe};
use std::marker::PhantomData;
use std::mem::size_of;

/// A value of the flat type `T` in its own shared-memory buffer, to lend as it is:
/// [`Client::lend_box`](crate::Client::lend_box) (the server reads it) and
/// [`Client::lend_box_mut`](crate::Client::lend_box_mut) (the server changes it in place).
/// `T`'s signature travels with the lend, and the server reads the value checked
/// ([`ReplyContext::lent_value`](crate::ReplyContext::lent_value),
/// [`update_lent`](crate::ReplyContext::update_lent)).
///
/// The value is read by copy and checked ([`get`](Self::get)), never referenced in place:
/// the server could write the bytes while this process reads them.
///
/// # Examples
///
/// flatipc's example, across processes: the server increments 42 to 43 in place.
///
/// ```no_run
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// use courier_shm::{Client, ShmBox};
/// # #[derive(courier_derive::Ipc, Clone, Copy)]
/// # #[ipc(crate = "courier_core::flat")]
/// # #[repr(C)]
/// # struct SimpleValue { inner: u32 }
/// use std::time::Duration;
///
/// let client = Client::<u32, (), ()>::connect("incrementer", Duration::from_secs(1))?;
/// let mut value = ShmBox::new(SimpleValue { inner: 42 })?;
/// client.lend_box_mut(0x1234, &mut value)?;
/// assert_eq!(value.get()?.inner, 43);
/// # Ok(())
/// # }
/// ```
pub struct ShmBox<T: IpcSafe> {
    buf: ShmBuf,
    _type: PhantomData<T>,
}

impl<T: IpcSafe> ShmBox<T> {
    /// `value` in a new shared-memory buffer (its padding zeroed).
    ///
    /// # Errors
    ///
    /// What creating the buffer reports ([`ShmBuf::new`]).
    pub fn new(value: T) -> Result<Self, ShmError> {
        let mut buf = ShmBuf::new(size_of::<T>().max(1))?;
        buf.view_mut()
            .write(0, value)
            .expect("the buffer holds size_of::<T>() bytes");
        Ok(ShmBox {
            buf,
            _type: PhantomData,
        })
    }

    /// The value now: its bytes copied out, then checked.
    ///
    /// # Errors
    ///
    /// [`FlatError::InvalidValue`] (or another content error) if a server wrote bytes that
    /// are not a `T`.
    pub fn get(&self) -> Result<T, FlatError> {
        self.buf.view().read(0)
    }

    /// Replaces the value (its padding zeroed).
    pub fn set(&mut self, value: T) {
        self.buf
            .view_mut()
            .write(0, value)
            .expect("the buffer holds size_of::<T>() bytes");
    }

    /// The buffer underneath, lent with `T`'s signature by the client's `lend_box` forms.
    pub fn buf(&self) -> &ShmBuf {
        &self.buf
    }

    pub(crate) fn buf_mut(&mut self) -> &mut ShmBuf {
        &mut self.buf
    }
}

impl<T: IpcSafe> std::fmt::Debug for ShmBox<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShmBox")
            .field("type", &std::any::type_name::<T>())
            .field("buf", &self.buf)
            .finish()
    }
}
