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
//!
//! The examples are on the re-exports, `courier::{Ipc, IpcSafe, Opcode, service}`, and run
//! as `courier`'s doc tests: this crate's would need `courier` as a dev-dependency, which a
//! proc-macro crate builds for the host, so a test run would build `courier` and its
//! dependencies twice.

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
#[proc_macro_derive(Ipc, attributes(ipc))]
pub fn derive_ipc(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    ipc::expand(&input)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// flatipc's other derive name, for the types it marks `IpcSafe` (field types of `Ipc`
/// types): the same derive as [`macro@Ipc`], so a flatipc type ports by changing the path.
#[proc_macro_derive(IpcSafe, attributes(ipc))]
pub fn derive_ipc_safe(input: proc_macro::TokenStream) -> proc_macro::TokenStream {
    derive_ipc(input)
}

/// Makes a field-less enum the opcodes of scalar messages, as `num_derive`'s
/// `FromPrimitive` + `ToPrimitive` do for Xous servers: implements `courier::opcode::Opcode`,
/// `From<Op> for u32` and `TryFrom<u32> for Op` (error: `courier::opcode::UnknownOpcode`).
/// Every discriminant must fit in a `u32` (checked at compile time).
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
