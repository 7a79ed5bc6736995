//! The layout parts of `#[derive(Ipc)]` on a `#[repr(C)]` or `#[repr(uN)]` enum.

use super::{Ctx, Parts, Repr, Shape};
use quote::{format_ident, quote};
use syn::Error;

/// The mirror, tag, signature, padding and check code of an enum.
pub(super) fn parts(cx: &Ctx<'_>, repr: &Repr, e: &syn::DataEnum) -> syn::Result<Parts> {
    let Ctx {
        p,
        name,
        vis,
        mirror,
        mirror_attrs,
        impl_generics,
        where_clause,
    } = cx;
    if !repr.c && repr.int.is_none() {
        return Err(Error::new(
            name.span(),
            "#[derive(Ipc)] needs #[repr(C)], #[repr(u8)] (or another fixed-width integer) on an enum: the default layout may differ between builds",
        ));
    }
    if repr.c && repr.int.is_some() {
        return Err(Error::new(
            name.span(),
            "#[derive(Ipc)]: use #[repr(C)] or #[repr(u8)] (or another fixed-width integer) on an enum, not both: zerocopy cannot validate the combined layout",
        ));
    }
    if e.variants.is_empty() {
        return Err(Error::new(
            name.span(),
            "#[derive(Ipc)] needs at least one variant",
        ));
    }
    let tag = format_ident!("__CourierIpcTag{}", name);
    let tag_repr = match &repr.int {
        Some(int) => quote!(#[repr(#int)]),
        None => quote!(#[repr(C)]),
    };
    // 1: `repr(C)` (tag, then a union of the variants); 2: `repr(uN)` (a union of
    // `repr(C)` structs that each start with the tag).
    let repr_code: u64 = if repr.c { 1 } else { 2 };
    let mut shapes = Vec::new();
    for v in &e.variants {
        shapes.push((v, Shape::new(&v.fields)?));
    }
    let tag_variants = shapes.iter().map(|(v, _)| {
        let ident = &v.ident;
        match &v.discriminant {
            Some((_, expr)) => quote!(#ident = #expr),
            None => quote!(#ident),
        }
    });
    let tag_def = quote! {
        #[allow(dead_code, non_camel_case_types, clippy::all)]
        #tag_repr
        enum #tag { #(#tag_variants),* }
    };
    let mirror_variants = shapes.iter().map(|(v, shape)| {
        let ident = &v.ident;
        let body = shape.mirror_body(p);
        match &v.discriminant {
            Some((_, expr)) => quote!(#ident #body = #expr),
            None => quote!(#ident #body),
        }
    });
    let mirror_def = quote! {
        #mirror_attrs
        #vis enum #mirror #impl_generics #where_clause { #(#mirror_variants),* }
    };
    let nvariants = shapes.len();
    let variant_sigs = shapes.iter().map(|(v, shape)| {
        let ident = &v.ident;
        let n = shape.fields.len();
        let tys = shape.types();
        quote! {
            .word(#tag::#ident as i64 as u64)
            .usize(#n)
            #( .usize(::core::mem::size_of::<#tys>()) )*
        }
    });
    let variant_sigs2 = shapes.iter().map(|(_, shape)| {
        let tys = shape.types();
        quote!(#( .word(<#tys as #p::IpcSafe>::SIGNATURE) )*)
    });
    let signature = quote! {
        #p::SignatureHasher::new(#p::signature::kind::ENUM)
            .usize(::core::mem::size_of::<Self>())
            .usize(::core::mem::align_of::<Self>())
            .word(#repr_code)
            .usize(::core::mem::size_of::<#tag>())
            .usize(#nvariants)
            #( #variant_sigs #variant_sigs2 )*
            .finish()
    };
    let pads = shapes.iter().map(|(_, shape)| {
        let sum = shape.size_sum();
        let any = shape.any(p, "HAS_PADDING");
        quote!((::core::mem::size_of::<#tag>() + #sum != ::core::mem::size_of::<Self>() || #any))
    });
    let has_padding = quote!(false #(|| #pads)*);
    let checks_any = shapes.iter().map(|(_, shape)| shape.any(p, "NEEDS_CHECK"));
    let needs_check = quote!(false #(|| #checks_any)*);
    let check_arms = shapes.iter().map(|(v, shape)| {
        let ident = &v.ident;
        let pat = shape.pattern();
        let checks = shape.check_fields(p);
        quote!(#mirror::#ident #pat => { #checks })
    });
    let check_body = quote! {
        match __mirror { #(#check_arms)* }
    };
    let max_fields = shapes
        .iter()
        .map(|(_, s)| s.fields.len())
        .max()
        .unwrap_or(0);
    let k = max_fields + 1;
    let zero_arms = shapes.iter().map(|(v, shape)| {
        let ident = &v.ident;
        let pat = shape.pattern();
        let zeroes = shape.zero_fields(p);
        quote!(Self::#ident #pat => { #zeroes })
    });
    let zero_body = quote! {
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
    };
    Ok(Parts {
        mirror_def,
        tag_def,
        signature,
        has_padding,
        needs_check,
        check_body,
        zero_body,
    })
}
