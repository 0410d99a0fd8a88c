//! The few system calls neither std nor socket2 offer, each a one-line `libc` call.
//!
//! This is the crate's only `unsafe`. (`nix` would do it safely, but the server depends on
//! `nix` with other features, and Cargo would unify them and rebuild the server.)
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// `clock_gettime(CLOCK_MONOTONIC)` in nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and
    // CLOCK_MONOTONIC is a clock every Linux kernel has, so the call only writes `ts`.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Clock ticks per second for `/proc` CPU times (`sysconf(_SC_CLK_TCK)`).
pub fn clock_ticks() -> f64 {
    // SAFETY: sysconf takes a plain integer and reads no memory of ours.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// Raises the open-files soft limit to the hard limit; returns the new soft limit.
pub fn raise_nofile() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid, writable rlimit for the duration of the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: `limit` is a valid rlimit that the call only reads.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(limit.rlim_cur)
}

/// Sets `IP_BIND_ADDRESS_NO_PORT`: a socket bound to `addr:0` gets its port at connect
/// time, so one source address can reach many destinations without running out of ports.
pub fn set_bind_address_no_port(socket: &impl AsRawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: the fd is open (borrowed from a live socket), and the option value points to
    // a c_int whose size is passed along; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&raw const on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// `shutdown(fd, SHUT_WR)`: no more sends; the peer reads end-of-stream.
///
/// The caller must hold the socket open (here: the connection's write half is alive).
pub fn shutdown_write(fd: RawFd) {
    // SAFETY: shutdown reads no memory; on a stale fd it fails with EBADF/ENOTSOCK,
    // which is ignored.
    let _ = unsafe { libc::shutdown(fd, libc::SHUT_WR) };
}

/// `shutdown(fd, SHUT_RDWR)`: a FIN to the peer, and this side's reads see end-of-stream.
pub fn shutdown_both(fd: RawFd) {
    // SAFETY: as in `shutdown_write`.
    let _ = unsafe { libc::shutdown(fd, libc::SHUT_RDWR) };
}

/// `shutdown(fd, SHUT_RD)`: this side's reads see end-of-stream; nothing is sent.
pub fn shutdown_read(fd: RawFd) {
    // SAFETY: as in `shutdown_write`.
    let _ = unsafe { libc::shutdown(fd, libc::SHUT_RD) };
}

/// `SO_LINGER` on with a zero timeout: closing the socket sends a TCP reset instead of a FIN.
pub fn set_linger_zero(fd: RawFd) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: the option value points to a `linger` whose size is passed along; the kernel
    // only reads it; on a stale fd the call fails with EBADF/ENOTSOCK, which is ignored.
    let _ = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&raw const linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
}

/// A one-shot timer on `CLOCK_MONOTONIC` (`timerfd_create`), in blocking mode so an
/// io_uring read of it completes when it expires (the kernel polls it) instead of failing
/// with `EAGAIN`.
pub fn monotonic_timer() -> io::Result<OwnedFd> {
    // SAFETY: timerfd_create takes two integers and reads no memory of ours.
    let fd = unsafe { libc::timerfd_create(libc::CLOCK_MONOTONIC, libc::TFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by timerfd_create, is open, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Arms a [`monotonic_timer`] to expire once at `deadline_ns` on `CLOCK_MONOTONIC`
/// (`TFD_TIMER_ABSTIME`: a deadline already past expires at once).
pub fn arm_timer_at(timer: &impl AsRawFd, deadline_ns: u64) -> io::Result<()> {
    // A zero it_value would disarm the timer; 1 ns is long past.
    let deadline_ns = deadline_ns.max(1);
    let spec = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: (deadline_ns / 1_000_000_000) as libc::time_t,
            tv_nsec: (deadline_ns % 1_000_000_000) as libc::c_long,
        },
    };
    // SAFETY: the fd is open (borrowed from a live timer), `spec` is a valid itimerspec the
    // call only reads, and a null old-value pointer is allowed.
    let rc = unsafe {
        libc::timerfd_settime(
            timer.as_raw_fd(),
            libc::TFD_TIMER_ABSTIME,
            &spec,
            std::ptr::null_mut(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_monotonic_clock_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn a_timer_armed_in_the_past_is_readable_at_once() {
        use std::io::Read;
        let timer = monotonic_timer().unwrap();
        arm_timer_at(&timer, monotonic_ns()).unwrap();
        let mut expirations = [0u8; 8];
        std::fs::File::from(timer)
            .read_exact(&mut expirations)
            .unwrap();
        assert_eq!(u64::from_ne_bytes(expirations), 1);
    }

    #[test]
    fn the_open_files_limit_can_be_raised_to_its_hard_limit() {
        assert!(raise_nofile().unwrap() > 0);
    }
}
