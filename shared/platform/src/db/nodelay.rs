//! Turns off Nagle's algorithm on this process's connections to PostgreSQL.
//!
//! sqlx 0.9.0 no longer sets `TCP_NODELAY` on its sockets (launchbadge/sqlx#4335). A statement
//! whose parameters span more than one TCP segment, like the scorer's batched writes, then holds
//! its last segment back until the server's delayed ACK, about 40 ms a statement: the scorer ran at
//! less than half its speed over TCP compared with a Unix socket. sqlx gives no access to its
//! sockets, so after each new connection this borrows every TCP socket of the process that talks
//! to the database's port (a duplicate through `pidfd_getfd`, which shares the socket's options)
//! and sets the flag. Delete this module when sqlx sets `TCP_NODELAY` again.

use std::{io, net::SocketAddr};

/// Sets `TCP_NODELAY` on every TCP socket of this process whose peer port is `port`; returns how
/// many sockets had it newly set. Other sockets are left untouched.
#[cfg(target_os = "linux")]
pub fn apply(port: u16) -> io::Result<usize> {
    use rustix::{
        net::sockopt,
        process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open},
    };

    let me = pidfd_open(getpid(), PidfdFlags::empty())?;
    let mut set = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // The fd may have been closed (or reused) since the directory was read: then it simply
        // fails here or is not a socket to PostgreSQL.
        let Ok(socket) = pidfd_getfd(&me, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let peer = rustix::net::getpeername(&socket)
            .ok()
            .flatten()
            .and_then(|a| SocketAddr::try_from(a).ok());
        if peer.is_some_and(|p| p.port() == port) && !sockopt::tcp_nodelay(&socket)? {
            sockopt::set_tcp_nodelay(&socket, true)?;
            set += 1;
        }
    }
    Ok(set)
}

#[cfg(not(target_os = "linux"))]
pub fn apply(_port: u16) -> io::Result<usize> {
    Ok(0)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use rustix::net::sockopt;

    #[test]
    fn sets_nodelay_on_sockets_to_the_port_and_only_those() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("socket");
        let other = TcpListener::bind("127.0.0.1:0").expect("socket");
        let to_db = TcpStream::connect(listener.local_addr().expect("socket")).expect("socket");
        let elsewhere = TcpStream::connect(other.local_addr().expect("socket")).expect("socket");
        assert!(!sockopt::tcp_nodelay(&to_db).expect("socket"));

        let set = super::apply(listener.local_addr().expect("socket").port()).expect("socket");

        assert_eq!(set, 1);
        assert!(sockopt::tcp_nodelay(&to_db).expect("socket"));
        assert!(!sockopt::tcp_nodelay(&elsewhere).expect("socket"));
        assert_eq!(
            super::apply(listener.local_addr().expect("socket").port()).expect("socket"),
            0
        );
    }
}
