//! The expansion: a unit type named after the handler that registers the operation and mounts
//! its route, and the handler itself, run inside the write protocol.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ItemFn;
use syn::spanned::Spanned;

use crate::attr::{Args, Class, RawArgs};
use crate::handler::{self, Handler, Role};

/// Expands one annotated handler. On any error the original function is emitted beside the
/// errors, with a stand-in for the handler's type that the gate accepts, so there is one error
/// per mistake, none at the mount site, and the IDE keeps its view of the body.
pub(crate) fn protected_handler(class: Class, args: TokenStream, item: TokenStream) -> TokenStream {
    let item: ItemFn = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(_) => {
            let message = format!("#[{}] goes on an `async fn` handler", class.attribute());
            let error = syn::Error::new(Span::call_site(), message).to_compile_error();
            return quote! { #error #item };
        }
    };
    if let Some(receiver) = item.sig.receiver() {
        let error = syn::Error::new_spanned(
            receiver,
            format!(
                "#[{}] goes on a free async fn, not a method: move the handler out of the `impl` block",
                class.attribute()
            ),
        )
        .to_compile_error();
        return quote! { #error #item };
    }
    let args = syn::parse2::<RawArgs>(args).and_then(|raw| raw.validate(class));
    let handler = handler::analyze(item.clone(), class.attribute());
    match (args, handler) {
        (Ok(args), Ok(handler)) => expand(class, &args, &handler),
        (args, handler) => {
            let krate = match &args {
                Ok(args) => args.krate.clone(),
                Err(_) => syn::parse_quote!(::idem_actix),
            };
            let errors = [args.err(), handler.err()]
                .into_iter()
                .flatten()
                .map(|error| error.to_compile_error());
            let fallback = fallback(class, &krate, item);
            quote! { #(#errors)* #fallback }
        }
    }
}

/// What a handler with errors expands to: its function, unchanged but out of the way, and a
/// unit type of its name that the gate accepts, registered nowhere and never mounted.
fn fallback(class: Class, krate: &syn::Path, mut item: ItemFn) -> TokenStream {
    let private = quote!(#krate::__private);
    let name = item.sig.ident.clone();
    let vis = item.vis.clone();
    let gate = class.gate();
    let class_variant = class.variant();
    // A second class attribute is reported, not expanded as well.
    item.attrs.retain(|attr| !handler::is_class_attribute(attr));
    item.attrs.push(syn::parse_quote!(#[allow(dead_code)]));
    quote! {
        #[allow(non_camel_case_types, dead_code)]
        #[derive(Clone, Copy, Debug, Default)]
        #vis struct #name;

        const _: () = {
            #item

            static __IDEM_NOT_COMPILED: #private::Operation = #private::Operation::__new(
                "notCompiled",
                #private::OperationClass::#class_variant,
                ::core::option::Option::None,
                ::core::file!(),
                ::core::line!(),
            );

            impl #private::Registered for #name {}

            impl #private::RegisteredOperation for #name {
                const OPERATION: &'static #private::Operation = &__IDEM_NOT_COMPILED;
            }

            impl<DB: #private::Backend> #krate::#gate<DB> for #name {}

            impl<DB: #private::Backend> #private::Mount<DB> for #name {
                fn mount(_: &mut #private::actix_web::web::ServiceConfig) {
                    ::core::unreachable!("a handler with compile errors is never mounted")
                }
            }
        };
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
    let operation_name = &args.name;
    let (method, path) = (args.method, &args.path);
    let ignored_fields = &args.ignored_fields;
    let created = match args.created {
        Some(created) => quote!(::core::option::Option::Some(#created)),
        None => quote!(::core::option::Option::None),
    };
    let slice = class.slice();
    let class_variant = class.variant();
    let gate = class.gate();
    // A guarded resource lets other methods on the same path (a GET that lists the records)
    // reach the routes mounted after it, instead of a 405 from this one.
    let guard = format_ident!("{}{}", &method[..1], method[1..].to_ascii_lowercase());
    let line = quote_spanned!(name.span()=> ::core::line!());

    // The database, named once per use at the write context's own tokens, so a `&mut` of
    // something else is reported there.
    let write_target = &handler.write_target;
    let database = quote_spanned!(write_target.span()=> #private::Database<#write_target>);

    let mut extracted_types = Vec::new();
    let mut extracted_names = Vec::new();
    let call_args: Vec<TokenStream> = handler
        .roles
        .iter()
        .map(|role| match role {
            Role::Write => quote!(__idem_write),
            Role::Extracted(ty) => {
                let arg = format_ident!("__idem_arg{}", extracted_names.len());
                extracted_types.push(ty);
                extracted_names.push(arg.clone());
                quote!(#arg)
            }
        })
        .collect();
    // One extraction per parameter, at its type: the key by type, a pool or a non-extractor
    // refused there.
    let extractions = extracted_types
        .iter()
        .zip(&extracted_names)
        .map(|(ty, arg)| {
            quote_spanned! {ty.span()=>
                let #arg = (&#private::ParamCheck::<#ty>::new())
                    .idem_param_kind()
                    .extract::<#ty>(__idem_request, __idem_payload, __idem_key);
            }
        });
    let takes_the_key = quote_spanned! {handler.params_span=>
        #private::takes_the_key::<(#(#extracted_types,)*), _>();
    };
    let output_span = match &item.sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => name.span(),
    };
    let respond = quote_spanned!(output_span=> #private::respond(answer, &__idem_request));
    let refuse = quote_spanned!(output_span=> (&refusal).idem_refusal_kind().failure(refusal));

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

            impl #krate::#gate<#database> for #name {}

            impl<'__idem> #private::actix_web::dev::HttpServiceFactory for #name
            where
                &'__idem #name: #private::MountedThroughTheGate,
            {
                fn register(self, _: &mut #private::actix_web::dev::AppService) {}
            }

            #[allow(dead_code)]
            fn __idem_takes_the_key() {
                #takes_the_key
            }

            impl #private::Mount<#database> for #name {
                fn mount(config: &mut #private::actix_web::web::ServiceConfig) {
                    #user_fn

                    async fn __idem_serve(
                        request: #private::actix_web::HttpRequest,
                        payload: #private::actix_web::web::Payload,
                    ) -> #private::actix_web::HttpResponse {
                        #[allow(unused_imports)]
                        use #private::{ExtractorParamKind as _, KeyParamKind as _, PoolParamKind as _};
                        #private::serve::<_, #database, _, _, _>(
                            <#name as ::core::default::Default>::default(),
                            request,
                            payload.into_inner(),
                            |__idem_request: &#private::actix_web::HttpRequest,
                             __idem_payload: &mut #private::actix_web::dev::Payload,
                             __idem_key: &#private::IdempotencyKey| {
                                #(#extractions)*
                                ::std::boxed::Box::pin(async move {
                                    ::core::result::Result::Ok::<_, #private::actix_web::Error>((
                                        #(#extracted_names.await?,)*
                                    ))
                                })
                            },
                            |__idem_write, (#(#extracted_names,)*), __idem_request| {
                                ::std::boxed::Box::pin(async move {
                                    #[allow(unused_imports)]
                                    use #private::{AnswerKind as _, AnsweredKind as _, CauseKind as _, ResultKind as _};
                                    let output = #name(#(#call_args),*).await;
                                    match (&output).idem_answer_kind().split(output) {
                                        ::core::result::Result::Ok(answer) => {
                                            ::core::result::Result::Ok(#respond)
                                        }
                                        ::core::result::Result::Err(refusal) => {
                                            ::core::result::Result::Err(#refuse)
                                        }
                                    }
                                })
                            },
                            &[#(#ignored_fields),*],
                            #created,
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
