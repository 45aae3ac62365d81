use actix_web::HttpResponse;
use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::Sqlite;

struct Payments;

impl Payments {
    #[financial_mutation("createPayment", post = "/payments")]
    async fn create_payment(
        &self,
        key: IdempotencyKey,
        write: &mut WriteContext<'_, Sqlite>,
    ) -> HttpResponse {
        let _ = (key, write);
        HttpResponse::Created().finish()
    }
}

fn main() {}
