//! `#[derive(Ipc)]`: the flat type's checks, mirror, signature and page form.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Data, DeriveInput, Error, Fields, Ident, Path, Type};

mod enums;
mod structs;

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

    let impl_generics_tokens = quote!(#impl_generics);
    let where_tokens = quote!(#where_clause);
    let cx = Ctx {
        p: &p,
        name,
        vis,
        mirror: &mirror,
        mirror_attrs: &mirror_attrs,
        impl_generics: &impl_generics_tokens,
        where_clause: &where_tokens,
    };
    let Parts {
        mirror_def,
        tag_def,
        signature,
        has_padding,
        needs_check,
        check_body,
        zero_body,
    } =
        match &input.data {
            Data::Union(_) => return Err(Error::new(
                name.span(),
                "#[derive(Ipc)] does not support unions: which field is valid cannot be checked",
            )),
            Data::Struct(s) => structs::parts(&cx, &repr, s)?,
            Data::Enum(e) => enums::parts(&cx, &repr, e)?,
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
