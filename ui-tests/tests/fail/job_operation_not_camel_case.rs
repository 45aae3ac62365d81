// A job's operation is declared with `operation!`; its name is checked like a handler's.
idem_actix::operation! {
    financial ChargeLateFees = "charge_late_fees";
}

fn main() {}
