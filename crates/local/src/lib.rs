//! courier::local (work in progress).
