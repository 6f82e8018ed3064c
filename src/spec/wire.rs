//! Wire formats of the two API generations. STUB: implemented in the spec work.
