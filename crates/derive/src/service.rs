//! `#[courier::service]`: a trait in, the trait plus its flat wire enums, `FooClient` and
//! `FooServer` out (see `courier::service` for what they run on).
//!
//! Expansion, for `trait Foo` with methods `m1..mn`:
//!
//! ```text
//! trait Foo { .. }                      the trait, #[lend]/#[lend_mut] removed
//! impl<T: Foo + ?Sized> Foo for &T      so one implementation serves several workers
//! enum __CourierFooRequest  (flat)      one variant per method: its arguments (+ lend length)
//! enum __CourierFooReply    (flat)      one variant per method: its result
//! enum __CourierFooError    (flat)      one variant per method that returns Result<_, E>
//! struct FooClient { inner }            FooClient::INTERFACE, pair, connect, one method per
//!                                       trait method (+ `_async` for plain calls)
//! struct FooServer { inner }            bind, bind_with, serve
//! ```
//!
//! Each variant's tag is a 32-bit FNV-1a hash of its method's name, so the order of the
//! methods does not matter on the wire; two names that hash alike are a compile error.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, ToTokens};
use syn::spanned::Spanned;
use syn::{
    Error, FnArg, GenericArgument, Ident, ItemTrait, LitStr, Pat, Path, PathArguments, ReturnType,
    TraitItem, Type,
};

/// What a method does on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Call,
    Send,
    Lend,
    LendMut,
    /// A call answered later through a `Reply<T, E>` argument (`#[deferred]`); the same as a
    /// call on the wire.
    Deferred,
    /// A Xous scalar message that waits for two words back (`#[scalar]` with a result).
    Scalar,
    /// A one-way Xous scalar message (`#[scalar]` without a result).
    ScalarSend,
    /// A subscription: the method takes a `Sink<E>` last and pushes events into it
    /// (`#[subscribe]`); `ok` is the event type.
    Subscribe,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Call => "call",
            Kind::Send => "send",
            Kind::Lend => "lend",
            Kind::LendMut => "lend_mut",
            Kind::Deferred => "deferred",
            Kind::Scalar => "scalar",
            Kind::ScalarSend => "scalar_send",
            Kind::Subscribe => "subscribe",
        }
    }

    fn code(self) -> u64 {
        match self {
            // A deferred method is a call to its clients: a server may switch between the two.
            Kind::Call | Kind::Deferred => 1,
            Kind::Send => 2,
            Kind::Lend => 3,
            Kind::LendMut => 4,
            Kind::Scalar => 5,
            Kind::ScalarSend => 6,
            Kind::Subscribe => 7,
        }
    }
}

/// How values travel: flat (`#[derive(Ipc)]` enums) or, with `#[courier::service(serde)]`,
/// serde enums wrapped in `courier::service::Serde` (moved in one process, postcard across
/// processes). Generated code names wire values only through these helpers.
struct Form {
    c: Path,
    serde: bool,
    /// `#[courier::service(no_std)]`: a client and a dispatcher over `courier::interchange`.
    no_std: bool,
}

impl Form {
    /// The wire type of `ty`.
    fn ty(&self, ty: impl ToTokens) -> TokenStream {
        let c = &self.c;
        if self.serde {
            quote!(#c::service::Serde<#ty>)
        } else {
            quote!(#ty)
        }
    }

    /// `value` as it goes on the wire.
    fn wrap(&self, value: TokenStream) -> TokenStream {
        let c = &self.c;
        if self.serde {
            quote!(#c::service::Serde(#value))
        } else {
            value
        }
    }

    /// A wire value back as the service's own.
    fn unwrap(&self, value: TokenStream) -> TokenStream {
        if self.serde {
            quote!((#value).0)
        } else {
            value
        }
    }
}

/// One trait method, parsed.
struct Method {
    name: Ident,
    kind: Kind,
    /// The moved arguments: name and type.
    args: Vec<(Ident, Type)>,
    /// The lent argument's name and its position among all arguments.
    lend: Option<(Ident, usize)>,
    /// The result type (`()` for none) and the error type, if it returns `Result<T, E>`.
    ok: Type,
    err: Option<Type>,
    tag: u32,
    docs: Vec<syn::Attribute>,
    /// For a `#[scalar]` method: the argument types' names and the result's (0 to 2 words).
    scalar: Option<(Vec<Ident>, Vec<Ident>)>,
    /// An `async fn`: the server awaits it (and `serve` is async).
    is_async: bool,
}

/// `#[courier::service]` or `#[courier::service(crate = "path")]`.
pub(crate) fn expand(attr: TokenStream, mut item: ItemTrait) -> syn::Result<TokenStream> {
    let form = parse_args(attr)?;
    let c = form.c.clone();
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        return Err(Error::new(
            item.generics.span(),
            "#[courier::service] traits cannot be generic: client and server must agree on one interface",
        ));
    }
    let mut methods = Vec::new();
    for it in &mut item.items {
        match it {
            TraitItem::Fn(f) => methods.push(parse_method(f)?),
            other => {
                return Err(Error::new(
                    other.span(),
                    "#[courier::service] traits hold methods only",
                ))
            }
        }
    }
    if methods.is_empty() {
        return Err(Error::new(
            item.ident.span(),
            "#[courier::service] needs at least one method",
        ));
    }
    if form.no_std {
        return expand_no_std(&form, item, &methods);
    }
    for (i, a) in methods.iter().enumerate() {
        if let Some(b) = methods[..i].iter().find(|b| b.tag == a.tag) {
            return Err(Error::new(
                a.name.span(),
                format!(
                    "the wire tags of `{}` and `{}` collide (a 32-bit hash of the name): rename one",
                    a.name, b.name
                ),
            ));
        }
    }

    strip_attributes(&mut item);
    let vis = &item.vis;
    let trait_name = &item.ident;
    let trait_str = trait_name.to_string();
    let flat_path = LitStr::new(&format!("{}::flat", path_string(&c)), Span::call_site());
    // The wire enums sit beside the trait (a module of their own would not see types
    // declared in the same function body), hidden from the docs.
    let rq_id = format_ident!("__Courier{}Request", trait_name);
    let rp_id = format_ident!("__Courier{}Reply", trait_name);
    let fail_id = format_ident!("__Courier{}Error", trait_name);
    let rq: Path = syn::parse_quote!(#rq_id);
    let rp: Path = syn::parse_quote!(#rp_id);
    let fail: Path = syn::parse_quote!(#fail_id);
    let client = format_ident!("{}Client", trait_name);
    let server = format_ident!("{}Server", trait_name);

    // The wire enums, their variants in the order of their tags (flat: each discriminant is
    // its tag too; serde encodes a variant by its position), so that neither the wire nor the
    // interface signature depends on the order of the trait's methods.
    let mut by_tag: Vec<&Method> = methods.iter().collect();
    by_tag.sort_by_key(|m| m.tag);
    let tagged = |m: &Method, body: TokenStream| {
        let tag = m.tag;
        if form.serde {
            body
        } else {
            quote!(#body = #tag)
        }
    };
    let rq_variants: Vec<TokenStream> = by_tag
        .iter()
        .map(|m| {
            let name = &m.name;
            if m.scalar.is_some() {
                return tagged(m, quote!(#name([u64; 4])));
            }
            let fields = m.args.iter().map(|(a, t)| quote!(#a: #t));
            let len = m.lend.as_ref().map(|_| quote!(__len: u64));
            let all: Vec<TokenStream> = fields.chain(len).collect();
            if all.is_empty() {
                tagged(m, quote!(#name))
            } else {
                tagged(m, quote!(#name { #(#all),* }))
            }
        })
        .collect();
    let rp_variants: Vec<TokenStream> = by_tag
        .iter()
        .map(|m| {
            let name = &m.name;
            let ok = &m.ok;
            if m.scalar.is_some() {
                tagged(m, quote!(#name([u64; 2])))
            } else if is_unit(ok) {
                tagged(m, quote!(#name))
            } else {
                tagged(m, quote!(#name(#ok)))
            }
        })
        .collect();
    let fail_variants: Vec<TokenStream> = by_tag
        .iter()
        .filter_map(|m| {
            let name = &m.name;
            m.err.as_ref().map(|e| tagged(m, quote!(#name(#e))))
        })
        .collect();
    let fail_variants = if fail_variants.is_empty() {
        if form.serde {
            vec![quote!(__none)]
        } else {
            vec![quote!(__none = 0)]
        }
    } else {
        fail_variants
    };
    let enum_attrs = if form.serde {
        let serde_path = LitStr::new(
            &format!("{}::__private::serde", path_string(&c)),
            Span::call_site(),
        );
        quote! {
            #[derive(#c::__private::serde::Serialize, #c::__private::serde::Deserialize, Debug)]
            #[serde(crate = #serde_path)]
        }
    } else {
        quote! {
            #[derive(#c::Ipc, Debug)]
            #[ipc(crate = #flat_path)]
            #[repr(u32)]
        }
    };
    // The interface: the methods as written, and a signature of them in tag order.
    let method_list = methods.iter().map(|m| {
        let n = m.name.to_string();
        let k = m.kind.name();
        quote!((#n, #k))
    });
    let method_words = by_tag.iter().map(|m| {
        let tag = u64::from(m.tag);
        let code = m.kind.code();
        quote!(.word(#tag).word(#code))
    });
    // The interface signature. Flat: the types' layout signatures. Serde: the types as
    // written (serde types have no layout signature), hashed here.
    let signature = if form.serde {
        let mut text = String::new();
        for m in &by_tag {
            let args: Vec<String> = m
                .args
                .iter()
                .map(|(a, t)| format!("{a}: {}", t.to_token_stream()))
                .collect();
            text.push_str(&format!(
                "{} {} ({}) -> {} / {};",
                m.name,
                m.kind.code(),
                args.join(", "),
                m.ok.to_token_stream(),
                m.err
                    .as_ref()
                    .map(|e| e.to_token_stream().to_string())
                    .unwrap_or_default()
            ));
        }
        let h = fnv64(&text);
        quote!(#h)
    } else {
        quote! {
            #c::flat::SignatureHasher::new(0x7365_7276_6963_6531)
                .word(<#rq as #c::flat::IpcSafe>::SIGNATURE)
                .word(<#rp as #c::flat::IpcSafe>::SIGNATURE)
                .word(<#fail as #c::flat::IpcSafe>::SIGNATURE)
                #(#method_words)*
                .finish()
        }
    };
    let (w_rq, w_rp, w_fail) = (form.ty(&rq), form.ty(&rp), form.ty(&fail));

    // The client's methods.
    let client_methods = methods
        .iter()
        .map(|m| client_method(&form, &trait_str, m, &rq, &rp, &fail));
    // How a server maps scalar messages to requests and replies to words.
    let scalar_ops: Vec<TokenStream> = methods
        .iter()
        .filter(|m| m.scalar.is_some())
        .map(|m| {
            let name = &m.name;
            let tag = m.tag;
            let rq_value = form.wrap(quote!(#rq::#name(__a)));
            quote!(#tag => ::core::option::Option::Some(#rq_value),)
        })
        .collect();
    let scalar_words: Vec<TokenStream> = methods
        .iter()
        .filter(|m| m.scalar.is_some())
        .map(|m| {
            let name = &m.name;
            quote!(#rp::#name(__w) => ::core::option::Option::Some(__w),)
        })
        .collect();
    let unwrap_rp = form.unwrap(quote!(__rp));
    let unwrap_take = form.unwrap(quote!(__req.take()));
    // An `async fn` method makes `serve` async.
    let any_async = methods.iter().any(|m| m.is_async);
    let asyncness = any_async.then(|| quote!(async));
    let next = if any_async {
        quote!(self.inner.next_async(&__spec, &mut __scratch).await)
    } else {
        quote!(self.inner.next(&__spec, &mut __scratch))
    };
    // The server's dispatch.
    let arms = methods
        .iter()
        .map(|m| dispatch_arm(&form, m, &rq, &rp, &fail));

    let forward = forwarding_impl(&item);

    let doc_client = format!(
        "The client of [`{trait_str}`]: one method per trait method, on any transport \
         (`{client}::pair()` in one process, `{client}::connect(name, timeout)` across \
         processes). Cheap to clone; clones share the connection."
    );
    let doc_server = format!(
        "The server of [`{trait_str}`]: `serve` runs an implementation of the trait on the \
         calling thread; clone it for more workers."
    );

    Ok(quote! {
        #item

        #forward

        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code, missing_docs, unreachable_pub)]
        #enum_attrs
        #vis enum #rq_id { #(#rq_variants),* }

        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code, missing_docs, unreachable_pub)]
        #enum_attrs
        #vis enum #rp_id { #(#rp_variants),* }

        #[doc(hidden)]
        #[allow(non_camel_case_types, dead_code, missing_docs, unreachable_pub)]
        #enum_attrs
        #vis enum #fail_id { #(#fail_variants),* }

        #[doc = #doc_client]
        #[derive(Clone, Debug)]
        #vis struct #client {
            inner: #c::service::Client<#w_rq, #w_rp, #w_fail>,
        }

        #[doc = #doc_server]
        #[derive(Clone, Debug)]
        #vis struct #server {
            inner: #c::service::Server<#w_rq, #w_rp, #w_fail>,
        }

        #[allow(dead_code)]
        impl #client {
            /// This service's interface: its name, methods and signature, compared with the
            /// server's at connect.
            #vis const INTERFACE: #c::service::Interface = #c::service::Interface {
                name: #trait_str,
                signature: #signature,
                methods: &[#(#method_list),*],
            };

            /// A client and a server of this service in one process (over `courier::local`).
            #vis fn pair() -> (#client, #server) {
                let (inner, s) = #c::service::Client::pair();
                (#client { inner }, #server { inner: s })
            }

            /// [`pair`](Self::pair) with a `courier::service::PairConfig`: how the client and
            /// the server wait (busy-polling, for a loaded machine).
            #vis fn pair_with(config: #c::service::PairConfig) -> (#client, #server) {
                let (inner, s) = #c::service::Client::pair_with(config);
                (#client { inner }, #server { inner: s })
            }

            /// Connects to the server of `name` in another process (`courier::shm`), waiting up
            /// to `timeout` for it, and checks that it serves this interface.
            ///
            /// # Errors
            ///
            /// Those of `courier::shm::Client::connect`, and `ShmError::InterfaceMismatch` if
            /// the server speaks another interface.
            #[cfg(target_os = "linux")]
            #vis fn connect(
                name: &str,
                timeout: ::core::time::Duration,
            ) -> ::core::result::Result<#client, #c::shm::ShmError> {
                Self::connect_with(name, &#c::shm::ConnectConfig::new(), timeout)
            }

            /// [`connect`](Self::connect) with a `ConnectConfig` (a server of another user to
            /// trust, a segment size limit).
            ///
            /// # Errors
            ///
            /// As [`connect`](Self::connect).
            #[cfg(target_os = "linux")]
            #vis fn connect_with(
                name: &str,
                config: &#c::shm::ConnectConfig,
                timeout: ::core::time::Duration,
            ) -> ::core::result::Result<#client, #c::shm::ShmError> {
                #c::service::Client::connect(name, &Self::INTERFACE, config, timeout)
                    .map(|inner| #client { inner })
            }

            /// Connects through the zenoh `session` to the service `name` exposed on the
            /// network by another host (`courier expose`, `courier::net::expose`): `"name"`
            /// (the first host to answer) or `"namespace/name"`. The interface is checked as
            /// for [`connect`](Self::connect). Needs courier's `net` feature (without it the
            /// session type has no value).
            ///
            /// # Errors
            ///
            /// `courier::net::NetError::NotFound` if no bridge answers within `timeout`,
            /// `NetError::InterfaceMismatch` if the server speaks another interface.
            #vis fn connect_net(
                session: &#c::service::NetSession,
                name: &str,
                timeout: ::core::time::Duration,
            ) -> ::core::result::Result<#client, #c::service::NetError> {
                #c::service::Client::connect_net(session, name, &Self::INTERFACE, timeout)
                    .map(|inner| #client { inner })
            }

            /// This client with every blocking call bounded by `timeout`: past it, a call
            /// returns `Error::Timeout` (and the server's late answer is discarded).
            #vis fn with_timeout(&self, timeout: ::core::time::Duration) -> #client {
                #client { inner: self.inner.with_timeout(::core::option::Option::Some(timeout)) }
            }

            /// Whether the server is known to be gone.
            #vis fn is_server_gone(&self) -> bool {
                self.inner.is_server_gone()
            }

            #(#client_methods)*
        }

        #[allow(dead_code)]
        impl #server {
            /// Takes the service name `name` for other processes (`courier::shm`, default
            /// `ServerConfig`); clients reach it with `connect`.
            ///
            /// # Errors
            ///
            /// Those of `courier::shm::Server::bind`.
            #[cfg(target_os = "linux")]
            #vis fn bind(name: &str) -> ::core::result::Result<#server, #c::shm::ShmError> {
                Self::bind_with(name, #c::shm::ServerConfig::new())
            }

            /// [`bind`](Self::bind) with a `ServerConfig`.
            ///
            /// # Errors
            ///
            /// Those of `courier::shm::Server::bind`.
            #[cfg(target_os = "linux")]
            #vis fn bind_with(
                name: &str,
                config: #c::shm::ServerConfig,
            ) -> ::core::result::Result<#server, #c::shm::ShmError> {
                #c::service::Server::bind(name, &#client::INTERFACE, config).map(|inner| #server { inner })
            }

            /// Makes every `serve` of this server and its clones return `Ok(())`: a blocking
            /// one within 250 ms, an async one at its next request; requests already taken
            /// are answered first.
            #vis fn stop(&self) {
                self.inner.stop();
            }

            /// Serves requests with `service`: in one process until every client is gone
            /// or [`stop`](Self::stop),
            /// across processes until `stop` or the server fails. Pass `&service` to serve one
            /// implementation from several workers (each with a clone of this server). With
            /// `async fn` methods it is an `async fn` for any executor (its future is `Send`
            /// when the methods' futures are); otherwise it runs on the calling thread.
            ///
            /// # Errors
            ///
            /// [`ServeError`](#c::service::ServeError) if the shared-memory server fails.
            #vis #asyncness fn serve<__S: #trait_name>(
                &self,
                service: __S,
            ) -> ::core::result::Result<(), #c::service::ServeError> {
                let __spec = #c::service::Spec {
                    interface: #client::INTERFACE,
                    scalars: #c::service::Scalars {
                        request: |__op: u32, __a: [u64; 4]| match __op {
                            #(#scalar_ops)*
                            _ => ::core::option::Option::None,
                        },
                        #[allow(unreachable_patterns)]
                        words: |__rp: #w_rp| match #unwrap_rp {
                            #(#scalar_words)*
                            _ => ::core::option::Option::None,
                        },
                    },
                };
                // The worker's copy of lent bytes, reused from call to call.
                let mut __scratch = ::std::vec::Vec::new();
                while let ::core::option::Option::Some(mut __req) = #next? {
                    let __out = match #unwrap_take {
                        #(#arms)*
                    };
                    __req.finish(__out);
                }
                ::core::result::Result::Ok(())
            }
        }
    })
}

/// The trait as written, without the method and argument attributes this macro reads.
fn strip_attributes(item: &mut ItemTrait) {
    const READ: [&str; 5] = ["deferred", "scalar", "subscribe", "lend", "lend_mut"];
    let ours = |a: &syn::Attribute| READ.iter().any(|r| a.path().is_ident(r));
    for it in &mut item.items {
        if let TraitItem::Fn(f) = it {
            f.attrs.retain(|a| !ours(a));
            for input in &mut f.sig.inputs {
                if let FnArg::Typed(pt) = input {
                    pt.attrs.retain(|a| !ours(a));
                }
            }
        }
    }
}

/// `impl<T: Trait + ?Sized> Trait for &T`, so that one implementation serves several workers
/// (an `async fn` forwards with `.await`).
fn forwarding_impl(item: &ItemTrait) -> TokenStream {
    let trait_name = &item.ident;
    let methods = item.items.iter().filter_map(|it| match it {
        TraitItem::Fn(f) => Some(&f.sig),
        _ => None,
    });
    let forward = methods.map(|sig| {
        let name = &sig.ident;
        let args = sig.inputs.iter().filter_map(|a| match a {
            FnArg::Typed(pt) => match &*pt.pat {
                Pat::Ident(p) => Some(&p.ident),
                _ => None,
            },
            FnArg::Receiver(_) => None,
        });
        let wait = sig.asyncness.map(|_| quote!(.await));
        quote!(#sig { (**self).#name(#(#args),*) #wait })
    });
    quote! {
        impl<__T: #trait_name + ?Sized> #trait_name for &__T {
            #(#forward)*
        }
    }
}

/// `#[courier::service]`'s arguments: `crate = "path"`, `serde`.
fn parse_args(attr: TokenStream) -> syn::Result<Form> {
    let mut form = Form {
        c: syn::parse_quote!(::courier),
        serde: false,
        no_std: false,
    };
    if attr.is_empty() {
        return Ok(form);
    }
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("crate") {
            let s: LitStr = meta.value()?.parse()?;
            form.c = s.parse()?;
            Ok(())
        } else if meta.path.is_ident("serde") {
            form.serde = true;
            Ok(())
        } else if meta.path.is_ident("no_std") {
            form.no_std = true;
            Ok(())
        } else {
            Err(meta.error("expected `crate = \"path::to::courier\"`, `serde` or `no_std`"))
        }
    });
    syn::parse::Parser::parse2(parser, attr)?;
    Ok(form)
}

fn path_string(p: &Path) -> String {
    let segs: Vec<String> = p.segments.iter().map(|s| s.ident.to_string()).collect();
    let lead = if p.leading_colon.is_some() { "::" } else { "" };
    format!("{lead}{}", segs.join("::"))
}

/// 64-bit FNV-1a of `text`.
fn fnv64(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// 32-bit FNV-1a of `name`: the method's wire tag.
fn tag_of(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// Whether `ty` is `()`.
fn is_unit(ty: &Type) -> bool {
    matches!(ty, Type::Tuple(t) if t.elems.is_empty())
}

fn is_byte_slice(ty: &Type, mutable: bool) -> bool {
    match ty {
        Type::Reference(r) if r.mutability.is_some() == mutable => match &*r.elem {
            Type::Slice(s) => matches!(&*s.elem, Type::Path(p) if p.path.is_ident("u8")),
            _ => false,
        },
        _ => false,
    }
}

/// The type arguments of `ty` if it is a path whose last segment is `name` (`Result<T, E>`,
/// `Reply<T>`, `Sink<E>`, however the path is written before it).
fn type_args(ty: &Type, name: &str) -> Option<Vec<Type>> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != name {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    Some(
        args.args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
    )
}

/// `Sink<E>` → `E`.
fn sink_type(ty: &Type) -> Option<Type> {
    match &type_args(ty, "Sink")?[..] {
        [event] => Some(event.clone()),
        _ => None,
    }
}

/// `Reply<T>` → `(T, None)`, `Reply<T, E>` → `(T, Some(E))`.
fn reply_types(ty: &Type) -> Option<(Type, Option<Type>)> {
    match &type_args(ty, "Reply")?[..] {
        [ok] => Some((ok.clone(), None)),
        [ok, err] => Some((ok.clone(), Some(err.clone()))),
        _ => None,
    }
}

/// `Result<T, E>` → `(T, Some(E))`; anything else `(ty, None)`.
fn split_result(ty: &Type) -> (Type, Option<Type>) {
    match type_args(ty, "Result").as_deref() {
        Some([ok, err]) => (ok.clone(), Some(err.clone())),
        _ => (ty.clone(), None),
    }
}

/// The handle a `#[deferred]` or `#[subscribe]` method takes last, read by `read`; the method
/// must return nothing. `last` and `returns` are the errors for a missing handle and for a
/// return type.
fn take_handle<T>(
    sig: &syn::Signature,
    inputs: &mut Vec<&FnArg>,
    read: impl FnOnce(&Type) -> Option<T>,
    last: &str,
    returns: &str,
) -> syn::Result<T> {
    let handle = match inputs.pop() {
        Some(FnArg::Typed(pt)) => read(&pt.ty),
        _ => None,
    };
    let Some(handle) = handle else {
        return Err(Error::new(sig.span(), last));
    };
    if !matches!(sig.output, ReturnType::Default) {
        return Err(Error::new(sig.output.span(), returns));
    }
    Ok(handle)
}

fn parse_method(f: &syn::TraitItemFn) -> syn::Result<Method> {
    let sig = &f.sig;
    if !sig.generics.params.is_empty() {
        return Err(Error::new(
            sig.generics.span(),
            "#[courier::service] methods cannot be generic",
        ));
    }
    if f.default.is_some() {
        return Err(Error::new(
            f.default.span(),
            "#[courier::service] methods have no default body: the server implements them",
        ));
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) if r.reference.is_some() && r.mutability.is_none() => {}
        _ => return Err(Error::new(
            sig.span(),
            "#[courier::service] methods take `&self` (a server may run them on several threads)",
        )),
    }
    if f.attrs.iter().any(|a| a.path().is_ident("scalar")) {
        return parse_scalar(f);
    }
    let deferred = f.attrs.iter().any(|a| a.path().is_ident("deferred"));
    let subscribe = f.attrs.iter().any(|a| a.path().is_ident("subscribe"));
    if deferred && subscribe {
        return Err(Error::new(
            sig.span(),
            "a method is #[deferred] or #[subscribe], not both",
        ));
    }
    let mut args = Vec::new();
    let mut lend = None;
    let mut kind = None;
    let mut inputs: Vec<&FnArg> = sig.inputs.iter().skip(1).collect();
    // A deferred method's last argument is its `Reply<T, E>`; a subscription's, its
    // `Sink<E>`.
    let sink = subscribe
        .then(|| {
            take_handle(
                sig,
                &mut inputs,
                sink_type,
                "a #[subscribe] method takes its event sink last: `sink: courier::service::Sink<E>`",
                "a #[subscribe] method returns nothing: it pushes events into its `Sink`",
            )
        })
        .transpose()?;
    let reply = deferred
        .then(|| {
            take_handle(
                sig,
                &mut inputs,
                reply_types,
                "a #[deferred] method takes its answer handle last: `reply: courier::service::Reply<T>` or `Reply<T, E>`",
                "a #[deferred] method returns nothing: it answers through its `Reply`",
            )
        })
        .transpose()?;
    for (i, input) in inputs.into_iter().enumerate() {
        let FnArg::Typed(pt) = input else {
            unreachable!("only the first argument is a receiver")
        };
        let Pat::Ident(pi) = &*pt.pat else {
            return Err(Error::new(
                pt.pat.span(),
                "#[courier::service] arguments are plain names (they become fields on the wire)",
            ));
        };
        let lend_attr = pt.attrs.iter().find_map(|a| {
            if a.path().is_ident("lend") {
                Some(Kind::Lend)
            } else if a.path().is_ident("lend_mut") {
                Some(Kind::LendMut)
            } else {
                None
            }
        });
        match lend_attr {
            Some(k) => {
                if lend.is_some() {
                    return Err(Error::new(pt.span(), "a method lends at most one buffer"));
                }
                if deferred || subscribe {
                    return Err(Error::new(
                        pt.span(),
                        "a #[deferred] or #[subscribe] method cannot lend: the lent bytes are the caller's only until the method returns",
                    ));
                }
                let mutable = k == Kind::LendMut;
                if !is_byte_slice(&pt.ty, mutable) {
                    return Err(Error::new(
                        pt.ty.span(),
                        if mutable {
                            "#[lend_mut] takes `&mut [u8]`"
                        } else {
                            "#[lend] takes `&[u8]`"
                        },
                    ));
                }
                lend = Some((pi.ident.clone(), i));
                kind = Some(k);
            }
            None => {
                if matches!(&*pt.ty, Type::Reference(_)) {
                    return Err(Error::new(
                        pt.ty.span(),
                        "#[courier::service] arguments are moved to the server: use an owned flat type, or #[lend]/#[lend_mut] for bytes",
                    ));
                }
                args.push((pi.ident.clone(), (*pt.ty).clone()));
            }
        }
    }
    let (ok, err, kind) = match (&sig.output, reply) {
        _ if sink.is_some() => (sink.expect("checked"), None, Kind::Subscribe),
        (_, Some((ok, err))) => (ok, err, Kind::Deferred),
        (ReturnType::Default, None) => {
            if kind.is_some() {
                return Err(Error::new(
                    sig.span(),
                    "a lending method returns a value: the caller waits for the server to be done with the bytes",
                ));
            }
            (syn::parse_quote!(()), None, Kind::Send)
        }
        (ReturnType::Type(_, ty), None) => {
            let (ok, err) = split_result(ty);
            (ok, err, kind.unwrap_or(Kind::Call))
        }
    };
    let name = sig.ident.clone();
    let docs = f
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect();
    Ok(Method {
        tag: tag_of(&name.to_string()),
        name,
        kind,
        args,
        lend,
        ok,
        err,
        docs,
        scalar: None,
        is_async: sig.asyncness.is_some(),
    })
}

/// The integer types (and `bool`) a scalar word carries.
const SCALAR_TYPES: &[&str] = &[
    "u8", "u16", "u32", "u64", "usize", "i8", "i16", "i32", "i64", "isize", "bool",
];

/// `ty` as a scalar word's type name, if it is one.
fn scalar_type(ty: &Type) -> Option<Ident> {
    match ty {
        Type::Path(p) if p.qself.is_none() => {
            let id = p.path.get_ident()?;
            SCALAR_TYPES
                .contains(&id.to_string().as_str())
                .then(|| id.clone())
        }
        _ => None,
    }
}

/// A `#[scalar]` method: up to four integer arguments, nothing, one or two integers back.
fn parse_scalar(f: &syn::TraitItemFn) -> syn::Result<Method> {
    const WHAT: &str = "a #[scalar] method takes up to four integer (or bool) arguments and returns nothing, one integer or a pair of integers";
    let sig = &f.sig;
    let mut args = Vec::new();
    let mut arg_types = Vec::new();
    for input in sig.inputs.iter().skip(1) {
        let FnArg::Typed(pt) = input else {
            unreachable!("only the first argument is a receiver")
        };
        let Pat::Ident(pi) = &*pt.pat else {
            return Err(Error::new(
                pt.pat.span(),
                "#[courier::service] arguments are plain names",
            ));
        };
        let Some(t) = scalar_type(&pt.ty) else {
            return Err(Error::new(pt.ty.span(), WHAT));
        };
        args.push((pi.ident.clone(), (*pt.ty).clone()));
        arg_types.push(t);
    }
    if args.len() > 4 {
        return Err(Error::new(sig.inputs.span(), WHAT));
    }
    let (ok, results, kind): (Type, Vec<Ident>, Kind) = match &sig.output {
        ReturnType::Default => (syn::parse_quote!(()), Vec::new(), Kind::ScalarSend),
        ReturnType::Type(_, ty) => {
            let results = match &**ty {
                Type::Tuple(t) if t.elems.len() == 2 => {
                    t.elems.iter().map(scalar_type).collect::<Option<Vec<_>>>()
                }
                other => scalar_type(other).map(|t| vec![t]),
            };
            let Some(results) = results else {
                return Err(Error::new(ty.span(), WHAT));
            };
            ((**ty).clone(), results, Kind::Scalar)
        }
    };
    let name = sig.ident.clone();
    let tag = tag_of(&name.to_string());
    if tag >= 0xFFFF_FF00 {
        return Err(Error::new(
            name.span(),
            "this name's opcode falls in the range courier keeps for itself: rename the method",
        ));
    }
    let docs = f
        .attrs
        .iter()
        .filter(|a| a.path().is_ident("doc"))
        .cloned()
        .collect();
    Ok(Method {
        tag,
        name,
        kind,
        args,
        lend: None,
        ok,
        err: None,
        docs,
        scalar: Some((arg_types, results)),
        is_async: sig.asyncness.is_some(),
    })
}

/// The expression that turns `value` (of scalar type `t`) into a word.
fn to_word(t: &Ident, value: TokenStream) -> TokenStream {
    match t.to_string().as_str() {
        "bool" => quote!(u64::from(#value)),
        "i8" | "i16" | "i32" | "i64" | "isize" => quote!((#value as i64) as u64),
        _ => quote!(#value as u64),
    }
}

/// The expression that reads a value of scalar type `t` from the word `word` (truncating: a
/// peer's word never panics).
fn from_word(t: &Ident, word: TokenStream) -> TokenStream {
    match t.to_string().as_str() {
        "bool" => quote!((#word != 0)),
        _ => quote!((#word as #t)),
    }
}

fn client_method(
    form: &Form,
    trait_str: &str,
    m: &Method,
    rq: &Path,
    rp: &Path,
    fail: &Path,
) -> TokenStream {
    let c = &form.c;
    let name = &m.name;
    let ok = &m.ok;
    let call_doc = format!("Calls `{trait_str}::{name}` on the server.");
    let docs = if m.docs.is_empty() {
        quote!(#[doc = #call_doc])
    } else {
        let d = &m.docs;
        quote!(#(#d)*)
    };
    let err_ty = match &m.err {
        Some(e) => quote!(#e),
        None => quote!(::core::convert::Infallible),
    };
    if let Some((arg_types, results)) = &m.scalar {
        return scalar_client_method(form, m, &docs, arg_types, results, rq, rp);
    }
    // The client method's parameters, in the trait's order (the lend at its place).
    let mut params: Vec<TokenStream> = m.args.iter().map(|(a, t)| quote!(#a: #t)).collect();
    if let Some((l, at)) = &m.lend {
        let ty = if m.kind == Kind::LendMut {
            quote!(&mut [u8])
        } else {
            quote!(&[u8])
        };
        params.insert(*at, quote!(#l: #ty));
    }
    let field_names: Vec<&Ident> = m.args.iter().map(|(a, _)| a).collect();
    let request = form.wrap(match &m.lend {
        Some((l, _)) => {
            quote!(#rq::#name { #(#field_names,)* __len: #l.len() as u64 })
        }
        None if field_names.is_empty() => quote!(#rq::#name),
        None => quote!(#rq::#name { #(#field_names),* }),
    });
    let unwrap_f = form.unwrap(quote!(__f));
    let w_fail = form.ty(fail);
    let unwrap_rp = form.unwrap(quote!(__rp));
    let narrow = match &m.err {
        Some(_) => quote! {
            |__e: #c::Error<#w_fail>| __e.map_app(|__f| match #unwrap_f {
                #fail::#name(__e) => #c::Error::App(__e),
                #[allow(unreachable_patterns)]
                _ => #c::Error::Protocol,
            })
        },
        None => quote!(|__e: #c::Error<#w_fail>| __e.map_app(|_| #c::Error::Protocol)),
    };
    let got = if is_unit(ok) {
        quote!(#rp::#name => ::core::result::Result::Ok(()))
    } else {
        quote!(#rp::#name(__v) => ::core::result::Result::Ok(__v))
    };
    let unpack = quote! {
        match __r {
            ::core::result::Result::Ok(__rp) => match #unwrap_rp {
                #got,
                #[allow(unreachable_patterns)]
                _ => ::core::result::Result::Err(#c::Error::Protocol),
            },
            ::core::result::Result::Err(__e) => ::core::result::Result::Err((#narrow)(__e)),
        }
    };
    let ret = quote!(::core::result::Result<#ok, #c::Error<#err_ty>>);
    match m.kind {
        Kind::Send => quote! {
            #docs
            ///
            /// One-way: returns once the message is queued; the server's answer is not awaited.
            pub fn #name(&self, #(#params),*) -> ::core::result::Result<(), #c::Error<#err_ty>> {
                self.inner.send(#request).map_err(#narrow)
            }
        },
        Kind::Call | Kind::Deferred => {
            let name_async = format_ident!("{}_async", name);
            let doc_async = format!(
                "[`{name}`](Self::{name}) awaited: never blocks the executor's thread. Cancel \
                 it by dropping the future (the client's timeout does not apply)."
            );
            quote! {
                #docs
                pub fn #name(&self, #(#params),*) -> #ret {
                    let __r = self.inner.call(#request);
                    #unpack
                }

                #[doc = #doc_async]
                pub async fn #name_async(&self, #(#params),*) -> #ret {
                    let __r = self.inner.call_async(#request).await;
                    #unpack
                }
            }
        }
        Kind::Scalar | Kind::ScalarSend => unreachable!("scalar methods return above"),
        Kind::Subscribe => {
            let ok_wire = form.ty(ok);
            quote! {
            #docs
            ///
            /// A subscription: the server pushes events until it drops its `Sink`.
            pub fn #name(&self, #(#params),*) -> ::core::result::Result<#c::service::Subscription<#ok, #ok_wire>, #c::Error<::core::convert::Infallible>> {
                self.inner.subscribe::<#ok, #ok_wire>(#request).map_err(#narrow)
            }
            }
        }
        Kind::Lend | Kind::LendMut => {
            let (l, _) = m.lend.as_ref().expect("a lending method");
            let call = if m.kind == Kind::LendMut {
                quote!(self.inner.lend_mut(#request, #l))
            } else {
                quote!(self.inner.lend(#request, #l))
            };
            quote! {
                #docs
                pub fn #name(&self, #(#params),*) -> #ret {
                    let __r = #call;
                    #unpack
                }
            }
        }
    }
}

/// The client method of a `#[scalar]` method.
fn scalar_client_method(
    form: &Form,
    m: &Method,
    docs: &TokenStream,
    arg_types: &[Ident],
    results: &[Ident],
    rq: &Path,
    rp: &Path,
) -> TokenStream {
    let c = &form.c;
    let name = &m.name;
    let tag = m.tag;
    let params = m.args.iter().map(|(a, t)| quote!(#a: #t));
    let mut words: Vec<TokenStream> = m
        .args
        .iter()
        .zip(arg_types)
        .map(|((a, _), t)| to_word(t, quote!(#a)))
        .collect();
    words.resize(4, quote!(0u64));
    let narrow = quote!(|__e: #c::Error<_>| __e.map_app(|_| #c::Error::Protocol));
    let request = form.wrap(quote!(#rq::#name(__args)));
    let unwrap_rp = form.unwrap(quote!(__rp));
    if m.kind == Kind::ScalarSend {
        return quote! {
            #docs
            ///
            /// A one-way scalar message: returns once it is queued.
            pub fn #name(&self, #(#params),*) -> ::core::result::Result<(), #c::Error<::core::convert::Infallible>> {
                let __args: [u64; 4] = [#(#words),*];
                self.inner
                    .scalar_send(#tag, __args, || #request)
                    .map_err(#narrow)
            }
        };
    }
    let ok = &m.ok;
    let value = match results {
        [one] => from_word(one, quote!(__w[0])),
        [a, b] => {
            let a = from_word(a, quote!(__w[0]));
            let b = from_word(b, quote!(__w[1]));
            quote!((#a, #b))
        }
        _ => unreachable!("one or two result words"),
    };
    quote! {
        #docs
        ///
        /// A scalar message: no slot payload across processes, the answer in two words.
        pub fn #name(&self, #(#params),*) -> ::core::result::Result<#ok, #c::Error<::core::convert::Infallible>> {
            let __args: [u64; 4] = [#(#words),*];
            let __w = self
                .inner
                .scalar(#tag, __args, || #request, |__rp| match #unwrap_rp {
                    #rp::#name(__w) => ::core::option::Option::Some(__w),
                    #[allow(unreachable_patterns)]
                    _ => ::core::option::Option::None,
                })
                .map_err(#narrow)?;
            ::core::result::Result::Ok(#value)
        }
    }
}

/// The server's arm for a `#[scalar]` method: the words back into arguments, the result into
/// words.
fn scalar_dispatch_arm(
    form: &Form,
    m: &Method,
    arg_types: &[Ident],
    results: &[Ident],
    rq: &Path,
    rp: &Path,
) -> TokenStream {
    let c = &form.c;
    let name = &m.name;
    let args = arg_types
        .iter()
        .enumerate()
        .map(|(i, t)| from_word(t, quote!(__a[#i])));
    let wait = m.is_async.then(|| quote!(.await));
    let call = quote!(service.#name(#(#args),*) #wait);
    let words = match results {
        [] => quote!({
            #call;
            [0u64, 0u64]
        }),
        [one] => {
            let w = to_word(one, quote!(__r));
            quote!({
                let __r = #call;
                [#w, 0u64]
            })
        }
        [a, b] => {
            let wa = to_word(a, quote!(__r.0));
            let wb = to_word(b, quote!(__r.1));
            quote!({
                let __r = #call;
                [#wa, #wb]
            })
        }
        _ => unreachable!("up to two result words"),
    };
    let reply = form.wrap(quote!(#rp::#name(#words)));
    quote!(#rq::#name(__a) => #c::service::Outcome::Reply(#reply),)
}

fn dispatch_arm(form: &Form, m: &Method, rq: &Path, rp: &Path, fail: &Path) -> TokenStream {
    let c = &form.c;
    if let Some((arg_types, results)) = &m.scalar {
        return scalar_dispatch_arm(form, m, arg_types, results, rq, rp);
    }
    let name = &m.name;
    let fields: Vec<&Ident> = m.args.iter().map(|(a, _)| a).collect();
    let pattern = match &m.lend {
        Some(_) => quote!(#rq::#name { #(#fields,)* __len }),
        None if fields.is_empty() => quote!(#rq::#name),
        None => quote!(#rq::#name { #(#fields),* }),
    };
    // The call's arguments in the trait's order.
    let mut call_args: Vec<TokenStream> = fields.iter().map(|f| quote!(#f)).collect();
    if let Some((l, at)) = &m.lend {
        call_args.insert(*at, quote!(#l));
    }
    let out = {
        let wait = m.is_async.then(|| quote!(.await));
        let call = quote!(service.#name(#(#call_args),*) #wait);
        match &m.err {
            Some(_) => {
                let (ok_pat, ok_val) = if is_unit(&m.ok) {
                    (quote!(()), form.wrap(quote!(#rp::#name)))
                } else {
                    (quote!(__v), form.wrap(quote!(#rp::#name(__v))))
                };
                let err_val = form.wrap(quote!(#fail::#name(__e)));
                quote! {
                    match #call {
                        ::core::result::Result::Ok(#ok_pat) => #c::service::Outcome::Reply(#ok_val),
                        ::core::result::Result::Err(__e) => #c::service::Outcome::Fail(#err_val),
                    }
                }
            }
            None if is_unit(&m.ok) => {
                let val = form.wrap(quote!(#rp::#name));
                quote!({
                    #call;
                    #c::service::Outcome::Reply(#val)
                })
            }
            None => {
                let val = form.wrap(quote!(#rp::#name(#call)));
                quote!(#c::service::Outcome::Reply(#val))
            }
        }
    };
    if m.kind == Kind::Subscribe {
        let wait = m.is_async.then(|| quote!(.await));
        let event = &m.ok;
        let event_wire = form.ty(event);
        return quote! {
            #pattern => match __req.sink::<#event, #event_wire>() {
                ::core::option::Option::Some(__s) => {
                    service.#name(#(#call_args,)* __s) #wait;
                    #c::service::Outcome::Deferred
                }
                ::core::option::Option::None => #c::service::Outcome::Refuse,
            },
        };
    }
    if m.kind == Kind::Deferred {
        let wait = m.is_async.then(|| quote!(.await));
        let ok_fn = if is_unit(&m.ok) {
            let v = form.wrap(quote!(#rp::#name));
            quote!(|_: ()| #v)
        } else {
            let v = form.wrap(quote!(#rp::#name(__v)));
            quote!(|__v| #v)
        };
        let err_fn = match &m.err {
            Some(_) => {
                let v = form.wrap(quote!(#fail::#name(__e)));
                quote!(|__e| #v)
            }
            None => quote!(|__e: ::core::convert::Infallible| match __e {}),
        };
        return quote! {
            #pattern => match __req.pending() {
                ::core::option::Option::Some(__p) => {
                    service.#name(#(#call_args,)* __p.defer(#ok_fn, #err_fn)) #wait;
                    #c::service::Outcome::Deferred
                }
                ::core::option::Option::None => #c::service::Outcome::Refuse,
            },
        };
    }
    match &m.lend {
        Some((l, _)) => {
            let get = if m.kind == Kind::LendMut {
                quote!(__req.bytes_mut(__len))
            } else {
                quote!(__req.bytes(__len))
            };
            quote! {
                #pattern => match #get {
                    ::core::option::Option::Some(#l) => #out,
                    ::core::option::Option::None => #c::service::Outcome::Refuse,
                },
            }
        }
        None => quote!(#pattern => #out,),
    }
}

/// `#[courier::service(no_std)]`: for firmware, over `courier::interchange` (a static
/// request/response slot, no heap, no OS). Calls, one-way methods and `#[scalar]` ones (the
/// same as calls here); values are moved, not encoded. Generates `FooRequest`, `FooReply`, `FooChannel` (the slot's type, for a
/// `static`), `FooClient` (one method per trait method; it waits with a function the caller
/// gives, such as a WFI or a yield) and `FooServer::poll` (answers the pending request).
fn expand_no_std(form: &Form, mut item: ItemTrait, methods: &[Method]) -> syn::Result<TokenStream> {
    let c = &form.c;
    if form.serde {
        return Err(Error::new(
            item.ident.span(),
            "a no_std service moves its values: `serde` does not apply",
        ));
    }
    for m in methods {
        let why = match m.kind {
            _ if m.is_async => Some("an async method needs an executor's waker; a no_std service is polled"),
            Kind::Lend | Kind::LendMut => Some("a lend would put a borrowed buffer in a `static` slot, which outlives it: pass the bytes by value (an array or `courier::flat::Vec<u8, N>`)"),
            Kind::Deferred => Some("a deferred method's `Reply` is std's; a no_std server answers in `poll`"),
            Kind::Subscribe => Some("an interchange slot carries one request and one response, no stream of pushes"),
            Kind::Call | Kind::Send | Kind::Scalar | Kind::ScalarSend => None,
        };
        if let Some(why) = why {
            return Err(Error::new(
                m.name.span(),
                format!("a #[courier::service(no_std)] method is a call, a one-way method or a #[scalar] one: {why}"),
            ));
        }
    }
    strip_attributes(&mut item);
    let vis = &item.vis;
    let trait_name = &item.ident;
    let rq = format_ident!("{}Request", trait_name);
    let rp = format_ident!("{}Reply", trait_name);
    let channel = format_ident!("{}Channel", trait_name);
    let client = format_ident!("{}Client", trait_name);
    let server = format_ident!("{}Server", trait_name);
    let doc_rq = format!("The requests of [`{trait_name}`], one variant per method.");
    let doc_rp = format!("The replies of [`{trait_name}`], one variant per method.");
    let doc_channel = format!(
        "The slot between a [`{client}`] and a [`{server}`]: put one in a `static` \
         (`{channel}::new()` is `const`) and `split` it."
    );
    let doc_client = format!(
        "The client of [`{trait_name}`] over a [`{channel}`]: each method puts its request in \
         the slot and calls `wait` until the reply is there."
    );
    let doc_server = format!(
        "The server of [`{trait_name}`] over a [`{channel}`]: [`poll`]({server}::poll) answers \
         the pending request."
    );
    let rq_variants = methods.iter().map(|m| {
        let name = &m.name;
        let fields = m.args.iter().map(|(a, t)| quote!(#a: #t));
        quote!(#name { #(#fields),* })
    });
    let rp_variants = methods.iter().map(|m| {
        let name = &m.name;
        let ok = &m.ok;
        match (&m.err, m.kind) {
            (_, Kind::Send | Kind::ScalarSend) => quote!(#name),
            (Some(e), _) => quote!(#name(::core::result::Result<#ok, #e>)),
            (None, _) => quote!(#name(#ok)),
        }
    });
    let forward = forwarding_impl(&item);
    let client_methods = methods.iter().map(|m| {
        let name = &m.name;
        let ok = &m.ok;
        let params = m.args.iter().map(|(a, t)| quote!(#a: #t));
        let fields = m.args.iter().map(|(a, _)| a);
        let doc = format!("Calls `{trait_name}::{name}` on the server and waits for its reply.");
        let (ret, got) = match (&m.err, m.kind) {
            (_, Kind::Send | Kind::ScalarSend) => (
                quote!(::core::result::Result<(), #c::Error<::core::convert::Infallible>>),
                quote!(#rp::#name => ::core::result::Result::Ok(())),
            ),
            (Some(e), _) => (
                quote!(::core::result::Result<#ok, #c::Error<#e>>),
                quote!(#rp::#name(__r) => __r.map_err(#c::Error::App)),
            ),
            (None, _) => (
                quote!(::core::result::Result<#ok, #c::Error<::core::convert::Infallible>>),
                quote!(#rp::#name(__v) => ::core::result::Result::Ok(__v)),
            ),
        };
        quote! {
            #[doc = #doc]
            #vis fn #name(&mut self, #(#params),*) -> #ret {
                match self.call(#rq::#name { #(#fields),* }) {
                    ::core::option::Option::Some(__rp) => match __rp {
                        #got,
                        #[allow(unreachable_patterns)]
                        _ => ::core::result::Result::Err(#c::Error::Protocol),
                    },
                    ::core::option::Option::None => ::core::result::Result::Err(#c::Error::Protocol),
                }
            }
        }
    });
    let arms = methods.iter().map(|m| {
        let name = &m.name;
        let fields: Vec<&Ident> = m.args.iter().map(|(a, _)| a).collect();
        match m.kind {
            Kind::Send | Kind::ScalarSend => quote!(#rq::#name { #(#fields),* } => {
                service.#name(#(#fields),*);
                #rp::#name
            }),
            _ => quote!(#rq::#name { #(#fields),* } => #rp::#name(service.#name(#(#fields),*)),),
        }
    });
    Ok(quote! {
        #item

        #forward

        #[doc = #doc_rq]
        #[allow(non_camel_case_types, missing_docs)]
        #[derive(Debug)]
        #vis enum #rq { #(#rq_variants),* }

        #[doc = #doc_rp]
        #[allow(non_camel_case_types, missing_docs)]
        #[derive(Debug)]
        #vis enum #rp { #(#rp_variants),* }

        #[doc = #doc_channel]
        #vis type #channel = #c::interchange::Channel<#rq, #rp>;

        #[doc = #doc_client]
        #vis struct #client<'i> {
            requester: #c::interchange::Requester<'i, #rq, #rp>,
            wait: fn(),
        }

        #[allow(dead_code)]
        impl<'i> #client<'i> {
            /// A client on `requester` that calls `wait` while a reply is not there yet (a
            /// `wfi`, a yield to the scheduler, or nothing to spin).
            #vis fn new(requester: #c::interchange::Requester<'i, #rq, #rp>, wait: fn()) -> Self {
                #client { requester, wait }
            }

            /// Puts `rq` in the slot and waits for the reply; `None` if the slot is not free
            /// (a previous request is still there).
            fn call(&mut self, rq: #rq) -> ::core::option::Option<#rp> {
                self.requester.request(rq).ok()?;
                loop {
                    if let ::core::option::Option::Some(__rp) = self.requester.take_response() {
                        return ::core::option::Option::Some(__rp);
                    }
                    (self.wait)();
                }
            }

            #(#client_methods)*
        }

        #[doc = #doc_server]
        #vis struct #server<'i> {
            responder: #c::interchange::Responder<'i, #rq, #rp>,
        }

        #[allow(dead_code)]
        impl<'i> #server<'i> {
            /// A server on `responder`.
            #vis fn new(responder: #c::interchange::Responder<'i, #rq, #rp>) -> Self {
                #server { responder }
            }

            /// Answers the pending request with `service`, if there is one: whether there was
            /// (call it from the interrupt handler or the loop that serves the slot).
            #vis fn poll<__S: #trait_name + ?Sized>(&mut self, service: &__S) -> bool {
                let ::core::option::Option::Some(__rq) = self.responder.take_request() else {
                    return false;
                };
                let __rp = match __rq {
                    #(#arms)*
                };
                let _ = self.responder.respond(__rp);
                true
            }
        }
    })
}
