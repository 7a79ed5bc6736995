//! Derive macros for courier. Use them through the `courier` facade (`courier::Ipc`).
//!
//! `#[derive(Ipc)]` on a `#[repr(C)]` struct or a `#[repr(C)]`/`#[repr(u8..u64)]` enum `Foo`
//! implements `courier::flat::IpcSafe` for it and adds:
//! - `type IpcFoo = courier::flat::Page<Foo>` (page-aligned, page-padded, `Deref` to `Foo`);
//! - `Foo::into_ipc(self) -> IpcFoo`, `Foo::from_ipc(IpcFoo) -> Foo`, `Foo::signature() -> u64`;
//! - a hidden mirror type with `zerocopy`'s `TryFromBytes`, through which received bytes are
//!   validated.
//!
//! The generated code names only `::courier::flat` (override with
//! `#[ipc(crate = "path::to::flat")]`), so a crate that depends on `courier` alone can use it.

mod ipc;
mod opcode;
mod service;

use syn::{parse_macro_input, DeriveInput, Error, Path};

/// The path a derive's `#[<attr>(crate = "...")]` gives for the module its generated code
/// names, or `default`.
fn crate_path(input: &DeriveInput, attr: &str, default: Path) -> syn::Result<Path> {
    let mut path = default;
    for a in &input.attrs {
        if !a.path().is_ident(attr) {
            continue;
        }
        a.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                path = lit.parse()?;
                Ok(())
            } else {
                Err(meta.error(format!(
                    "unknown #[{attr}] option; expected `crate = \"path\"`"
                )))
            }
        })?;
    }
    Ok(path)
}

/// Makes a `#[repr(C)]` type IPC-safe and gives it its page-aligned IPC form `IpcName`.
///
/// See the crate docs and `courier::flat`.
///
/// # Examples
///
/// ```
/// use courier::{flat, Ipc};
///
/// #[derive(Ipc, Debug, PartialEq)]
/// #[repr(C)]
/// struct Reading {
///     sensor: flat::String<8>,
///     value: f32,
///     valid: bool,
/// }
///
/// let reading = Reading { sensor: "t0".try_into().unwrap(), value: 21.5, valid: true };
/// let mut ipc: IpcReading = reading.into_ipc();
/// let signature = Reading::signature();
/// let received = IpcReading::from_slice(ipc.as_bytes(), signature).unwrap();
/// assert_eq!(received.sensor, "t0");
/// assert_eq!(Reading::from_ipc(ipc).value, 21.5);
/// ```
///
/// A type without `#[repr(C)]` is refused:
///
/// ```compile_fail
/// #[derive(courier::Ipc)]
/// struct Loose {
///     value: u32,
/// }
/// ```
#[proc_macro_derive(Ipc, attributes(ipc))]
pub fn derive_ipc(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    ipc::expand(&input)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// flatipc's other derive name, for the types it marks `IpcSafe` (field types of `Ipc`
/// types): the same derive as [`macro@Ipc`], so a flatipc type ports by changing the path.
///
/// # Examples
///
/// ```
/// #[derive(courier::IpcSafe, Clone, Copy)]
/// #[repr(C)]
/// struct Reading {
///     sensor: u16,
///     value: u32,
/// }
///
/// #[derive(courier::Ipc)]
/// #[repr(C)]
/// struct Report {
///     reading: Reading,
/// }
///
/// let ipc = Report { reading: Reading { sensor: 1, value: 42 } }.to_ipc();
/// assert_eq!(ipc.reading.value, 42);
/// ```
#[proc_macro_derive(IpcSafe, attributes(ipc))]
pub fn derive_ipc_safe(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    derive_ipc(input)
}

/// Makes a field-less enum the opcodes of scalar messages, as `num_derive`'s
/// `FromPrimitive` + `ToPrimitive` do for Xous servers: implements `courier::opcode::Opcode`,
/// `From<Op> for u32` and `TryFrom<u32> for Op` (error: `courier::opcode::UnknownOpcode`).
/// Every discriminant must fit in a `u32` (checked at compile time).
///
/// # Examples
///
/// ```
/// use courier::opcode::{Opcode, UnknownOpcode};
///
/// #[derive(courier::Opcode, Debug, PartialEq)]
/// enum Op {
///     Add = 1,
///     Clear,
///     Shutdown = 255,
/// }
///
/// assert_eq!(u32::from(Op::Clear), 2);
/// assert_eq!(Op::try_from(255), Ok(Op::Shutdown));
/// assert_eq!(Op::try_from(3), Err(UnknownOpcode(3)));
/// assert_eq!(Op::from_u32(1), Some(Op::Add));
/// ```
///
/// A variant with fields is refused:
///
/// ```compile_fail
/// #[derive(courier::Opcode)]
/// enum Op {
///     Add(u32),
/// }
/// ```
#[proc_macro_derive(Opcode, attributes(opcode))]
pub fn derive_opcode(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    opcode::expand(&input)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// Turns a trait into a service: the trait, a client `FooClient` with one method per trait
/// method, and a server `FooServer` that serves an implementation, over `courier::local` (one
/// process) or `courier::shm` (processes on one host). See `courier::service` for the method
/// kinds, the wire format and the interface check.
///
/// # Examples
///
/// ```
/// #[courier::service]
/// pub trait Counter {
///     /// Adds `n`; fails past `limit`.
///     fn add(&self, n: u64, limit: u64) -> Result<u64, u8>;
/// }
///
/// struct Total(std::sync::atomic::AtomicU64);
///
/// impl Counter for Total {
///     fn add(&self, n: u64, limit: u64) -> Result<u64, u8> {
///         use std::sync::atomic::Ordering;
///         let now = self.0.fetch_add(n, Ordering::SeqCst) + n;
///         if now > limit { Err(1) } else { Ok(now) }
///     }
/// }
///
/// let (client, server) = CounterClient::pair();
/// let worker = std::thread::spawn(move || server.serve(Total(Default::default())));
/// assert_eq!(client.add(2, 10), Ok(2));
/// assert_eq!(client.add(9, 10), Err(courier::Error::App(1)));
/// drop(client);
/// worker.join().unwrap().unwrap();
/// ```
#[proc_macro_attribute]
pub fn service(
    attr: proc_macro::TokenStream,
    item: proc_macro::TokenStream,
) -> proc_macro::TokenStream {
    let item = parse_macro_input!(item as syn::ItemTrait);
    service::expand(attr.into(), item)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}
