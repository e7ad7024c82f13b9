//! Message bodies, decoded only as far as a feature needs and borrowing from the body.
