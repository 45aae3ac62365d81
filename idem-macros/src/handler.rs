//! The annotated function: what each parameter is, and what a protected handler must have.

use syn::spanned::Spanned;
use syn::{FnArg, GenericArgument, ItemFn, PathArguments, Type, TypePath};

use crate::errors::Errors;

/// What one parameter of the handler is.
pub(crate) enum Role {
    /// The client's `IdempotencyKey`.
    Key,
    /// `&mut WriteContext<'_, DB>`: the write's transaction.
    Write,
    /// Any other actix-web extractor, passed through.
    Extractor(Box<Type>),
}

/// A handler that satisfies the contract.
pub(crate) struct Handler {
    pub(crate) item: ItemFn,
    pub(crate) roles: Vec<Role>,
    /// The `DB` of `WriteContext<'_, DB>`.
    pub(crate) database: Type,
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

    let mut roles = Vec::new();
    let mut key_seen = false;
    let mut database = None;
    for input in &sig.inputs {
        let FnArg::Typed(param) = input else {
            errors.push(syn::Error::new_spanned(
                input,
                format!("#[{attribute}] goes on a free async fn, not a method"),
            ));
            continue;
        };
        let ty = &*param.ty;
        if is_key(ty) {
            if key_seen {
                errors.push(syn::Error::new_spanned(
                    param,
                    "this handler already takes an `IdempotencyKey`: remove this second one",
                ));
            }
            key_seen = true;
            roles.push(Role::Key);
        } else if let Some(write) = write_context(ty) {
            match write {
                Ok(db) if database.is_none() => database = Some(db.clone()),
                Ok(_) => errors.push(syn::Error::new_spanned(
                    param,
                    "this handler already takes its `WriteContext`: remove this second one",
                )),
                Err(error) => errors.push(error),
            }
            roles.push(Role::Write);
        } else {
            roles.push(Role::Extractor(Box::new(ty.clone())));
        }
    }
    let params_span = sig.paren_token.span.join();
    if !key_seen {
        errors.push(syn::Error::new(
            params_span,
            format!(
                "#[{attribute}] handlers take the client's idempotency key: add a parameter `key: IdempotencyKey`"
            ),
        ));
    }
    if database.is_none() && !roles.iter().any(|role| matches!(role, Role::Write)) {
        errors.push(syn::Error::new(
            params_span,
            format!(
                "#[{attribute}] handlers write through the protocol's transaction: add a parameter `write: &mut WriteContext<'_, Postgres>` (or `Sqlite`)"
            ),
        ));
    }
    errors.finish(|| Handler {
        item,
        roles,
        database: database.expect("a missing write context is reported as an error"),
    })
}

fn last_segment_is(path: &TypePath, name: &str) -> bool {
    path.qself.is_none()
        && path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == name)
}

fn is_key(ty: &Type) -> bool {
    matches!(ty, Type::Path(path) if last_segment_is(path, "IdempotencyKey"))
}

/// `Some(Ok(DB))` for `&mut WriteContext<'_, DB>`, `Some(Err(..))` for a misuse of it.
fn write_context(ty: &Type) -> Option<syn::Result<&Type>> {
    let (reference, path) = match ty {
        Type::Reference(reference) => match &*reference.elem {
            Type::Path(path) if last_segment_is(path, "WriteContext") => (Some(reference), path),
            _ => return None,
        },
        Type::Path(path) if last_segment_is(path, "WriteContext") => (None, path),
        _ => return None,
    };
    let shape = "take it as `&mut WriteContext<'_, Postgres>` (or `Sqlite`)";
    let Some(reference) = reference.filter(|reference| reference.mutability.is_some()) else {
        return Some(Err(syn::Error::new_spanned(
            ty,
            format!("the write context is borrowed mutably: {shape}"),
        )));
    };
    let database = match &path.path.segments.last()?.arguments {
        PathArguments::AngleBracketed(args) => args.args.iter().rev().find_map(|arg| match arg {
            GenericArgument::Type(ty) => Some(ty),
            _ => None,
        }),
        _ => None,
    };
    Some(database.ok_or_else(|| {
        syn::Error::new(
            reference.elem.span(),
            format!("name the database of the write context: {shape}"),
        )
    }))
}
