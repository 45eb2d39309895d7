//! Progressive learning.
