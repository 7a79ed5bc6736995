//! `#[derive(Opcode)]`: a field-less enum as the opcodes of scalar messages.
//!
//! For `enum Op { A = 1, B, .. }` it writes `impl Opcode for Op` (to and from `u32` by the
//! discriminants), `From<Op> for u32`, `TryFrom<u32> for Op` with `UnknownOpcode` as the
//! error, and a compile-time check that every discriminant fits in a `u32`.

use proc_macro2::TokenStream;
use quote::quote;
use syn::{Data, DeriveInput, Error, Fields, Path};

/// The expansion, or the error that says why the input is refused.
pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let p = crate_path(input)?;
    let Data::Enum(data) = &input.data else {
        return Err(Error::new_spanned(
            &input.ident,
            "#[derive(Opcode)] needs an enum whose variants are the opcodes",
        ));
    };
    if !input.generics.params.is_empty() {
        return Err(Error::new_spanned(
            &input.generics,
            "#[derive(Opcode)] takes an enum without generic parameters",
        ));
    }
    if data.variants.is_empty() {
        return Err(Error::new_spanned(
            &input.ident,
            "#[derive(Opcode)] needs at least one variant",
        ));
    }
    for v in &data.variants {
        if !matches!(v.fields, Fields::Unit) {
            return Err(Error::new_spanned(
                v,
                "an opcode is a variant without fields: scalar arguments travel in the four words beside it",
            ));
        }
    }
    let name = &input.ident;
    let variants: Vec<_> = data.variants.iter().map(|v| &v.ident).collect();
    let too_wide: Vec<String> = variants
        .iter()
        .map(|v| format!("the opcode of {name}::{v} does not fit in a u32"))
        .collect();
    Ok(quote! {
        const _: () = {
            #(
                ::core::assert!(
                    (#name::#variants as i128) >= 0 && (#name::#variants as i128) <= 0xFFFF_FFFF,
                    #too_wide
                );
            )*
        };

        impl #p::Opcode for #name {
            #[inline]
            fn to_u32(self) -> u32 {
                self as u32
            }

            #[inline]
            fn from_u32(op: u32) -> ::core::option::Option<Self> {
                #(
                    if op == #name::#variants as u32 {
                        return ::core::option::Option::Some(#name::#variants);
                    }
                )*
                ::core::option::Option::None
            }
        }

        impl ::core::convert::From<#name> for u32 {
            #[inline]
            fn from(op: #name) -> u32 {
                <#name as #p::Opcode>::to_u32(op)
            }
        }

        impl ::core::convert::TryFrom<u32> for #name {
            type Error = #p::UnknownOpcode;

            #[inline]
            fn try_from(op: u32) -> ::core::result::Result<Self, #p::UnknownOpcode> {
                <#name as #p::Opcode>::decode(op)
            }
        }
    })
}

/// The path given by `#[opcode(crate = "...")]`, or `::courier::opcode`.
fn crate_path(input: &DeriveInput) -> syn::Result<Path> {
    crate::crate_path(input, "opcode", syn::parse_quote!(::courier::opcode))
}
