//! The runtime directory that holds the sockets and lock files of named services.
//!
//! Chosen in this order: `$COURIER_RUNTIME_DIR` (for tests and special setups),
//! `$XDG_RUNTIME_DIR/courier`, then `/tmp/courier-<uid>`. A listener creates it with mode
//! 0700 if it is missing, and refuses it if it is a symbolic link or not a directory, belongs
//! to another user, or grants other users more than search permission (0700 and 0711 are
//! accepted: 0711 lets other users reach a socket whose name they know, for a listener with
//! an allow-list, without listing or creating anything). Only the owner can create a name
//! there, so no other user can squat or replace a service.

use crate::error::ShmError;
use crate::sys;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The environment variable that overrides the runtime directory.
pub const RUNTIME_DIR_ENV: &str = "COURIER_RUNTIME_DIR";

/// The runtime directory this process would use, without creating or checking it.
///
/// # Errors
///
/// [`ShmError::NoRuntimeDir`] if `COURIER_RUNTIME_DIR` is set to a relative path.
pub fn runtime_dir() -> Result<PathBuf, ShmError> {
    choose(
        std::env::var_os(RUNTIME_DIR_ENV),
        std::env::var_os("XDG_RUNTIME_DIR"),
        sys::euid(),
    )
}

fn choose(over: Option<OsString>, xdg: Option<OsString>, uid: u32) -> Result<PathBuf, ShmError> {
    if let Some(d) = over.filter(|d| !d.is_empty()) {
        let d = PathBuf::from(d);
        return if d.is_absolute() {
            Ok(d)
        } else {
            Err(ShmError::NoRuntimeDir(format!(
                "{RUNTIME_DIR_ENV}={d:?} is not an absolute path"
            )))
        };
    }
    // The XDG spec says to ignore a relative XDG_RUNTIME_DIR.
    if let Some(x) = xdg.map(PathBuf::from).filter(|x| x.is_absolute()) {
        return Ok(x.join("courier"));
    }
    Ok(PathBuf::from(format!("/tmp/courier-{uid}")))
}

/// Whether a client running as `me` may look for sockets in a directory described by `info`.
fn client_may_use(info: &sys::FileInfo, me: u32) -> bool {
    info.is_dir && info.mode & 0o022 == 0 && (info.uid == me || info.uid == 0)
}

fn mode_ok(mode: u32) -> bool {
    mode & 0o700 == 0o700 && mode & 0o7077 & !0o011 == 0
}

/// Checks that `path` is a directory owned by `uid` with mode 0700 or 0711.
fn check(path: &Path, uid: u32) -> Result<(), ShmError> {
    let info = sys::lstat(path).map_err(ShmError::io("inspecting the runtime directory"))?;
    if !info.is_dir || info.uid != uid || !mode_ok(info.mode) {
        return Err(ShmError::UnsafeRuntimeDir {
            path: path.to_owned(),
            uid: info.uid,
            mode: if info.is_dir { info.mode } else { 0 },
            expected_uid: uid,
        });
    }
    Ok(())
}

/// The runtime directory, created (0700) if missing and checked, for a listener.
pub(crate) fn for_listener() -> Result<PathBuf, ShmError> {
    let dir = runtime_dir()?;
    let uid = sys::euid();
    match sys::mkdir(&dir, 0o700) {
        // The umask may have taken bits away; we made it, so we can set them.
        Ok(()) => {
            sys::chmod(&dir, 0o700).map_err(ShmError::io("setting the runtime directory's mode"))?
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(ShmError::Io {
                op: "creating the runtime directory",
                source: e,
            })
        }
    }
    check(&dir, uid)?;
    Ok(dir)
}

/// The runtime directory for a client: it must exist, be a directory, not be writable by
/// anyone but its owner, and belong to this user or to root. A directory of another user is
/// refused even where its mode looks right: with the predictable `/tmp/courier-<uid>`
/// fallback, another user could have made it first and serve this user's names from it.
/// (A client of another user's service points `COURIER_RUNTIME_DIR` at a directory of root's,
/// or trusts nothing there: the listener's uid is checked at connect too.)
pub(crate) fn for_client(name: &str) -> Result<PathBuf, ShmError> {
    match checked_for_client() {
        Ok(Some(dir)) => Ok(dir),
        Ok(None) => Err(ShmError::NotFound(name.to_owned())),
        Err(ShmError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::PermissionDenied =>
        {
            Err(ShmError::PermissionDenied {
                name: name.to_owned(),
                peer: None,
            })
        }
        Err(e) => Err(e),
    }
}

/// The runtime directory, checked as [`for_client`] does, or `None` if it does not exist
/// (no service has run yet): what a client, or `courier ls`, may read.
pub(crate) fn checked_for_client() -> Result<Option<PathBuf>, ShmError> {
    let dir = runtime_dir()?;
    let me = sys::euid();
    match sys::lstat(&dir) {
        Ok(info) if client_may_use(&info, me) => Ok(Some(dir)),
        Ok(info) => Err(ShmError::UnsafeRuntimeDir {
            path: dir,
            uid: info.uid,
            mode: if info.is_dir { info.mode } else { 0 },
            expected_uid: me,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ShmError::Io {
            op: "inspecting the runtime directory",
            source: e,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn choice_order() {
        let p = |s: &str| Some(OsString::from(s));
        assert_eq!(
            choose(p("/x"), p("/run/user/1"), 7).unwrap(),
            PathBuf::from("/x")
        );
        assert!(matches!(
            choose(p("rel"), None, 7),
            Err(ShmError::NoRuntimeDir(_))
        ));
        assert_eq!(
            choose(None, p("/run/user/1"), 7).unwrap(),
            PathBuf::from("/run/user/1/courier")
        );
        assert_eq!(
            choose(p(""), p("rel"), 7).unwrap(),
            PathBuf::from("/tmp/courier-7")
        );
        assert_eq!(
            choose(None, None, 7).unwrap(),
            PathBuf::from("/tmp/courier-7")
        );
    }

    #[test]
    fn a_client_refuses_a_directory_of_another_user() {
        let dir = |uid, mode| sys::FileInfo {
            uid,
            mode,
            is_dir: true,
        };
        assert!(client_may_use(&dir(1000, 0o700), 1000));
        assert!(client_may_use(&dir(0, 0o711), 1000), "root's directory");
        // Another user's directory, even with a good mode: a squatter of /tmp/courier-1000.
        assert!(!client_may_use(&dir(1001, 0o711), 1000));
        assert!(!client_may_use(&dir(1000, 0o777), 1000));
        let mut file = dir(1000, 0o700);
        file.is_dir = false;
        assert!(!client_may_use(&file, 1000));
    }

    #[test]
    fn modes() {
        assert!(mode_ok(0o700));
        assert!(mode_ok(0o711));
        assert!(mode_ok(0o701));
        for bad in [
            0o755, 0o750, 0o770, 0o707, 0o600, 0o1700, 0o4700, 0o720, 0o702,
        ] {
            assert!(!mode_ok(bad), "{bad:o}");
        }
    }
}
