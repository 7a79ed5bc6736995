//! `#[derive(Ipc)]`: the flat type's checks, mirror, signature and page form.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Error, Fields, Ident, Path, Type};

/// What `#[repr(...)]` said.
#[derive(Default)]
struct Repr {
    c: bool,
    int: Option<Ident>,
    packed: bool,
    transparent: bool,
    /// The full list of repr attributes, copied to the mirror.
    attrs: Vec<syn::Attribute>,
}

fn parse_repr(input: &DeriveInput) -> syn::Result<Repr> {
    let mut repr = Repr::default();
    for attr in &input.attrs {
        if !attr.path().is_ident("repr") {
            continue;
        }
        repr.attrs.push(attr.clone());
        attr.parse_nested_meta(|meta| {
            let Some(ident) = meta.path.get_ident() else {
                return Ok(());
            };
            match ident.to_string().as_str() {
                "C" => repr.c = true,
                "u8" | "u16" | "u32" | "u64" | "i8" | "i16" | "i32" | "i64" => {
                    repr.int = Some(ident.clone())
                }
                "usize" | "isize" | "u128" | "i128" => {
                    return Err(meta.error(
                        "#[derive(Ipc)]: use a fixed-width tag (u8, u16, u32, u64, i8 .. i64)",
                    ))
                }
                "packed" => repr.packed = true,
                "transparent" => repr.transparent = true,
                _ => {}
            }
            if meta.input.peek(syn::token::Paren) {
                let content;
                syn::parenthesized!(content in meta.input);
                let _: TokenStream = content.parse()?;
            }
            Ok(())
        })?;
    }
    Ok(repr)
}

fn parse_crate_path(input: &DeriveInput) -> syn::Result<Path> {
    let mut path: Path = syn::parse_quote!(::courier::flat);
    for attr in &input.attrs {
        if !attr.path().is_ident("ipc") {
            continue;
        }
        attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("crate") {
                let lit: syn::LitStr = meta.value()?.parse()?;
                path = lit.parse()?;
                Ok(())
            } else {
                Err(meta.error("unknown #[ipc] option; expected `crate = \"path\"`"))
            }
        })?;
    }
    Ok(path)
}

/// Rejects, with a clear message, field types that can never be IPC-safe whatever traits exist.
fn check_field_type(ty: &Type) -> syn::Result<()> {
    let what = match ty {
        Type::Array(a) => return check_field_type(&a.elem),
        Type::Paren(p) => return check_field_type(&p.elem),
        Type::Group(g) => return check_field_type(&g.elem),
        Type::Path(path) => return check_path_type(path),
        Type::Ptr(_) => "a raw pointer is an address in the sender's memory",
        Type::Reference(_) => "a reference is an address in the sender's memory",
        Type::BareFn(_) => "a function pointer is an address in the sender's memory",
        Type::TraitObject(_) | Type::ImplTrait(_) => "a trait object has no fixed layout",
        Type::Slice(_) => "a slice has no fixed size; use an array or courier::flat::Vec<T, N>",
        Type::Tuple(_) => "a tuple has no defined layout; use a #[repr(C)] struct",
        Type::Never(_) => "`!` has no values",
        _ => "this type cannot be checked to be IPC-safe",
    };
    Err(Error::new(
        ty.span(),
        format!("#[derive(Ipc)]: this field cannot cross a process boundary: {what}"),
    ))
}

/// Rejects the std types that can never be IPC-safe where the path alone proves which they are
/// (`Box`, a `String` without a capacity, a one-parameter `Vec`, `std::`/`alloc::` paths to
/// them), then checks type arguments recursively. Everything else is left to the `IpcSafe`
/// bound, whose message names the type.
fn check_path_type(path: &syn::TypePath) -> syn::Result<()> {
    let segments = &path.path.segments;
    let Some(last) = segments.last() else {
        return Ok(());
    };
    let first = segments
        .first()
        .map(|s| s.ident.to_string())
        .unwrap_or_default();
    let from_std =
        path.qself.is_none() && segments.len() > 1 && (first == "std" || first == "alloc");
    let type_args: Vec<&Type> = match &last.arguments {
        syn::PathArguments::AngleBracketed(args) => args
            .args
            .iter()
            .filter_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let n_args = match &last.arguments {
        syn::PathArguments::AngleBracketed(args) => args.args.len(),
        _ => 0,
    };
    let what = match last.ident.to_string().as_str() {
        "Box" | "Rc" | "Arc" => Some("a Box, Rc or Arc is a pointer to the sender's heap"),
        "String" if n_args == 0 || from_std => {
            Some("std's String points to the sender's heap; use courier::flat::String<N>")
        }
        "Vec" if n_args == 1 || from_std => {
            Some("std's Vec points to the sender's heap; use courier::flat::Vec<T, N>")
        }
        "Option" if from_std => {
            Some("std's Option has an unspecified layout; use courier::flat::Option<T>")
        }
        _ => None,
    };
    if let Some(what) = what {
        return Err(Error::new(
            path.span(),
            format!("#[derive(Ipc)]: this field cannot cross a process boundary: {what}"),
        ));
    }
    type_args.into_iter().try_for_each(check_field_type)
}

/// One variant (or the struct body): its pattern and field types.
struct Shape {
    /// The path to match on (`Self`, `Self::A`, the mirror, ...) is prepended by the caller.
    fields: Vec<(syn::Member, Type)>,
    style: Style,
}

#[derive(Clone, Copy)]
enum Style {
    Named,
    Unnamed,
    Unit,
}

impl Shape {
    fn new(fields: &Fields) -> syn::Result<Self> {
        let style = match fields {
            Fields::Named(_) => Style::Named,
            Fields::Unnamed(_) => Style::Unnamed,
            Fields::Unit => Style::Unit,
        };
        let mut out = Vec::new();
        for (i, f) in fields.iter().enumerate() {
            check_field_type(&f.ty)?;
            let member = match &f.ident {
                Some(ident) => syn::Member::Named(ident.clone()),
                None => syn::Member::Unnamed(syn::Index::from(i)),
            };
            out.push((member, f.ty.clone()));
        }
        Ok(Self { fields: out, style })
    }

    /// `{ a: __f0, b: __f1 }`, `(__f0, __f1)` or nothing.
    fn pattern(&self) -> TokenStream {
        let binds = (0..self.fields.len()).map(|i| format_ident!("__f{}", i));
        match self.style {
            Style::Named => {
                let members = self.fields.iter().map(|(m, _)| m);
                quote!({ #(#members: #binds),* })
            }
            Style::Unnamed => quote!(( #(#binds),* )),
            Style::Unit => quote!(),
        }
    }

    /// The body of the mirror's struct or variant.
    fn mirror_body(&self, p: &Path) -> TokenStream {
        let tys = self
            .fields
            .iter()
            .map(|(_, t)| quote_spanned!(t.span()=> <#t as #p::IpcSafe>::Mirror));
        match self.style {
            Style::Named => {
                let members = self.fields.iter().map(|(m, _)| m);
                quote!({ #(#members: #tys),* })
            }
            Style::Unnamed => quote!(( #(#tys),* )),
            Style::Unit => quote!(),
        }
    }

    fn types(&self) -> impl Iterator<Item = &Type> {
        self.fields.iter().map(|(_, t)| t)
    }

    /// Statements checking every field of a matched mirror.
    fn check_fields(&self, p: &Path) -> TokenStream {
        let stmts = self.types().enumerate().map(|(i, ty)| {
            let f = format_ident!("__f{}", i);
            quote! {
                <#ty as #p::IpcSafe>::check(
                    #f,
                    #p::__private::field_bytes(__bytes, __base, #f)?,
                )?;
            }
        });
        quote!(#(#stmts)*)
    }

    /// Statements recording every matched field's range and zeroing its padding.
    fn zero_fields(&self, p: &Path) -> TokenStream {
        let stmts = self.types().enumerate().map(|(i, ty)| {
            let f = format_ident!("__f{}", i);
            quote! {
                __ranges[__n] = (
                    #p::__private::offset_in(__base, &*#f),
                    ::core::mem::size_of::<#ty>(),
                );
                __n += 1;
                <#ty as #p::IpcSafe>::zero_padding(#f);
            }
        });
        quote!(#(#stmts)*)
    }

    /// `size_of::<A>() + size_of::<B>() ...` (0 if none).
    fn size_sum(&self) -> TokenStream {
        let tys = self.types();
        quote!(0usize #(+ ::core::mem::size_of::<#tys>())*)
    }

    /// `false || A::HAS_PADDING || ...` and the same for NEEDS_CHECK.
    fn any(&self, p: &Path, konst: &str) -> TokenStream {
        let konst = Ident::new(konst, Span::call_site());
        let tys = self.types();
        quote!(false #(|| <#tys as #p::IpcSafe>::#konst)*)
    }
}

pub(crate) fn expand(input: &DeriveInput) -> syn::Result<TokenStream> {
    let p = parse_crate_path(input)?;
    let repr = parse_repr(input)?;
    let name = &input.ident;
    let vis = &input.vis;
    let mirror = format_ident!("__CourierIpcMirror{}", name);
    let alias = format_ident!("Ipc{}", name);

    if repr.packed {
        return Err(Error::new(
            name.span(),
            "#[derive(Ipc)] does not support #[repr(packed)]: its fields may be misaligned",
        ));
    }

    // Generics: every type parameter must itself be IPC-safe.
    let mut generics = input.generics.clone();
    {
        let type_params: Vec<Ident> = generics.type_params().map(|t| t.ident.clone()).collect();
        let where_clause = generics.make_where_clause();
        for t in type_params {
            where_clause
                .predicates
                .push(syn::parse_quote!(#t: #p::IpcSafe));
        }
    }
    let (impl_generics, ty_generics, where_clause) = generics.split_for_impl();
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

    let repr_attrs = &repr.attrs;
    let zc = quote!(#p::__private::zerocopy);
    let zc_str = format!("{}", quote!(#zc)).replace(' ', "");
    let mirror_attrs = quote! {
        #[doc(hidden)]
        #[allow(non_camel_case_types, missing_docs, dead_code, clippy::all)]
        #[derive(#zc::TryFromBytes, #zc::KnownLayout, #zc::Immutable)]
        #[zerocopy(crate = #zc_str)]
        #(#repr_attrs)*
    };

    let (mirror_def, tag_def, signature, has_padding, needs_check, check_body, zero_body) =
        match &input.data {
            Data::Union(_) => return Err(Error::new(
                name.span(),
                "#[derive(Ipc)] does not support unions: which field is valid cannot be checked",
            )),
            Data::Struct(s) => {
                if !repr.c || repr.transparent {
                    return Err(Error::new(
                        name.span(),
                        "#[derive(Ipc)] needs #[repr(C)] on a struct: the default layout may differ between builds",
                    ));
                }
                let shape = Shape::new(&s.fields)?;
                if shape.fields.is_empty() {
                    return Err(Error::new(
                        name.span(),
                        "#[derive(Ipc)] needs at least one field: an IPC type must not be zero-sized",
                    ));
                }
                let body = shape.mirror_body(&p);
                let semi = match shape.style {
                    Style::Named => quote!(),
                    _ => quote!(;),
                };
                let mirror_def = quote! {
                    #mirror_attrs
                    #vis struct #mirror #impl_generics #where_clause #body #semi
                };
                let pat = shape.pattern();
                let n = shape.fields.len();
                let members = shape.fields.iter().map(|(m, _)| m);
                let tys = shape.types();
                let signature = quote! {
                    #p::SignatureHasher::new(#p::signature::kind::STRUCT)
                        .usize(::core::mem::size_of::<Self>())
                        .usize(::core::mem::align_of::<Self>())
                        .usize(#n)
                        #(
                            .usize(::core::mem::offset_of!(Self, #members))
                            .word(<#tys as #p::IpcSafe>::SIGNATURE)
                        )*
                        .finish()
                };
                let size_sum = shape.size_sum();
                let any_pad = shape.any(&p, "HAS_PADDING");
                let has_padding = quote!(::core::mem::size_of::<Self>() != #size_sum || #any_pad);
                let needs_check = shape.any(&p, "NEEDS_CHECK");
                let checks = shape.check_fields(&p);
                let check_body = quote! {
                    let #mirror #pat = __mirror;
                    #checks
                };
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
                let zero_body = quote! {
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
                };
                (
                    mirror_def,
                    quote!(),
                    signature,
                    has_padding,
                    needs_check,
                    check_body,
                    zero_body,
                )
            }
            Data::Enum(e) => {
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
                    let body = shape.mirror_body(&p);
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
                    let any = shape.any(&p, "HAS_PADDING");
                    quote!((::core::mem::size_of::<#tag>() + #sum != ::core::mem::size_of::<Self>() || #any))
                });
                let has_padding = quote!(false #(|| #pads)*);
                let checks_any = shapes.iter().map(|(_, shape)| shape.any(&p, "NEEDS_CHECK"));
                let needs_check = quote!(false #(|| #checks_any)*);
                let check_arms = shapes.iter().map(|(v, shape)| {
                    let ident = &v.ident;
                    let pat = shape.pattern();
                    let checks = shape.check_fields(&p);
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
                    let zeroes = shape.zero_fields(&p);
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
                (
                    mirror_def,
                    tag_def,
                    signature,
                    has_padding,
                    needs_check,
                    check_body,
                    zero_body,
                )
            }
        };

    let alias_doc = format!(
        "The page-aligned IPC form of [`{name}`] (`courier::flat::Page<{name}>`), generated by `#[derive(Ipc)]`."
    );

    // A hidden type's alias is hidden too (the wire enums of `#[courier::service]`).
    let hidden = input
        .attrs
        .iter()
        .any(|a| a.path().is_ident("doc") && a.to_token_stream().to_string().contains("hidden"))
        .then(|| quote!(#[doc(hidden)]));
    Ok(quote! {
        #mirror_def

        #[doc = #alias_doc]
        #hidden
        #[allow(dead_code, non_camel_case_types)]
        #vis type #alias #alias_params = #p::Page<#name #plain_ty_generics>;

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
    })
}
