//! Only the attributes and `operation!` create a registered operation: an implementation of
//! `RegisteredOperation` by hand, here borrowing another operation's registry entry, does not
//! compile.

use idem_actix::{Operation, RegisteredOperation, operation};

operation! {
    /// A registered operation.
    financial RefundPayment = "refundPayment";
}

/// An operation that no registry lists.
struct Chargeback;

impl RegisteredOperation for Chargeback {
    const OPERATION: &'static Operation = RefundPayment::OPERATION;
}

fn main() {}
