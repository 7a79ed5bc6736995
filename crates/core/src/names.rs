//! The rule for service names, shared by every transport.
//!
//! A name is 1 to [`MAX_NAME_LEN`] bytes of UTF-8 (the limit `xous-names` has), other than
//! `.` and `..`, holding no control character (NUL included) and none of
//! [`REFUSED_CHARS`], and not starting with `@`. So Xous names such as
//! `"_Any descriptive and unique name under 64 chars_"` are accepted as they are.
//!
//! Why these refusals: names become file names in `courier::shm` (no `/`, NUL, `.` or `..`;
//! `\` refused too, so that a name means the same on every host), and one chunk of a zenoh
//! key in `courier::net` (no `*`, `$`, `?` or `#`, which are wildcards and reserved, and no
//! leading `@`, which zenoh keeps for its own chunks). Control characters would make `courier
//! ls` and error messages lie about the name.
//!
//! # Examples
//!
//! ```
//! use courier_core::names::is_valid_name;
//!
//! assert!(is_valid_name("echo.v1"));
//! assert!(is_valid_name("_Any descriptive and unique name under 64 chars_"));
//! assert!(is_valid_name("c++ log"));
//! assert!(!is_valid_name(""));
//! assert!(!is_valid_name(".."));
//! assert!(!is_valid_name("a/b"));
//! assert!(!is_valid_name("logs/*"));
//! assert!(!is_valid_name("tab\there"));
//! ```

/// Longest name, in bytes (as in `xous-names`).
pub const MAX_NAME_LEN: usize = 63;

/// The printable characters a name cannot hold: `/` and `\` (paths), `*`, `$`, `?` and `#`
/// (zenoh key wildcards and reserved characters).
pub const REFUSED_CHARS: [char; 6] = ['/', '\\', '*', '$', '?', '#'];

/// The rule in one line, for error messages.
pub const RULE: &str =
    "use 1 to 63 bytes, no control characters, none of / \\ * $ ? #, not . or .., no leading @";

/// Whether `name` is a valid service name (see the [module](self) for the rule).
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && name.len() <= MAX_NAME_LEN
        && !name.starts_with('@')
        && !name
            .chars()
            .any(|c| c.is_control() || REFUSED_CHARS.contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::format;

    #[test]
    fn names() {
        let longest = "n".repeat(MAX_NAME_LEN);
        for ok in [
            "a",
            "echo",
            "a.b",
            "x_y-z",
            "...",
            "A9",
            "a b",
            "c++",
            "é",
            "_Any descriptive and unique name under 64 chars_",
            "a@b",
            "%20",
            longest.as_str(),
        ] {
            assert!(is_valid_name(ok), "{ok:?}");
        }
        let long = "n".repeat(MAX_NAME_LEN + 1);
        // 62 ASCII bytes and a two-byte character: 64 bytes, one too many.
        let long_utf8 = format!("{}é", "n".repeat(MAX_NAME_LEN - 1));
        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "/",
            "a\\b",
            "a\0b",
            "tab\t",
            "line\n",
            "del\u{7f}",
            "*",
            "a$",
            "q?",
            "#1",
            "@admin",
            long.as_str(),
            long_utf8.as_str(),
        ] {
            assert!(!is_valid_name(bad), "{bad:?}");
        }
    }
}
