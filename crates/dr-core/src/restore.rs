//! `dr restore`: fetch, check, decrypt, then (only then) touch the target.
