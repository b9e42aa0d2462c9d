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

/// The address of an inherited listening stream socket (`fd@N`): the
/// descriptor must be open and a stream socket, as HAProxy checks.
pub fn inherited_stream(fd: i32) -> io::Result<std::net::SocketAddr> {
    use std::os::fd::BorrowedFd;
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: the descriptor is only borrowed for these two queries; fstat
    // first proves it is open.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let sock = socket2::SockRef::from(&borrowed);
    if sock.r#type()? != socket2::Type::STREAM {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("socket on file descriptor '{fd}' is of the wrong type")));
    }
    sock.local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("socket on file descriptor '{fd}' is not a TCP socket")))
}

/// A private duplicate of an inherited descriptor (close-on-exec), so that
/// the inherited one stays open for the process's life: each generation
/// that listens on `fd@N` owns and closes its own copy, and a reload that
/// keeps, drops or takes back `fd@N` never closes N itself.
pub fn dup_inherited(fd: i32) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that this function owns.
    let new = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if new < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `new` was just created and is owned by nothing else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(new) })
}

/// The machine's host name (`gethostname`), or `localhost`.
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into buf.
    if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Local time broken down, and the offset from UTC in seconds.
pub struct LocalTime {
    pub year: i32,
    /// 1..=12
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    pub micros: u32,
    pub offset_secs: i64,
}

/// `t` in the machine's time zone (`localtime_r`), as HAProxy's log
/// headers and `%t` show it.
pub fn local_time(t: std::time::SystemTime) -> LocalTime {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as libc::time_t;
    // SAFETY: localtime_r fills the zeroed struct it is given.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    unsafe { libc::localtime_r(&secs, &mut tm) };
    LocalTime {
        year: tm.tm_year + 1900,
        month: (tm.tm_mon + 1) as u32,
        day: tm.tm_mday as u32,
        hour: tm.tm_hour as u32,
        minute: tm.tm_min as u32,
        second: tm.tm_sec as u32,
        micros: d.subsec_micros(),
        offset_secs: tm.tm_gmtoff,
    }
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
