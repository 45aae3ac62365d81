//! The library's ids as sqlx values: `.bind(write.tenant())` and `.bind(&key)` bind their text,
//! on every database sqlx binds a `String` on.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::{Database, Encode, Type};

use crate::{IdempotencyKey, TenantId};

/// Binds as the text it holds.
macro_rules! bind_as_text {
    ($($ty:ty),*) => {$(
        impl<DB: Database> Type<DB> for $ty
        where
            String: Type<DB>,
        {
            fn type_info() -> DB::TypeInfo {
                <String as Type<DB>>::type_info()
            }

            fn compatible(ty: &DB::TypeInfo) -> bool {
                <String as Type<DB>>::compatible(ty)
            }
        }

        impl<'q, DB: Database> Encode<'q, DB> for $ty
        where
            String: Encode<'q, DB>,
        {
            fn encode_by_ref(
                &self,
                buf: &mut <DB as Database>::ArgumentBuffer,
            ) -> Result<IsNull, BoxDynError> {
                // Owned: SQLite's arguments keep what they borrow for the query's lifetime.
                <String as Encode<'q, DB>>::encode(self.as_str().to_owned(), buf)
            }
        }
    )*};
}

bind_as_text!(TenantId, IdempotencyKey);
