/// Records a payment.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, Default)]
pub struct create_payment;
const _: () = {
    #[::idem_actix::__private::linkme::distributed_slice(
        ::idem_actix::__private::FINANCIAL_MUTATIONS
    )]
    #[linkme(crate = ::idem_actix::__private::linkme)]
    static __IDEM_OPERATION: ::idem_actix::__private::Operation = ::idem_actix::__private::Operation::__new(
        "createPayment",
        ::idem_actix::__private::OperationClass::Financial,
        ::core::option::Option::Some(::idem_actix::__private::Route {
            method: "POST",
            path: "/payments",
        }),
        ::core::file!(),
        ::core::line!(),
    );
    impl ::idem_actix::__private::Registered for create_payment {}
    impl ::idem_actix::__private::RegisteredOperation for create_payment {
        const OPERATION: &'static ::idem_actix::__private::Operation = &__IDEM_OPERATION;
    }
    impl ::idem_actix::FinancialMutation<
        ::idem_actix::__private::Database<WriteContext<'static, Postgres>>,
    > for create_payment {}
    impl<'__idem> ::idem_actix::__private::actix_web::dev::HttpServiceFactory
    for create_payment
    where
        &'__idem create_payment: ::idem_actix::__private::MountedThroughTheGate,
    {
        fn register(self, _: &mut ::idem_actix::__private::actix_web::dev::AppService) {}
    }
    #[allow(dead_code)]
    fn __idem_takes_the_key() {
        ::idem_actix::__private::takes_the_key::<
            (IdempotencyKey, web::Json<NewPayment>),
            _,
        >();
    }
    impl ::idem_actix::__private::Mount<
        ::idem_actix::__private::Database<WriteContext<'static, Postgres>>,
    > for create_payment {
        fn mount(config: &mut ::idem_actix::__private::actix_web::web::ServiceConfig) {
            /// Records a payment.
            async fn create_payment(
                key: IdempotencyKey,
                write: &mut WriteContext<'_, Postgres>,
                payment: web::Json<NewPayment>,
            ) -> Result<HttpResponse, PaymentError> {
                record(write, &payment).await?;
                Ok(HttpResponse::Created().finish())
            }
            async fn __idem_serve(
                request: ::idem_actix::__private::actix_web::HttpRequest,
                payload: ::idem_actix::__private::actix_web::web::Payload,
            ) -> ::idem_actix::__private::actix_web::HttpResponse {
                #[allow(unused_imports)]
                use ::idem_actix::__private::{
                    ExtractorParamKind as _, KeyParamKind as _, PoolParamKind as _,
                };
                ::idem_actix::__private::serve::<
                    _,
                    ::idem_actix::__private::Database<WriteContext<'static, Postgres>>,
                    _,
                    _,
                    _,
                >(
                        <create_payment as ::core::default::Default>::default(),
                        request,
                        payload.into_inner(),
                        |
                            __idem_request: &::idem_actix::__private::actix_web::HttpRequest,
                            __idem_payload: &mut ::idem_actix::__private::actix_web::dev::Payload,
                            __idem_key: &::idem_actix::__private::IdempotencyKey|
                        {
                            let __idem_arg0 = (&::idem_actix::__private::ParamCheck::<
                                IdempotencyKey,
                            >::new())
                                .idem_param_kind()
                                .extract::<
                                    IdempotencyKey,
                                >(__idem_request, __idem_payload, __idem_key);
                            let __idem_arg1 = (&::idem_actix::__private::ParamCheck::<
                                web::Json<NewPayment>,
                            >::new())
                                .idem_param_kind()
                                .extract::<
                                    web::Json<NewPayment>,
                                >(__idem_request, __idem_payload, __idem_key);
                            ::std::boxed::Box::pin(async move {
                                ::core::result::Result::Ok::<
                                    _,
                                    ::idem_actix::__private::actix_web::Error,
                                >((__idem_arg0.await?, __idem_arg1.await?))
                            })
                        },
                        |__idem_write, (__idem_arg0, __idem_arg1), __idem_request| {
                            ::std::boxed::Box::pin(async move {
                                #[allow(unused_imports)]
                                use ::idem_actix::__private::{
                                    AnswerKind as _, AnsweredKind as _, CauseKind as _,
                                    ResultKind as _,
                                };
                                let output = create_payment(
                                        __idem_arg0,
                                        __idem_write,
                                        __idem_arg1,
                                    )
                                    .await;
                                match (&output).idem_answer_kind().split(output) {
                                    ::core::result::Result::Ok(answer) => {
                                        ::core::result::Result::Ok(
                                            ::idem_actix::__private::respond(answer, &__idem_request),
                                        )
                                    }
                                    ::core::result::Result::Err(refusal) => {
                                        ::core::result::Result::Err(
                                            (&refusal).idem_refusal_kind().failure(refusal),
                                        )
                                    }
                                }
                            })
                        },
                        &[],
                        ::core::option::Option::None,
                    )
                    .await
            }
            config
                .service(
                    ::idem_actix::__private::actix_web::web::resource("/payments")
                        .name("createPayment")
                        .guard(::idem_actix::__private::actix_web::guard::Post())
                        .to(__idem_serve),
                );
        }
    }
};
