//! The annotated function: what each parameter is, and what a protected handler must have.
//!
//! Only the write context is found by its shape: it is the one parameter taken by `&mut`
//! (an extractor is owned). Everything else is told apart by type in the expansion, so a
//! renamed import, a full path or an alias of `IdempotencyKey` or `WriteContext` is
//! recognised, and a different type of the same name is not.

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::ToTokens;
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{FnArg, ItemFn, Lifetime, Type};

use crate::errors::Errors;

/// What one parameter of the handler is.
pub(crate) enum Role {
    /// `&mut WriteContext<'_, DB>` under any name: the write's transaction.
    Write,
    /// The client's key or an actix-web extractor, told apart by type in the expansion.
    Extracted(Box<Type>),
}

/// A handler that satisfies the rules a macro can check.
pub(crate) struct Handler {
    pub(crate) item: ItemFn,
    pub(crate) roles: Vec<Role>,
    /// The referent of the write context's `&mut`, its lifetimes made `'static`: the type whose
    /// `WriteTarget::Database` is the handler's database.
    pub(crate) write_target: Type,
    /// The parentheses around the parameters, where a missing parameter is reported.
    pub(crate) params_span: Span,
}

/// Checks the function; every breach is reported, each at its own tokens.
pub(crate) fn analyze(item: ItemFn, attribute: &str) -> syn::Result<Handler> {
    let mut errors = Errors::default();
    let sig = &item.sig;
    if sig.asyncness.is_none() {
        errors.push(syn::Error::new_spanned(
            sig.fn_token,
            format!(
                "#[{attribute}] handlers are async: write `async fn {}(...)`",
                sig.ident
            ),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(syn::Error::new_spanned(
            &sig.generics,
            format!("#[{attribute}] handlers are not generic: name the concrete extractor types"),
        ));
    }
    for attr in item.attrs.iter().filter(|attr| is_class_attribute(attr)) {
        errors.push(syn::Error::new_spanned(
            attr,
            format!(
                "an operation has one class: keep #[{attribute}] or #[{}], not both",
                attr.path()
                    .segments
                    .last()
                    .expect("a class attribute has a name")
                    .ident
            ),
        ));
    }

    let mut roles = Vec::new();
    let mut write_target = None;
    let mut shared_reference = false;
    for input in &sig.inputs {
        let FnArg::Typed(param) = input else {
            errors.push(syn::Error::new_spanned(
                input,
                format!(
                    "#[{attribute}] goes on a free async fn, not a method: move the handler out of the `impl` block"
                ),
            ));
            continue;
        };
        let ty = &*param.ty;
        match ty {
            Type::Reference(reference) if reference.mutability.is_some() => {
                if write_target.is_some() {
                    errors.push(syn::Error::new_spanned(
                        param,
                        "this handler already takes its `WriteContext`: remove this second one",
                    ));
                }
                let mut target = (*reference.elem).clone();
                StaticLifetimes.visit_type_mut(&mut target);
                write_target = Some(target);
                roles.push(Role::Write);
            }
            Type::Reference(_) => {
                shared_reference = true;
                errors.push(syn::Error::new_spanned(
                ty,
                "a protected handler's parameters are owned extractors, and its write context is borrowed mutably: take it as `&mut WriteContext<'_, Postgres>` (or `Sqlite`)",
            ));
            }
            Type::ImplTrait(_) => errors.push(syn::Error::new_spanned(
                ty,
                "a protected handler names its parameters' types: write the extractor's type, such as `web::Json<NewPayment>`, instead of `impl Trait`",
            )),
            Type::Infer(_) => errors.push(syn::Error::new_spanned(
                ty,
                "a protected handler names its parameters' types: write the extractor's type instead of `_`",
            )),
            _ => roles.push(Role::Extracted(Box::new(ty.clone()))),
        }
    }
    if let syn::ReturnType::Type(_, output) = &sig.output
        && let Type::ImplTrait(_) = &**output
    {
        errors.push(syn::Error::new_spanned(
            output,
            "a protected handler names its return type: behind `impl Trait` an `Err` would be stored and replayed as the write's answer; return `Result<HttpResponse, E>` (an `Err` rolls the write back), `HttpResponse` or `web::Json<T>`",
        ));
    }
    for app_data in app_data_calls(item.block.to_token_stream()) {
        errors.push(syn::Error::new(
            app_data.span(),
            "a protected handler writes only through its write context: `app_data` reaches the application's state, where a pool writes outside the write's transaction; write with `write.tx()`, and take other state as an extractor (`web::Data<T>`)",
        ));
    }
    let params_span = sig.paren_token.span.join();
    if write_target.is_none() && !shared_reference {
        errors.push(syn::Error::new(
            params_span,
            format!(
                "#[{attribute}] handlers write through the protocol's transaction: add a parameter `write: &mut WriteContext<'_, Postgres>` (or `Sqlite`)"
            ),
        ));
    }
    let keys_by_name = sig
        .inputs
        .iter()
        .filter(|input| matches!(input, FnArg::Typed(param) if is_named_key(&param.ty)))
        .skip(1);
    for second in keys_by_name {
        errors.push(syn::Error::new_spanned(
            second,
            "this handler already takes an `IdempotencyKey`: remove this second one",
        ));
    }
    errors.finish(|| Handler {
        item,
        roles,
        write_target: write_target
            .expect("a missing or shared write context is reported as an error"),
        params_span,
    })
}

/// `#[financial_mutation]` or `#[high_risk_mutation]`, by any path.
pub(crate) fn is_class_attribute(attr: &syn::Attribute) -> bool {
    attr.path().segments.last().is_some_and(|last| {
        last.ident == "financial_mutation" || last.ident == "high_risk_mutation"
    })
}

/// A type spelled `…::IdempotencyKey`: only to report a second key by name, once, at its
/// tokens; the key itself is recognised by type.
fn is_named_key(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if path.qself.is_none()
        && path.path.segments.last().is_some_and(|segment| segment.ident == "IdempotencyKey"))
}

/// Every `app_data` in a body, macro arguments included: the way from a request to the
/// application's pools.
fn app_data_calls(tokens: TokenStream) -> Vec<Ident> {
    let mut found = Vec::new();
    for token in tokens {
        match token {
            TokenTree::Ident(ident) if ident == "app_data" => found.push(ident),
            TokenTree::Group(group) => found.extend(app_data_calls(group.stream())),
            _ => {}
        }
    }
    found
}

/// Makes every lifetime of a type `'static`, so that it can be named outside the handler.
struct StaticLifetimes;

impl VisitMut for StaticLifetimes {
    fn visit_lifetime_mut(&mut self, lifetime: &mut Lifetime) {
        *lifetime = Lifetime::new("'static", lifetime.span());
    }

    fn visit_type_reference_mut(&mut self, reference: &mut syn::TypeReference) {
        if reference.lifetime.is_none() {
            reference.lifetime = Some(Lifetime::new("'static", reference.and_token.span()));
        }
        syn::visit_mut::visit_type_reference_mut(self, reference);
    }
}
