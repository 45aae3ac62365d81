//! The `#[financial_mutation]` and `#[high_risk_mutation]` attributes of idem.
//!
//! Use them through `idem-actix`, which re-exports them and holds the code they expand to; the
//! documentation and examples are there. This crate parses (`attr`), validates the handler
//! (`handler`) and expands (`expand`).

mod attr;
mod errors;
mod expand;
mod handler;

use proc_macro::TokenStream;

use crate::attr::Class;

/// Declares a financial operation (payments, invoices, payroll, reconciliation) and turns the
/// `async fn` handler into its exactly-once actix-web route. See `idem_actix` for the contract.
#[proc_macro_attribute]
pub fn financial_mutation(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::protected_handler(Class::Financial, args.into(), item.into()).into()
}

/// Declares a high-risk operation (inventory, customers, employees, settings, access) and turns
/// the `async fn` handler into its exactly-once actix-web route. See `idem_actix`.
#[proc_macro_attribute]
pub fn high_risk_mutation(args: TokenStream, item: TokenStream) -> TokenStream {
    expand::protected_handler(Class::HighRisk, args.into(), item.into()).into()
}
