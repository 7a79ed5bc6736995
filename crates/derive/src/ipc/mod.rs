//! `#[derive(Ipc)]`: the flat type's checks, mirror, signature and page form.
//!
//! The layers, from the bottom: [`repr`] reads `#[repr(...)]` and refuses the layouts that
//! cannot be checked; [`shape`] refuses field types that can never cross and makes the
//! per-field code; [`structs`] and [`enums`] make the [`Parts`] that depend on the kind of
//! type; [`expand`] parses the input, then assembles the parts into the impls and the alias.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};
use syn::{Data, DeriveInput, Error, Generics, Ident, Path};

mod enums;
mod repr;
mod shape;
mod structs;

use repr::Repr;

/// What both kinds of type share while their parts are made: the names and attributes of the
/// generated items.
pub(super) struct Ctx<'a> {
    /// The path of `courier::flat` (or `#[ipc(crate = ...)]`).
    p: &'a Path,
    /// The type's name.
    name: &'a Ident,
    /// The type's visibility.
    vis: &'a syn::Visibility,
    /// The mirror type's name.
    mirror: &'a Ident,
    /// The mirror's attributes (zerocopy's derives, the type's `repr`).
    mirror_attrs: &'a TokenStream,
    /// The generics of the impls, bounds included.
    impl_generics: &'a TokenStream,
    /// The where clause, with an `IpcSafe` bound on every type parameter.
    where_clause: &'a TokenStream,
}

/// The parts of the expansion that depend on the kind of type (struct or enum).
pub(super) struct Parts {
    /// The mirror type (same layout, fields replaced by their mirrors), for zerocopy.
    mirror_def: TokenStream,
    /// An enum's tag type (nothing for a struct).
    tag_def: TokenStream,
    /// The `SIGNATURE` expression: a hash of the layout.
    signature: TokenStream,
    /// The `HAS_PADDING` expression.
    has_padding: TokenStream,
    /// The `NEEDS_CHECK` expression.
    needs_check: TokenStream,
    /// The body of `check` after the mirror is bound: every field's own check.
    check_body: TokenStream,
    /// The body of `zero_padding`.
    zero_body: TokenStream,
}

/// Expands `#[derive(Ipc)]` on `input`: the mirror type, the `IpcFoo` alias, and (in an
/// anonymous const) the tag type, the `IpcSafe` impl and `into_ipc`/`from_ipc`/`signature`.
pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let p = parse_crate_path(input)?;
    let repr = Repr::parse(input)?;
    let name = &input.ident;
    let mirror = format_ident!("__CourierIpcMirror{}", name);
    let generics = ipc_generics(&input.generics, &p);
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
    let mirror_attrs = mirror_attrs(&p, &repr);
    let impl_generics = quote!(#impl_generics);
    let where_clause = quote!(#where_clause);
    let cx = Ctx {
        p: &p,
        name,
        vis: &input.vis,
        mirror: &mirror,
        mirror_attrs: &mirror_attrs,
        impl_generics: &impl_generics,
        where_clause: &where_clause,
    };
    let parts =
        match &input.data {
            Data::Union(_) => return Err(Error::new(
                name.span(),
                "#[derive(Ipc)] does not support unions: which field is valid cannot be checked",
            )),
            Data::Struct(s) => structs::parts(&cx, &repr, s)?,
            Data::Enum(e) => enums::parts(&cx, &repr, e)?,
        };
    Ok(assemble(input, &cx, &quote!(#ty_generics), parts))
}

/// The path given by `#[ipc(crate = "...")]`, or `::courier::flat`.
fn parse_crate_path(input: &DeriveInput) -> syn::Result<Path> {
    crate::crate_path(input, "ipc", syn::parse_quote!(::courier::flat))
}

/// The type's generics with, in the where clause, an `IpcSafe` bound on every type parameter:
/// every type parameter must itself be IPC-safe.
fn ipc_generics(generics: &Generics, p: &Path) -> Generics {
    let mut generics = generics.clone();
    let type_params: Vec<Ident> = generics.type_params().map(|t| t.ident.clone()).collect();
    let where_clause = generics.make_where_clause();
    for t in type_params {
        where_clause
            .predicates
            .push(syn::parse_quote!(#t: #p::IpcSafe));
    }
    generics
}

/// The mirror's attributes: hidden, zerocopy's derives (through the flat crate's re-export)
/// and the type's own `repr` attributes.
fn mirror_attrs(p: &Path, repr: &Repr) -> TokenStream {
    let repr_attrs = &repr.attrs;
    let zc = quote!(#p::__private::zerocopy);
    let zc_str = format!("{}", quote!(#zc)).replace(' ', "");
    quote! {
        #[doc(hidden)]
        #[allow(non_camel_case_types, missing_docs, dead_code, clippy::all)]
        #[derive(#zc::TryFromBytes, #zc::KnownLayout, #zc::Immutable)]
        #[zerocopy(crate = #zc_str)]
        #(#repr_attrs)*
    }
}

/// The `IpcFoo` alias of `Page<Foo>`, with the type's parameters (a type alias takes no
/// bounds).
fn alias_def(input: &DeriveInput, p: &Path) -> TokenStream {
    let name = &input.ident;
    let vis = &input.vis;
    let alias = format_ident!("Ipc{}", name);
    let alias_params = input.generics.params.iter().map(|param| match param {
        syn::GenericParam::Type(t) => {
            let ident = &t.ident;
            quote!(#ident)
        }
        syn::GenericParam::Lifetime(l) => {
            let lt = &l.lifetime;
            quote!(#lt)
        }
        syn::GenericParam::Const(c) => {
            let ident = &c.ident;
            let ty = &c.ty;
            quote!(const #ident: #ty)
        }
    });
    let alias_params = quote!(<#(#alias_params),*>);
    let (_, plain_ty_generics, _) = input.generics.split_for_impl();
    let alias_doc = format!(
        "The page-aligned IPC form of [`{name}`] (`courier::flat::Page<{name}>`), generated by `#[derive(Ipc)]`."
    );

    // A hidden type's alias is hidden too (the wire enums of `#[courier::service]`).
    let hidden = input
        .attrs
        .iter()
        .any(|a| a.path().is_ident("doc") && a.to_token_stream().to_string().contains("hidden"))
        .then(|| quote!(#[doc(hidden)]));
    quote! {
        #[doc = #alias_doc]
        #hidden
        #[allow(dead_code, non_camel_case_types)]
        #vis type #alias #alias_params = #p::Page<#name #plain_ty_generics>;
    }
}

/// The whole expansion: the mirror, the `IpcFoo` alias, and in an anonymous const the tag,
/// the `IpcSafe` impl and the inherent methods. `ty_generics` are the type's own parameters.
fn assemble(
    input: &DeriveInput,
    cx: &Ctx<'_>,
    ty_generics: &TokenStream,
    parts: Parts,
) -> TokenStream {
    let Ctx {
        p,
        name,
        vis,
        mirror,
        impl_generics,
        where_clause,
        ..
    } = cx;
    let Parts {
        mirror_def,
        tag_def,
        signature,
        has_padding,
        needs_check,
        check_body,
        zero_body,
    } = parts;
    let alias_def = alias_def(input, p);
    quote! {
        #mirror_def

        #alias_def

        #[allow(clippy::all, unused_variables, unused_mut)]
        const _: () = {
            #tag_def

            // SAFETY (for the reader of the expansion): the mirror is the same `repr` with the
            // same fields in the same order, each replaced by its `IpcSafe::Mirror` (same layout);
            // `zero_padding` records every live field's range (and the tag's) before zeroing the
            // gaps between them.
            unsafe impl #impl_generics #p::IpcSafe for #name #ty_generics #where_clause {
                type Mirror = #mirror #ty_generics;
                const SIGNATURE: u64 = #signature;
                const HAS_PADDING: bool = #has_padding;
                const NEEDS_CHECK: bool = #needs_check;

                fn check(
                    __mirror: &Self::Mirror,
                    __bytes: &[u8],
                ) -> ::core::result::Result<(), #p::FlatError> {
                    if !<Self as #p::IpcSafe>::NEEDS_CHECK {
                        return ::core::result::Result::Ok(());
                    }
                    let __base = #p::__private::address(__mirror);
                    #check_body
                    ::core::result::Result::Ok(())
                }

                #[inline]
                fn zero_padding(&mut self) {
                    #zero_body
                }
            }

            impl #impl_generics #name #ty_generics #where_clause {
                /// Moves this value into its page-aligned IPC form.
                #[inline]
                #[allow(dead_code)]
                #vis fn into_ipc(self) -> #p::Page<Self> {
                    #p::Page::new(self)
                }

                /// flatipc's name for [`into_ipc`](Self::into_ipc): moves this value into its
                /// page-aligned IPC form.
                #[inline]
                #[allow(dead_code)]
                #vis fn to_ipc(self) -> #p::Page<Self> {
                    #p::Page::new(self)
                }

                /// Moves a value back out of its IPC form.
                #[inline]
                #[allow(dead_code)]
                #vis fn from_ipc(ipc: #p::Page<Self>) -> Self {
                    ipc.into_inner()
                }

                /// The layout signature of this type (see `courier::flat::IpcSafe::SIGNATURE`).
                #[inline]
                #[allow(dead_code)]
                #vis const fn signature() -> u64 {
                    <Self as #p::IpcSafe>::SIGNATURE
                }
            }
        };
    }
}
