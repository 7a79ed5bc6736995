//! The layout parts of `#[derive(Ipc)]` on a `#[repr(C)]` or `#[repr(uN)]` enum.

use super::repr::Repr;
use super::shape::Shape;
use super::{Ctx, Parts};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{Error, Ident, Variant};

/// The mirror, tag, signature, padding and check code of an enum.
pub(super) fn parts(cx: &Ctx<'_>, repr: &Repr, e: &syn::DataEnum) -> syn::Result<Parts> {
    repr.check_enum(cx.name)?;
    if e.variants.is_empty() {
        return Err(Error::new(
            cx.name.span(),
            "#[derive(Ipc)] needs at least one variant",
        ));
    }
    let mut variants = Vec::new();
    for v in &e.variants {
        variants.push((v, Shape::new(&v.fields)?));
    }
    let en = Enum {
        cx,
        repr,
        tag: format_ident!("__CourierIpcTag{}", cx.name),
        variants,
    };
    Ok(Parts {
        mirror_def: en.mirror_def(),
        tag_def: en.tag_def(),
        signature: en.signature(),
        has_padding: en.has_padding(),
        needs_check: en.needs_check(),
        check_body: en.check_body(),
        zero_body: en.zero_body(),
    })
}

/// An enum being expanded: what every part is made from.
struct Enum<'a> {
    /// The names and attributes shared with the rest of the expansion.
    cx: &'a Ctx<'a>,
    /// The enum's repr (C or an integer).
    repr: &'a Repr,
    /// The name of the tag type, a fieldless enum with the same variants and discriminants.
    tag: Ident,
    /// Each variant with its fields.
    variants: Vec<(&'a Variant, Shape)>,
}

impl Enum<'_> {
    /// The fieldless tag enum, with the enum's discriminants and tag repr.
    fn tag_def(&self) -> TokenStream {
        let tag = &self.tag;
        let tag_repr = match &self.repr.int {
            Some(int) => quote!(#[repr(#int)]),
            None => quote!(#[repr(C)]),
        };
        let tag_variants = self.variants.iter().map(|(v, _)| {
            let ident = &v.ident;
            match &v.discriminant {
                Some((_, expr)) => quote!(#ident = #expr),
                None => quote!(#ident),
            }
        });
        quote! {
            #[allow(dead_code, non_camel_case_types, clippy::all)]
            #tag_repr
            enum #tag { #(#tag_variants),* }
        }
    }

    /// The mirror enum: the same variants and discriminants, fields replaced by their mirrors.
    fn mirror_def(&self) -> TokenStream {
        let Ctx {
            p,
            vis,
            mirror,
            mirror_attrs,
            impl_generics,
            where_clause,
            ..
        } = self.cx;
        let mirror_variants = self.variants.iter().map(|(v, shape)| {
            let ident = &v.ident;
            let body = shape.mirror_body(p);
            match &v.discriminant {
                Some((_, expr)) => quote!(#ident #body = #expr),
                None => quote!(#ident #body),
            }
        });
        quote! {
            #mirror_attrs
            #vis enum #mirror #impl_generics #where_clause { #(#mirror_variants),* }
        }
    }

    /// The `SIGNATURE` expression: size, alignment, repr, tag size, then per variant its tag
    /// value, its field sizes and its fields' signatures.
    fn signature(&self) -> TokenStream {
        let (p, tag) = (self.cx.p, &self.tag);
        // 1: `repr(C)` (tag, then a union of the variants); 2: `repr(uN)` (a union of
        // `repr(C)` structs that each start with the tag).
        let repr_code: u64 = if self.repr.c { 1 } else { 2 };
        let nvariants = self.variants.len();
        let variant_sigs = self.variants.iter().map(|(v, shape)| {
            let ident = &v.ident;
            let n = shape.fields.len();
            let tys = shape.types();
            quote! {
                .word(#tag::#ident as i64 as u64)
                .usize(#n)
                #( .usize(::core::mem::size_of::<#tys>()) )*
            }
        });
        let variant_sigs2 = self.variants.iter().map(|(_, shape)| {
            let tys = shape.types();
            quote!(#( .word(<#tys as #p::IpcSafe>::SIGNATURE) )*)
        });
        quote! {
            #p::SignatureHasher::new(#p::signature::kind::ENUM)
                .usize(::core::mem::size_of::<Self>())
                .word(#repr_code)
                .usize(::core::mem::size_of::<#tag>())
                .usize(#nvariants)
                #( #variant_sigs #variant_sigs2 )*
                .finish()
        }
    }

    /// The `HAS_PADDING` expression: some variant's tag and fields do not fill the enum, or a
    /// field has padding of its own.
    fn has_padding(&self) -> TokenStream {
        let (p, tag) = (self.cx.p, &self.tag);
        let pads = self.variants.iter().map(|(_, shape)| {
            let sum = shape.size_sum();
            let any = shape.any(p, "HAS_PADDING");
            quote!((::core::mem::size_of::<#tag>() + #sum != ::core::mem::size_of::<Self>() || #any))
        });
        quote!(false #(|| #pads)*)
    }

    /// The `NEEDS_CHECK` expression: some field of some variant needs a check.
    fn needs_check(&self) -> TokenStream {
        let p = self.cx.p;
        let checks_any = self
            .variants
            .iter()
            .map(|(_, shape)| shape.any(p, "NEEDS_CHECK"));
        quote!(false #(|| #checks_any)*)
    }

    /// The body of `check`: a match on the mirror that checks the fields of its variant.
    fn check_body(&self) -> TokenStream {
        let (p, mirror) = (self.cx.p, self.cx.mirror);
        let check_arms = self.variants.iter().map(|(v, shape)| {
            let ident = &v.ident;
            let pat = shape.pattern();
            let checks = shape.check_fields(p);
            quote!(#mirror::#ident #pat => { #checks })
        });
        quote! {
            match __mirror { #(#check_arms)* }
        }
    }

    /// The body of `zero_padding`: the tag's and the live variant's field ranges are recorded
    /// (zeroing each field's own padding), then the gaps between them are zeroed.
    fn zero_body(&self) -> TokenStream {
        let (p, tag) = (self.cx.p, &self.tag);
        let max_fields = self
            .variants
            .iter()
            .map(|(_, s)| s.fields.len())
            .max()
            .unwrap_or(0);
        let k = max_fields + 1;
        let zero_arms = self.variants.iter().map(|(v, shape)| {
            let ident = &v.ident;
            let pat = shape.pattern();
            let zeroes = shape.zero_fields(p);
            quote!(Self::#ident #pat => { #zeroes })
        });
        quote! {
            if !<Self as #p::IpcSafe>::HAS_PADDING {
                return;
            }
            let __base = #p::__private::address(&*self);
            let mut __ranges = [(0usize, 0usize); #k];
            __ranges[0] = (0, ::core::mem::size_of::<#tag>());
            let mut __n = 1usize;
            match &mut *self { #(#zero_arms)* }
            // Each variant is laid out as `repr(C)`: the tag, then its fields in order,
            // so the ranges are already sorted by offset.
            unsafe { #p::__private::zero_gaps_sorted(self, &__ranges[..__n]) }
        }
    }
}
