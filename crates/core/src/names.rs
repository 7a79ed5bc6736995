//! The rule for service names, shared by every transport: 1 to [`MAX_NAME_LEN`] bytes of
//! `[A-Za-z0-9._-]`, and not `.` or `..`. Names become file names in `courier::shm`, so the
//! rule keeps out path separators, NUL and the directory entries `.` and `..`.
//!
//! # Examples
//!
//! ```
//! use courier_core::names::is_valid_name;
//!
//! assert!(is_valid_name("echo.v1"));
//! assert!(!is_valid_name(""));
//! assert!(!is_valid_name(".."));
//! assert!(!is_valid_name("a/b"));
//! ```

/// Longest name, in bytes (as in `xous-names`).
pub const MAX_NAME_LEN: usize = 63;

/// Whether `name` is a valid service name: 1 to [`MAX_NAME_LEN`] bytes of `[A-Za-z0-9._-]`,
/// and not `.` or `..`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in [
            "a",
            "echo",
            "a.b",
            "x_y-z",
            "...",
            "A9",
            &"n".repeat(MAX_NAME_LEN),
        ] {
            assert!(is_valid_name(ok), "{ok:?}");
        }
        let long = "n".repeat(MAX_NAME_LEN + 1);
        for bad in ["", ".", "..", "a/b", "/", "a\0b", "é", "a b", long.as_str()] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }
}
