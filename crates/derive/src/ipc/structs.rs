//! The layout parts of `#[derive(Ipc)]` on a `#[repr(C)]` struct.

use super::repr::Repr;
use super::shape::{Shape, Style};
use super::{Ctx, Parts};
use proc_macro2::TokenStream;
use quote::{format_ident, quote};
use syn::{Error, Path};

/// The mirror, signature, padding and check code of a struct.
pub(super) fn parts(cx: &Ctx<'_>, repr: &Repr, s: &syn::DataStruct) -> syn::Result<Parts> {
    let Ctx {
        p,
        name,
        vis,
        mirror,
        mirror_attrs,
        impl_generics,
        where_clause,
    } = cx;
    repr.check_struct(name)?;
    let shape = Shape::new(&s.fields)?;
    if shape.fields.is_empty() {
        return Err(Error::new(
            name.span(),
            "#[derive(Ipc)] needs at least one field: an IPC type must not be zero-sized",
        ));
    }
    let body = shape.mirror_body(p);
    let semi = match shape.style {
        Style::Named => quote!(),
        _ => quote!(;),
    };
    let mirror_def = quote! {
        #mirror_attrs
        #vis struct #mirror #impl_generics #where_clause #body #semi
    };
    let size_sum = shape.size_sum();
    let any_pad = shape.any(p, "HAS_PADDING");
    let pat = shape.pattern();
    let checks = shape.check_fields(p);
    Ok(Parts {
        mirror_def,
        tag_def: quote!(),
        signature: signature(p, &shape),
        has_padding: quote!(::core::mem::size_of::<Self>() != #size_sum || #any_pad),
        needs_check: shape.any(p, "NEEDS_CHECK"),
        check_body: quote! {
            let #mirror #pat = __mirror;
            #checks
        },
        zero_body: zero_body(p, &shape),
    })
}

/// The `SIGNATURE` expression: size, then each field's offset and signature (alignment is left
/// out: see `courier::flat`'s Signatures).
fn signature(p: &Path, shape: &Shape) -> TokenStream {
    let n = shape.fields.len();
    let members = shape.fields.iter().map(|(m, _)| m);
    let tys = shape.types();
    quote! {
        #p::SignatureHasher::new(#p::signature::kind::STRUCT)
            .usize(::core::mem::size_of::<Self>())
            .usize(#n)
            #(
                .usize(::core::mem::offset_of!(Self, #members))
                .word(<#tys as #p::IpcSafe>::SIGNATURE)
            )*
            .finish()
    }
}

/// The body of `zero_padding`: the fields' own padding first, then the gaps between fields.
fn zero_body(p: &Path, shape: &Shape) -> TokenStream {
    let pat = shape.pattern();
    let n = shape.fields.len();
    let recurse = shape.types().enumerate().map(|(i, ty)| {
        let f = format_ident!("__f{}", i);
        quote! {
            if <#ty as #p::IpcSafe>::HAS_PADDING {
                <#ty as #p::IpcSafe>::zero_padding(#f);
            }
        }
    });
    let members = shape.fields.iter().map(|(m, _)| m);
    let tys = shape.types();
    // `repr(C)`: fields lie in declaration order, so the constant ranges are sorted.
    quote! {
        if !<Self as #p::IpcSafe>::HAS_PADDING {
            return;
        }
        {
            let Self #pat = &mut *self;
            #(#recurse)*
        }
        let __ranges: [(usize, usize); #n] = [
            #((::core::mem::offset_of!(Self, #members), ::core::mem::size_of::<#tys>())),*
        ];
        unsafe { #p::__private::zero_gaps_sorted(self, &__ranges) }
    }
}
