use idem_actix::financial_mutation;

#[financial_mutation("createPayment", post = "/payments")]
struct CreatePayment;

fn main() {}
