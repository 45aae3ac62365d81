use idem_actix::{IdempotencyKey, WriteContext, financial_mutation};
use sqlx::Sqlite;

struct Receipt;

#[financial_mutation("createPayment", post = "/payments")]
async fn create_payment(key: IdempotencyKey, write: &mut WriteContext<'_, Sqlite>) -> Receipt {
    let _ = (key, write);
    Receipt
}

fn main() {}
