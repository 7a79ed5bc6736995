//! The layout layer of `#[derive(Ipc)]`: what `#[repr(...)]` says, and which layouts are
//! refused for a struct or an enum.

use proc_macro2::TokenStream;
use syn::{DeriveInput, Error, Ident};

/// What `#[repr(...)]` said.
#[derive(Default)]
pub(super) struct Repr {
    /// `repr(C)`.
    pub(super) c: bool,
    /// `repr(u8)` .. `repr(i64)`: an enum's tag type.
    pub(super) int: Option<Ident>,
    /// `repr(packed)` or `repr(packed(N))`.
    packed: bool,
    /// `repr(transparent)`.
    transparent: bool,
    /// The full list of repr attributes, copied to the mirror.
    pub(super) attrs: Vec<syn::Attribute>,
}

impl Repr {
    /// Reads every `#[repr(...)]` of the type, refusing a pointer-width or 128-bit tag and
    /// `repr(packed)` (whatever the kind of type).
    pub(super) fn parse(input: &DeriveInput) -> syn::Result<Self> {
        let repr = parse_repr(input)?;
        if repr.packed {
            return Err(Error::new(
                input.ident.span(),
                "#[derive(Ipc)] does not support #[repr(packed)]: its fields may be misaligned",
            ));
        }
        Ok(repr)
    }

    /// Refuses a struct without `repr(C)` (or with `repr(transparent)`).
    pub(super) fn check_struct(&self, name: &Ident) -> syn::Result<()> {
        if !self.c || self.transparent {
            return Err(Error::new(
                name.span(),
                "#[derive(Ipc)] needs #[repr(C)] on a struct: the default layout may differ between builds",
            ));
        }
        Ok(())
    }

    /// Refuses an enum with neither `repr(C)` nor an integer repr, or with both.
    pub(super) fn check_enum(&self, name: &Ident) -> syn::Result<()> {
        if !self.c && self.int.is_none() {
            return Err(Error::new(
                name.span(),
                "#[derive(Ipc)] needs #[repr(C)], #[repr(u8)] (or another fixed-width integer) on an enum: the default layout may differ between builds",
            ));
        }
        if self.c && self.int.is_some() {
            return Err(Error::new(
                name.span(),
                "#[derive(Ipc)]: use #[repr(C)] or #[repr(u8)] (or another fixed-width integer) on an enum, not both: zerocopy cannot validate the combined layout",
            ));
        }
        Ok(())
    }
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
