//! What a protected handler takes, checked parameter by parameter with the zero-sized tags of
//! [`answer`](crate::answer) (autoref specialization): the client's key (however the user
//! names its type), any other actix-web extractor, never a database pool, and one write
//! context, whose referent names the write's database.

use std::marker::PhantomData;

use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::{LocalBoxFuture, ready};
use idem_runtime::{Backend, IdempotencyKey, WriteContext};

/// A parameter type of a protected handler, told apart by type with the same specialization:
/// `(&ParamCheck::<T>::new()).idem_param_kind().extract::<T>(…)` takes the client's key for
/// [`IdempotencyKey`] (however the user names it), extracts any other actix-web extractor, and
/// fails to compile, at the parameter, for a database pool or a type that is not an extractor.
pub struct ParamCheck<T>(PhantomData<T>);

impl<T> ParamCheck<T> {
    /// The check of `T`.
    pub const fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for ParamCheck<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// What one parameter's extraction resolves to.
pub type Extraction<T> = LocalBoxFuture<'static, Result<T, actix_web::Error>>;

/// The tag of the key parameter.
pub struct KeyParam;

/// Picks `KeyParam` for [`IdempotencyKey`].
pub trait KeyParamKind {
    /// The tag.
    fn idem_param_kind(&self) -> KeyParam {
        KeyParam
    }
}

impl KeyParamKind for ParamCheck<IdempotencyKey> {}

impl KeyParam {
    /// The client's key, validated before any extractor ran. `T` is the parameter's type as
    /// the handler spells it, which the expansion names for every tag alike.
    #[allow(clippy::extra_unused_type_parameters)]
    pub fn extract<T>(
        self,
        _: &HttpRequest,
        _: &mut Payload,
        key: &IdempotencyKey,
    ) -> Extraction<IdempotencyKey> {
        Box::pin(ready(Ok(key.clone())))
    }
}

/// A database pool, directly or in app data: what a protected handler must not take.
pub trait IsPool {}

impl<DB: sqlx::Database> IsPool for sqlx::Pool<DB> {}
impl<T: IsPool> IsPool for actix_web::web::Data<T> {}
impl<T: IsPool> IsPool for actix_web::web::ThinData<T> {}
impl<T: IsPool + Clone> IsPool for actix_web::web::ReqData<T> {}
impl<T: IsPool> IsPool for std::sync::Arc<T> {}
impl<T: IsPool> IsPool for Option<T> {}
impl<T: IsPool, E> IsPool for Result<T, E> {}

/// The tag of a pool parameter.
pub struct PoolParam;

/// Picks `PoolParam` for a pool.
pub trait PoolParamKind {
    /// The tag.
    fn idem_param_kind(&self) -> PoolParam {
        PoolParam
    }
}

impl<T: IsPool> PoolParamKind for ParamCheck<T> {}

impl PoolParam {
    /// Refuses the parameter: no type satisfies the bound, whose message says what to do.
    pub fn extract<T: WriteThroughTheTransaction + 'static>(
        self,
        _: &HttpRequest,
        _: &mut Payload,
        _: &IdempotencyKey,
    ) -> Extraction<T> {
        Box::pin(ready(Err(actix_web::error::ErrorInternalServerError(
            "a pool parameter",
        ))))
    }
}

/// The tag of any other parameter: an actix-web extractor.
pub struct ExtractorParam;

/// Picks `ExtractorParam` for anything else (one autoref further away).
pub trait ExtractorParamKind {
    /// The tag.
    fn idem_param_kind(&self) -> ExtractorParam {
        ExtractorParam
    }
}

impl<T> ExtractorParamKind for &ParamCheck<T> {}

impl ExtractorParam {
    /// Extracts the parameter from the request and its buffered body.
    pub fn extract<T: Extractor>(
        self,
        request: &HttpRequest,
        payload: &mut Payload,
        _: &IdempotencyKey,
    ) -> Extraction<T> {
        let extraction = T::from_request(request, payload);
        Box::pin(async move { extraction.await.map_err(Into::into) })
    }
}

/// An actix-web extractor: what a protected handler's other parameters are.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an actix-web extractor, so a protected handler cannot take it",
    label = "not an extractor",
    note = "a protected handler takes its `IdempotencyKey`, its `&mut WriteContext<'_, DB>` and actix-web extractors (`web::Json<T>`, `web::Path<T>`, `web::Query<T>`, `HttpRequest`, …); compute anything else inside the handler"
)]
pub trait Extractor: FromRequest<Future: 'static> + 'static {}

#[diagnostic::do_not_recommend]
impl<T: FromRequest<Future: 'static> + 'static> Extractor for T {}

/// Implemented by no type: the bound a pool parameter fails, with the sentence it shows.
#[diagnostic::on_unimplemented(
    message = "a protected handler cannot take a database pool: `{T}` writes outside the claimed transaction",
    label = "a write through this pool commits even when the protected write rolls back, and again on every retry",
    note = "write through the write context's transaction instead: `write.tx()`; a read that must not be part of the write belongs in an unprotected handler"
)]
pub trait WriteThroughTheTransaction<T = Self> {}

/// The parameter types of a handler, without its write context, that hold the client's key at
/// position `I`: a handler takes exactly one [`IdempotencyKey`], whatever its name, among at
/// most twelve parameters.
#[diagnostic::on_unimplemented(
    message = "a protected handler takes the client's idempotency key",
    label = "add a parameter `key: IdempotencyKey`",
    note = "the key is `idem_actix::IdempotencyKey`, under any name or path; another type of that name is not the key"
)]
pub trait TakesTheKey<I> {}

/// The positions of [`TakesTheKey`].
pub mod key_position {
    macro_rules! positions {
        ($($position:ident)*) => {$(
            /// A position of the key among the handler's parameters.
            pub enum $position {}
        )*};
    }
    positions!(P0 P1 P2 P3 P4 P5 P6 P7 P8 P9 P10 P11);
}

macro_rules! takes_the_key {
    ($( ($($before:ident)*) $position:ident ($($after:ident)*) ;)*) => {$(
        #[diagnostic::do_not_recommend]
        impl<$($before,)* $($after,)*> TakesTheKey<key_position::$position>
            for ($($before,)* IdempotencyKey, $($after,)*)
        {
        }
    )*};
}

takes_the_key! {
    () P0 ();
    () P0 (T1);
    (T0) P1 ();
    () P0 (T1 T2);
    (T0) P1 (T2);
    (T0 T1) P2 ();
    () P0 (T1 T2 T3);
    (T0) P1 (T2 T3);
    (T0 T1) P2 (T3);
    (T0 T1 T2) P3 ();
    () P0 (T1 T2 T3 T4);
    (T0) P1 (T2 T3 T4);
    (T0 T1) P2 (T3 T4);
    (T0 T1 T2) P3 (T4);
    (T0 T1 T2 T3) P4 ();
    () P0 (T1 T2 T3 T4 T5);
    (T0) P1 (T2 T3 T4 T5);
    (T0 T1) P2 (T3 T4 T5);
    (T0 T1 T2) P3 (T4 T5);
    (T0 T1 T2 T3) P4 (T5);
    (T0 T1 T2 T3 T4) P5 ();
    () P0 (T1 T2 T3 T4 T5 T6);
    (T0) P1 (T2 T3 T4 T5 T6);
    (T0 T1) P2 (T3 T4 T5 T6);
    (T0 T1 T2) P3 (T4 T5 T6);
    (T0 T1 T2 T3) P4 (T5 T6);
    (T0 T1 T2 T3 T4) P5 (T6);
    (T0 T1 T2 T3 T4 T5) P6 ();
    () P0 (T1 T2 T3 T4 T5 T6 T7);
    (T0) P1 (T2 T3 T4 T5 T6 T7);
    (T0 T1) P2 (T3 T4 T5 T6 T7);
    (T0 T1 T2) P3 (T4 T5 T6 T7);
    (T0 T1 T2 T3) P4 (T5 T6 T7);
    (T0 T1 T2 T3 T4) P5 (T6 T7);
    (T0 T1 T2 T3 T4 T5) P6 (T7);
    (T0 T1 T2 T3 T4 T5 T6) P7 ();
    () P0 (T1 T2 T3 T4 T5 T6 T7 T8);
    (T0) P1 (T2 T3 T4 T5 T6 T7 T8);
    (T0 T1) P2 (T3 T4 T5 T6 T7 T8);
    (T0 T1 T2) P3 (T4 T5 T6 T7 T8);
    (T0 T1 T2 T3) P4 (T5 T6 T7 T8);
    (T0 T1 T2 T3 T4) P5 (T6 T7 T8);
    (T0 T1 T2 T3 T4 T5) P6 (T7 T8);
    (T0 T1 T2 T3 T4 T5 T6) P7 (T8);
    (T0 T1 T2 T3 T4 T5 T6 T7) P8 ();
    () P0 (T1 T2 T3 T4 T5 T6 T7 T8 T9);
    (T0) P1 (T2 T3 T4 T5 T6 T7 T8 T9);
    (T0 T1) P2 (T3 T4 T5 T6 T7 T8 T9);
    (T0 T1 T2) P3 (T4 T5 T6 T7 T8 T9);
    (T0 T1 T2 T3) P4 (T5 T6 T7 T8 T9);
    (T0 T1 T2 T3 T4) P5 (T6 T7 T8 T9);
    (T0 T1 T2 T3 T4 T5) P6 (T7 T8 T9);
    (T0 T1 T2 T3 T4 T5 T6) P7 (T8 T9);
    (T0 T1 T2 T3 T4 T5 T6 T7) P8 (T9);
    (T0 T1 T2 T3 T4 T5 T6 T7 T8) P9 ();
    () P0 (T1 T2 T3 T4 T5 T6 T7 T8 T9 T10);
    (T0) P1 (T2 T3 T4 T5 T6 T7 T8 T9 T10);
    (T0 T1) P2 (T3 T4 T5 T6 T7 T8 T9 T10);
    (T0 T1 T2) P3 (T4 T5 T6 T7 T8 T9 T10);
    (T0 T1 T2 T3) P4 (T5 T6 T7 T8 T9 T10);
    (T0 T1 T2 T3 T4) P5 (T6 T7 T8 T9 T10);
    (T0 T1 T2 T3 T4 T5) P6 (T7 T8 T9 T10);
    (T0 T1 T2 T3 T4 T5 T6) P7 (T8 T9 T10);
    (T0 T1 T2 T3 T4 T5 T6 T7) P8 (T9 T10);
    (T0 T1 T2 T3 T4 T5 T6 T7 T8) P9 (T10);
    (T0 T1 T2 T3 T4 T5 T6 T7 T8 T9) P10 ();
    () P0 (T1 T2 T3 T4 T5 T6 T7 T8 T9 T10 T11);
    (T0) P1 (T2 T3 T4 T5 T6 T7 T8 T9 T10 T11);
    (T0 T1) P2 (T3 T4 T5 T6 T7 T8 T9 T10 T11);
    (T0 T1 T2) P3 (T4 T5 T6 T7 T8 T9 T10 T11);
    (T0 T1 T2 T3) P4 (T5 T6 T7 T8 T9 T10 T11);
    (T0 T1 T2 T3 T4) P5 (T6 T7 T8 T9 T10 T11);
    (T0 T1 T2 T3 T4 T5) P6 (T7 T8 T9 T10 T11);
    (T0 T1 T2 T3 T4 T5 T6) P7 (T8 T9 T10 T11);
    (T0 T1 T2 T3 T4 T5 T6 T7) P8 (T9 T10 T11);
    (T0 T1 T2 T3 T4 T5 T6 T7 T8) P9 (T10 T11);
    (T0 T1 T2 T3 T4 T5 T6 T7 T8 T9) P10 (T11);
    (T0 T1 T2 T3 T4 T5 T6 T7 T8 T9 T10) P11 ();
}

/// Checks, at the parameters, that the handler takes the key once.
pub fn takes_the_key<Params: TakesTheKey<I>, I>() {}

/// The referent of a handler's `&mut` parameter, which must be idem's write context: names its
/// database, so aliases of [`WriteContext`] are recognised by type.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not idem's write context",
    label = "the one `&mut` parameter of a protected handler is its write context",
    note = "take it as `write: &mut WriteContext<'_, Postgres>` (or `Sqlite`, `Any`): its transaction is `write.tx()`"
)]
pub trait WriteTarget {
    /// The database of the write.
    type Database: Backend;
}

impl<DB: Backend> WriteTarget for WriteContext<'static, DB> {
    type Database = DB;
}
