//! Runnable services built on idem; the AccuBooks example arrives with issue 4.
