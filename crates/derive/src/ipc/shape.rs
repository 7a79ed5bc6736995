//! The field layer of `#[derive(Ipc)]`: which field types are refused outright, and [`Shape`],
//! one struct body or enum variant, with the per-field code both kinds of type generate.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;
use syn::{Error, Fields, Ident, Path, Type};

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
    Err(refuse(ty.span(), what))
}

/// The error for a field type that can never cross: `what` says why.
fn refuse(span: Span, what: &str) -> Error {
    Error::new(
        span,
        format!("#[derive(Ipc)]: this field cannot cross a process boundary: {what}"),
    )
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
        return Err(refuse(path.span(), what));
    }
    type_args.into_iter().try_for_each(check_field_type)
}

/// One variant (or the struct body): its pattern and field types.
pub(super) struct Shape {
    /// Each field's name (or index) and type. The path to match on (`Self`, `Self::A`, the
    /// mirror, ...) is prepended by the caller.
    pub(super) fields: Vec<(syn::Member, Type)>,
    /// How the fields are written: `{ a: A }`, `(A)` or nothing.
    pub(super) style: Style,
}

/// How a body's fields are written.
#[derive(Clone, Copy)]
pub(super) enum Style {
    /// `{ a: A, b: B }`
    Named,
    /// `(A, B)`
    Unnamed,
    /// No fields.
    Unit,
}

impl Shape {
    /// Reads a body, refusing (at the field's type) a field that can never be IPC-safe.
    pub(super) fn new(fields: &Fields) -> syn::Result<Self> {
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
    pub(super) fn pattern(&self) -> TokenStream {
        self.wrap((0..self.fields.len()).map(|i| format_ident!("__f{}", i)))
    }

    /// The body of the mirror's struct or variant.
    pub(super) fn mirror_body(&self, p: &Path) -> TokenStream {
        self.wrap(
            self.fields
                .iter()
                .map(|(_, t)| quote_spanned!(t.span()=> <#t as #p::IpcSafe>::Mirror)),
        )
    }

    /// One item per field, written in this body's style: `{ a: x, b: y }`, `(x, y)` or nothing.
    fn wrap<T: ToTokens>(&self, items: impl Iterator<Item = T>) -> TokenStream {
        match self.style {
            Style::Named => {
                let members = self.fields.iter().map(|(m, _)| m);
                quote!({ #(#members: #items),* })
            }
            Style::Unnamed => quote!(( #(#items),* )),
            Style::Unit => quote!(),
        }
    }

    /// The field types, in order.
    pub(super) fn types(&self) -> impl Iterator<Item = &Type> {
        self.fields.iter().map(|(_, t)| t)
    }

    /// Statements checking every field of a matched mirror.
    pub(super) fn check_fields(&self, p: &Path) -> TokenStream {
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
    pub(super) fn zero_fields(&self, p: &Path) -> TokenStream {
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
    pub(super) fn size_sum(&self) -> TokenStream {
        let tys = self.types();
        quote!(0usize #(+ ::core::mem::size_of::<#tys>())*)
    }

    /// `false || A::HAS_PADDING || ...` and the same for NEEDS_CHECK.
    pub(super) fn any(&self, p: &Path, konst: &str) -> TokenStream {
        let konst = Ident::new(konst, Span::call_site());
        let tys = self.types();
        quote!(false #(|| <#tys as #p::IpcSafe>::#konst)*)
    }
}
