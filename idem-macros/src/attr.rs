//! The attribute's arguments: `("operationName", post = "/path")`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::{Expr, ExprLit, Lit, LitStr, Meta, Token};

use crate::errors::Errors;

/// Which attribute is being expanded.
#[derive(Clone, Copy)]
pub(crate) enum Class {
    Financial,
    HighRisk,
}

impl Class {
    pub(crate) fn attribute(self) -> &'static str {
        match self {
            Self::Financial => "financial_mutation",
            Self::HighRisk => "high_risk_mutation",
        }
    }

    /// The registry the operation joins.
    pub(crate) fn slice(self) -> proc_macro2::TokenStream {
        match self {
            Self::Financial => quote::quote!(FINANCIAL_MUTATIONS),
            Self::HighRisk => quote::quote!(HIGH_RISK_MUTATIONS),
        }
    }

    /// The `OperationClass` variant.
    pub(crate) fn variant(self) -> proc_macro2::TokenStream {
        match self {
            Self::Financial => quote::quote!(Financial),
            Self::HighRisk => quote::quote!(HighRisk),
        }
    }

    /// The gate's trait, which only handlers of this class implement.
    pub(crate) fn gate(self) -> proc_macro2::TokenStream {
        match self {
            Self::Financial => quote::quote!(FinancialMutation),
            Self::HighRisk => quote::quote!(HighRiskMutation),
        }
    }
}

/// The validated arguments.
pub(crate) struct Args {
    pub(crate) name: LitStr,
    pub(crate) method: &'static str,
    pub(crate) path: LitStr,
    /// Top-level JSON fields of the body that the fingerprint leaves out.
    pub(crate) ignored_fields: Vec<LitStr>,
    /// `created = true | false`: whether a `200 OK` answer becomes `201 Created`, for this
    /// operation whatever the server's setting; `None` leaves it to the server.
    pub(crate) created: Option<bool>,
    /// The path to idem-actix in the user's crate: `::idem_actix` unless `crate = path` names a
    /// facade that re-exports it.
    pub(crate) krate: syn::Path,
}

const METHODS: [(&str, &str); 4] = [
    ("post", "POST"),
    ("put", "PUT"),
    ("patch", "PATCH"),
    ("delete", "DELETE"),
];

/// The raw arguments: an optional leading name, then `key = "value"` pairs.
pub(crate) struct RawArgs {
    name: Option<LitStr>,
    pairs: Punctuated<Meta, Token![,]>,
}

impl Parse for RawArgs {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let name = if input.peek(LitStr) {
            let name = input.parse()?;
            if !input.is_empty() {
                input.parse::<Token![,]>()?;
            }
            Some(name)
        } else {
            None
        };
        Ok(Self {
            name,
            pairs: Punctuated::parse_terminated(input)?,
        })
    }
}

impl RawArgs {
    /// Validates the arguments; every problem is reported, each at its own tokens.
    pub(crate) fn validate(self, class: Class) -> syn::Result<Args> {
        let attribute = class.attribute();
        let expected = format!(
            "expected #[{attribute}(\"operationName\", post = \"/path\")]; the method is one of post, put, patch, delete; ignore_in_fingerprint = [\"field\"], created = false and crate = path::to::idem_actix are optional"
        );
        let mut errors = Errors::default();
        let mut name = None;
        if let Some(literal) = self.name {
            match operation_name_problem(&literal.value()) {
                Some(problem) => errors.push(syn::Error::new(literal.span(), problem)),
                None => name = Some(literal),
            }
        }
        let mut route = None;
        let mut ignored_fields = Vec::new();
        let mut created = None;
        let mut krate: syn::Path = syn::parse_quote!(::idem_actix);
        for meta in self.pairs {
            let Meta::NameValue(pair) = &meta else {
                errors.push(syn::Error::new_spanned(
                    &meta,
                    format!("unexpected argument: {expected}"),
                ));
                continue;
            };
            let key = pair
                .path
                .get_ident()
                .map(ToString::to_string)
                .unwrap_or_default();
            if key == "crate" {
                match &pair.value {
                    Expr::Path(path) if path.qself.is_none() => krate = path.path.clone(),
                    other => errors.push(syn::Error::new_spanned(
                        other,
                        "expected the path to idem_actix as your crate re-exports it, such as crate = my_platform::idem",
                    )),
                }
                continue;
            }
            if key == "created" {
                match &pair.value {
                    Expr::Lit(ExprLit {
                        lit: Lit::Bool(value),
                        ..
                    }) => created = Some(value.value),
                    other => errors.push(syn::Error::new_spanned(
                        other,
                        "expected created = true (a 200 OK answer becomes 201 Created) or created = false (it stays 200)",
                    )),
                }
                continue;
            }
            if key == "ignore_in_fingerprint" {
                match fields(&pair.value) {
                    Some(fields) => ignored_fields = fields,
                    None => errors.push(syn::Error::new_spanned(
                        &pair.value,
                        "expected a list of top-level JSON field names, such as ignore_in_fingerprint = [\"client_sent_at\"]",
                    )),
                }
                continue;
            }
            let Expr::Lit(ExprLit {
                lit: Lit::Str(value),
                ..
            }) = &pair.value
            else {
                errors.push(syn::Error::new_spanned(
                    &pair.value,
                    format!("expected a string literal: {expected}"),
                ));
                continue;
            };
            if let Some((_, method)) = METHODS.iter().find(|(arg, _)| *arg == key) {
                if route.is_some() {
                    errors.push(syn::Error::new_spanned(
                        &pair.path,
                        "a handler has one route: remove this second method",
                    ));
                } else if !value.value().starts_with('/') {
                    errors.push(syn::Error::new(
                        value.span(),
                        "a route path starts with `/`, such as \"/api/payments\"",
                    ));
                } else {
                    route = Some((*method, value.clone()));
                }
            } else if key == "get" || key == "head" {
                errors.push(syn::Error::new_spanned(
                    &pair.path,
                    format!("`{key}` is not a mutation: a protected operation is mounted with post, put, patch or delete"),
                ));
            } else {
                errors.push(syn::Error::new_spanned(
                    &pair.path,
                    format!(
                        "unknown argument `{}`: {expected}",
                        quote::ToTokens::to_token_stream(&pair.path)
                    ),
                ));
            }
        }
        if name.is_none() && errors.is_empty() {
            errors.push(syn::Error::new(
                Span::call_site(),
                format!(
                    "missing operation name: start with a unique camelCase name, as in #[{attribute}(\"createPayment\", post = \"/payments\")]"
                ),
            ));
        }
        if route.is_none() && errors.is_empty() {
            errors.push(syn::Error::new(
                Span::call_site(),
                format!(
                    "missing route: add the method and path, as in #[{attribute}(\"createPayment\", post = \"/payments\")]; the method is one of post, put, patch, delete"
                ),
            ));
        }
        errors.finish(|| {
            let (method, path) = route.expect("a missing route is reported as an error");
            let name = name.expect("a missing name is reported as an error");
            Args {
                name,
                method,
                path,
                ignored_fields,
                created,
                krate,
            }
        })
    }
}

/// The string literals of `["a", "b"]`.
fn fields(value: &Expr) -> Option<Vec<LitStr>> {
    let Expr::Array(array) = value else {
        return None;
    };
    array
        .elems
        .iter()
        .map(|elem| match elem {
            Expr::Lit(ExprLit {
                lit: Lit::Str(field),
                ..
            }) if !field.value().is_empty() => Some(field.clone()),
            _ => None,
        })
        .collect()
}

/// Why `name` is not a valid operation name, if it is not.
fn operation_name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    match chars.next() {
        None => Some(
            "the operation name is empty: name it in camelCase, such as \"createPayment\""
                .to_owned(),
        ),
        Some(first) if !first.is_ascii_lowercase() || !chars.all(|c| c.is_ascii_alphanumeric()) => {
            Some(format!(
                "operation names are camelCase ASCII: write \"{}\"",
                camel_case(name)
            ))
        }
        Some(_) => None,
    }
}

/// A camelCase suggestion for a name written in another case.
fn camel_case(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in name.chars() {
        if !c.is_ascii_alphanumeric() {
            upper = !out.is_empty();
        } else if out.is_empty() {
            out.push(c.to_ascii_lowercase());
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        "createPayment".to_owned()
    } else {
        out
    }
}
