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
    impl ::idem_actix::FinancialMutation for create_payment {}
    #[allow(dead_code)]
    fn __idem_parameters() {
        #[allow(unused_imports)]
        use ::idem_actix::__private::{OtherParamKind as _, PoolParamKind as _};
        (&::idem_actix::__private::ParamCheck::<web::Json<NewPayment>>::new())
            .idem_param_kind()
            .admit::<web::Json<NewPayment>>();
    }
    impl ::idem_actix::__private::Mount for create_payment {
        type Database = Postgres;
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
                ::idem_actix::__private::serve::<
                    _,
                    Postgres,
                    (web::Json<NewPayment>,),
                    _,
                >(
                        <create_payment as ::core::default::Default>::default(),
                        request,
                        payload.into_inner(),
                        |__idem_write, __idem_key, (__idem_arg0,), __idem_request| {
                            ::std::boxed::Box::pin(async move {
                                #[allow(unused_imports)]
                                use ::idem_actix::__private::{
                                    AnswerKind as _, AnsweredKind as _, CauseKind as _,
                                    ResultKind as _,
                                };
                                let output = create_payment(
                                        __idem_key,
                                        __idem_write,
                                        __idem_arg0,
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
