//! What the operating system's errors mean for pglb, by their error
//! numbers (never by their text).

use std::io;

/// The process or the system is out of file descriptors (or buffers):
/// pglb's own limit, not a fault of the peer.
pub fn is_resource_exhaustion(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

#[cfg(test)]
mod tests {
    #[test]
    fn out_of_descriptors_is_known_by_its_number() {
        assert!(super::is_resource_exhaustion(&std::io::Error::from_raw_os_error(libc::EMFILE)));
        assert!(!super::is_resource_exhaustion(&std::io::Error::from_raw_os_error(libc::ECONNREFUSED)));
        assert!(!super::is_resource_exhaustion(&std::io::Error::other("Too many open files (os error 24)")));
    }
}
