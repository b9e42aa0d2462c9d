//! What the operating system's errors mean for pglb, by their error
//! numbers (never by their text).

use std::io;

/// The process or the system is out of file descriptors (or buffers):
/// pglb's own limit, not a fault of the peer.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// The system's words for an error, without Rust's ` (os error N)`:
/// `Connection refused`, as HAProxy's check lines print it.
pub fn describe(e: &io::Error) -> String {
    let Some(n) = e.raw_os_error() else { return e.to_string() };
    let mut buf = [0 as libc::c_char; 256];
    // SAFETY: strerror_r writes a NUL-terminated message of at most buf.len() bytes into buf.
    if unsafe { libc::strerror_r(n, buf.as_mut_ptr(), buf.len()) } != 0 {
        return e.to_string();
    }
    // SAFETY: strerror_r succeeded, so buf holds a NUL-terminated string.
    unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn describes_errors_as_the_system_words_them() {
        let e = std::io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(super::describe(&e), "Connection refused");
        assert_eq!(super::describe(&std::io::Error::other("custom")), "custom");
    }

    #[test]
    fn out_of_descriptors_is_known_by_its_number() {
        assert!(super::is_resource_exhaustion(&std::io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(!super::is_resource_exhaustion(&std::io::Error::from_raw_os_error(libc::ECONNREFUSED)));
        assert!(!super::is_resource_exhaustion(&std::io::Error::other("Too many open files (os error 24)")));
    }
}
