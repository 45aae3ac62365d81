//! actix-web glue for idem (see issue 3).
