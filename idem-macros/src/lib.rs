//! The `#[financial_mutation]` and `#[high_risk_mutation]` attributes of idem (see issue 3).
