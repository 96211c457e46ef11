//! Operator tests (written with the operator).
