//! The expansion: a unit type named after the handler that registers the operation and mounts
//! its route, and the handler itself, run inside the write protocol.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ItemFn;
use syn::spanned::Spanned;

use crate::attr::{Args, Class, RawArgs};
use crate::handler::{self, Handler, Role};

/// Expands one annotated handler. On any error the original function is emitted unchanged
/// beside the errors, so there is one error per mistake and the IDE keeps its view of the body.
pub(crate) fn protected_handler(class: Class, args: TokenStream, item: TokenStream) -> TokenStream {
    let item: ItemFn = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            let message = format!("#[{}] goes on an `async fn` handler", class.attribute());
            let error = syn::Error::new(Span::call_site(), message).to_compile_error();
            return quote! { #error #item };
        }
    };
    let args = syn::parse2::<RawArgs>(args).and_then(|raw| raw.validate(class));
    let handler = handler::analyze(item.clone(), class.attribute());
    match (args, handler) {
        (Ok(args), Ok(handler)) => expand(class, &args, &handler),
        (args, handler) => {
            let errors = [args.err(), handler.err()]
                .into_iter()
                .flatten()
                .map(|error| error.to_compile_error());
            quote! { #(#errors)* #item }
        }
    }
}

fn expand(class: Class, args: &Args, handler: &Handler) -> TokenStream {
    let krate = &args.krate;
    let private = quote!(#krate::__private);
    let item = &handler.item;
    let name = &item.sig.ident;
    let vis = &item.vis;
    let docs = item.attrs.iter().filter(|attr| attr.path().is_ident("doc"));
    let user_fn = ItemFn {
        vis: syn::Visibility::Inherited,
        ..item.clone()
    };
    let database = &handler.database;
    let operation_name = &args.name;
    let (method, path) = (args.method, &args.path);
    let ignored_fields = &args.ignored_fields;
    let (slice, class_variant, gate) = match class {
        Class::Financial => (
            quote!(FINANCIAL_MUTATIONS),
            quote!(Financial),
            quote!(FinancialMutation),
        ),
        Class::HighRisk => (
            quote!(HIGH_RISK_MUTATIONS),
            quote!(HighRisk),
            quote!(HighRiskMutation),
        ),
    };
    // A guarded resource lets other methods on the same path (a GET that lists the records)
    // reach the routes mounted after it, instead of a 405 from this one.
    let guard = format_ident!("{}{}", &method[..1], method[1..].to_ascii_lowercase());
    let line = quote_spanned!(name.span()=> ::core::line!());

    let mut extractor_types = Vec::new();
    let mut extractor_names = Vec::new();
    let call_args: Vec<TokenStream> = handler
        .roles
        .iter()
        .map(|role| match role {
            Role::Key => quote!(__idem_key),
            Role::Write => quote!(__idem_write),
            Role::Extractor(ty) => {
                let arg = format_ident!("__idem_arg{}", extractor_names.len());
                extractor_types.push(ty);
                extractor_names.push(arg.clone());
                quote!(#arg)
            }
        })
        .collect();

    // One check per extractor, spanned at its type: a database pool is refused there.
    let parameter_checks = extractor_types.iter().map(|ty| {
        quote_spanned! {ty.span()=>
            (&#private::ParamCheck::<#ty>::new()).idem_param_kind().admit::<#ty>();
        }
    });

    quote! {
        #(#docs)*
        #[allow(non_camel_case_types)]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #name;

        const _: () = {
            #[#private::linkme::distributed_slice(#private::#slice)]
            #[linkme(crate = #private::linkme)]
            static __IDEM_OPERATION: #private::Operation = #private::Operation::__new(
                #operation_name,
                #private::OperationClass::#class_variant,
                ::core::option::Option::Some(#private::Route { method: #method, path: #path }),
                ::core::file!(),
                #line,
            );

            impl #private::Registered for #name {}

            impl #private::RegisteredOperation for #name {
                const OPERATION: &'static #private::Operation = &__IDEM_OPERATION;
            }

            impl #krate::#gate for #name {}

            #[allow(dead_code)]
            fn __idem_parameters() {
                #[allow(unused_imports)]
                use #private::{OtherParamKind as _, PoolParamKind as _};
                #(#parameter_checks)*
            }

            impl #private::Mount for #name {
                type Database = #database;

                fn mount(config: &mut #private::actix_web::web::ServiceConfig) {
                    #user_fn

                    async fn __idem_serve(
                        request: #private::actix_web::HttpRequest,
                        payload: #private::actix_web::web::Payload,
                    ) -> #private::actix_web::HttpResponse {
                        #private::serve::<_, #database, (#(#extractor_types,)*), _>(
                            <#name as ::core::default::Default>::default(),
                            request,
                            payload.into_inner(),
                            |__idem_write, __idem_key, (#(#extractor_names,)*), __idem_request| {
                                ::std::boxed::Box::pin(async move {
                                    #[allow(unused_imports)]
                                    use #private::{AnswerKind as _, AnsweredKind as _, CauseKind as _, ResultKind as _};
                                    let output = #name(#(#call_args),*).await;
                                    match (&output).idem_answer_kind().split(output) {
                                        ::core::result::Result::Ok(answer) => {
                                            ::core::result::Result::Ok(#private::respond(answer, &__idem_request))
                                        }
                                        ::core::result::Result::Err(refusal) => {
                                            ::core::result::Result::Err((&refusal).idem_refusal_kind().failure(refusal))
                                        }
                                    }
                                })
                            },
                            &[#(#ignored_fields),*],
                        )
                        .await
                    }

                    config.service(
                        #private::actix_web::web::resource(#path)
                            .name(#operation_name)
                            .guard(#private::actix_web::guard::#guard())
                            .to(__idem_serve),
                    );
                }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use quote::quote;

    use super::*;

    /// The expansion of one handler, pretty-printed, is checked in so that a change to it is a
    /// reviewed diff: `tests/snapshots/create_payment.expanded.rs`. Regenerate it with
    /// `IDEM_BLESS=1 cargo test -p idem-macros`.
    #[test]
    fn expansion_matches_the_checked_in_snapshot() {
        let expanded = protected_handler(
            Class::Financial,
            quote!("createPayment", post = "/payments"),
            quote! {
                /// Records a payment.
                pub async fn create_payment(
                    key: IdempotencyKey,
                    write: &mut WriteContext<'_, Postgres>,
                    payment: web::Json<NewPayment>,
                ) -> Result<HttpResponse, PaymentError> {
                    record(write, &payment).await?;
                    Ok(HttpResponse::Created().finish())
                }
            },
        );
        let file = syn::parse2::<syn::File>(expanded).expect("the expansion is valid Rust");
        let pretty = prettyplease::unparse(&file);
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/snapshots/create_payment.expanded.rs"
        );
        if std::env::var_os("IDEM_BLESS").is_some() {
            std::fs::write(path, &pretty).expect("write the snapshot");
        }
        let snapshot = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            pretty == snapshot,
            "the expansion changed; review it and run `IDEM_BLESS=1 cargo test -p idem-macros` to update {path}:\n{pretty}"
        );
    }

    #[test]
    fn a_facade_names_the_crate_and_the_expansion_uses_only_its_path() {
        let expanded = protected_handler(
            Class::Financial,
            quote!("createPayment", post = "/payments", crate = my_platform::idem),
            quote! {
                async fn create_payment(key: IdempotencyKey, write: &mut WriteContext<'_, Postgres>) -> HttpResponse {
                    HttpResponse::Created().finish()
                }
            },
        )
        .to_string();
        assert!(!expanded.contains("idem_actix"), "{expanded}");
        assert!(
            expanded.contains("my_platform :: idem :: __private"),
            "{expanded}"
        );
    }

    #[test]
    fn an_invalid_handler_is_still_emitted_beside_its_error() {
        let expanded = protected_handler(
            Class::HighRisk,
            quote!("createCustomer", post = "/customers"),
            quote!(
                async fn create_customer(body: String) -> String {
                    body
                }
            ),
        )
        .to_string();
        assert!(expanded.contains("compile_error"), "{expanded}");
        assert!(expanded.contains("async fn create_customer"), "{expanded}");
    }
}
