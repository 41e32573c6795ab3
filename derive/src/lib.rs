//! `#[derive(SchemaRecord)]` for qwire's typed producer: implements
//! `qwire::schema::SchemaRecord` from a `#[qwire(...)]` attribute.
//!
//! ```ignore
//! #[derive(serde::Serialize, qwire::schema::SchemaRecord)]
//! #[qwire(topic = "orders", key = "id", format = "avro", schema_file = "schemas/order.avsc")]
//! struct Order { id: String, qty: u32 }
//! ```
//!
//! Keys: `topic` (required); `format` = `json` (default) | `avro` | `protobuf`; exactly one
//! of `schema = "text"`, `schema_file = "path"` (relative to the crate's `Cargo.toml`,
//! read with `include_str!`) or `subject_schema` (the subject's latest registered schema);
//! optional `key = "field"`, `subject = "name"`, `message = "pkg.Message"`.

use proc_macro::TokenStream;
use quote::quote;
use syn::{parse_macro_input, Data, DeriveInput, Fields, LitStr};

/// Derives `qwire::schema::SchemaRecord`; see the crate documentation.
#[proc_macro_derive(SchemaRecord, attributes(qwire))]
pub fn derive_schema_record(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    match expand(&input) {
        Ok(ts) => ts.into(),
        Err(e) => e.to_compile_error().into(),
    }
}

#[derive(Default)]
struct Args {
    topic: Option<LitStr>,
    key: Option<LitStr>,
    format: Option<LitStr>,
    schema: Option<LitStr>,
    schema_file: Option<LitStr>,
    subject_schema: bool,
    subject: Option<LitStr>,
    message: Option<LitStr>,
}

fn expand(input: &DeriveInput) -> syn::Result<proc_macro2::TokenStream> {
    let mut a = Args::default();
    for attr in input.attrs.iter().filter(|a| a.path().is_ident("qwire")) {
        attr.parse_nested_meta(|m| {
            let slot = if m.path.is_ident("subject_schema") {
                a.subject_schema = true;
                return Ok(());
            } else if m.path.is_ident("topic") {
                &mut a.topic
            } else if m.path.is_ident("key") {
                &mut a.key
            } else if m.path.is_ident("format") {
                &mut a.format
            } else if m.path.is_ident("schema") {
                &mut a.schema
            } else if m.path.is_ident("schema_file") {
                &mut a.schema_file
            } else if m.path.is_ident("subject") {
                &mut a.subject
            } else if m.path.is_ident("message") {
                &mut a.message
            } else {
                return Err(m.error("unknown qwire attribute key"));
            };
            *slot = Some(m.value()?.parse()?);
            Ok(())
        })?;
    }
    let name = &input.ident;
    let topic = a.topic.ok_or_else(|| syn::Error::new_spanned(name, "#[qwire(topic = \"...\")] is required"))?;
    let format = match a.format.as_ref().map(LitStr::value).as_deref() {
        None | Some("json") => quote!(::qwire::schema::SchemaFormat::Json),
        Some("avro") => quote!(::qwire::schema::SchemaFormat::Avro),
        Some("protobuf") => quote!(::qwire::schema::SchemaFormat::Protobuf),
        Some(_) => return Err(syn::Error::new_spanned(a.format, "format is json, avro or protobuf")),
    };
    let schema = match (a.schema, a.schema_file, a.subject_schema) {
        (Some(s), None, false) => quote!(::qwire::schema::SchemaSource::Text(#s)),
        (None, Some(f), false) => {
            quote!(::qwire::schema::SchemaSource::Text(include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/", #f))))
        }
        (None, None, true) => quote!(::qwire::schema::SchemaSource::Registered),
        _ => {
            return Err(syn::Error::new_spanned(
                name,
                "give exactly one of schema = \"...\", schema_file = \"...\", subject_schema",
            ))
        }
    };
    let key = match &a.key {
        None => quote!(::core::option::Option::None),
        Some(k) => {
            let Data::Struct(s) = &input.data else {
                return Err(syn::Error::new_spanned(k, "key = \"field\" needs a struct with named fields"));
            };
            let Fields::Named(fields) = &s.fields else {
                return Err(syn::Error::new_spanned(k, "key = \"field\" needs a struct with named fields"));
            };
            let field = fields
                .named
                .iter()
                .filter_map(|f| f.ident.as_ref())
                .find(|i| *i == &k.value())
                .ok_or_else(|| syn::Error::new_spanned(k, format!("no field named '{}'", k.value())))?;
            quote!(::core::option::Option::Some(::qwire::schema::typed::key_bytes(&self.#field)))
        }
    };
    let subject = a.subject.map(|s| quote!(fn subject() -> ::std::string::String { ::std::string::String::from(#s) }));
    let message = a.message.map(
        |m| quote!(fn message_name() -> ::core::option::Option<&'static str> { ::core::option::Option::Some(#m) }),
    );
    let (impl_g, ty_g, where_g) = input.generics.split_for_impl();
    Ok(quote! {
        impl #impl_g ::qwire::schema::SchemaRecord for #name #ty_g #where_g {
            const TOPIC: &'static str = #topic;
            const FORMAT: ::qwire::schema::SchemaFormat = #format;
            fn schema() -> ::qwire::schema::SchemaSource { #schema }
            #subject
            #message
            fn key(&self) -> ::core::option::Option<::qwire::schema::typed::Bytes> { #key }
        }
    })
}
