//! TCP options sqlx does not set on this process's connections to PostgreSQL.
//!
//! - `TCP_NODELAY`. sqlx 0.9.0 no longer sets it (launchbadge/sqlx#4335). A statement whose
//!   parameters span more than one TCP segment, like the scorer's batched writes, then holds its
//!   last segment back until the server's delayed ACK, about 40 ms a statement: the scorer ran at
//!   less than half its speed over TCP compared with a Unix socket.
//! - Finding a server that is gone: keepalive probes after [`KEEPALIVE_IDLE`] of silence, and
//!   `TCP_USER_TIMEOUT`, as libpq's `keepalives` and `tcp_user_timeout` parameters offer. A server
//!   that vanishes without closing its connections (its host lost, a failover that moves its
//!   address) otherwise leaves a statement waiting until the kernel stops retransmitting, about
//!   15 minutes. All that time a consumer would keep its events in progress, away from every other
//!   instance, and the pool would count the connection. With these the connection fails after
//!   about [`DEAD_AFTER`], an I/O error every service takes for the database being unreachable: it
//!   retries on a new connection. A server that is only slow still answers the probes from its
//!   kernel, so a long statement is not cut short (`DB_STATEMENT_TIMEOUT` bounds those, on the
//!   server). The exception is a pooler that stops reading while it waits for a server connection
//!   (PgBouncer with its pool full): a statement too large for the socket buffers then sits unsent,
//!   and fails after 30 s. [`server_side`] asks the same of the server for each connection, so a
//!   client that is gone has its transaction rolled back and its locks released.
//!
//! sqlx gives no access to its sockets, so after each new connection this borrows every TCP socket
//! of the process that talks to the database's port (a duplicate through `pidfd_getfd`, which
//! shares the socket's options) and sets them. Delete this module when sqlx sets them itself.

use std::{io, time::Duration};

/// Silence on a connection before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
const KEEPALIVE_PROBES: u32 = 4;
/// How long a server may leave probes, or data sent to it, unacknowledged before the connection
/// fails. Once `TCP_USER_TIMEOUT` is set Linux goes by it rather than by the count of probes; the
/// probes (at 10, 15, 20 and 25 s) make sure something is sent to be acknowledged.
pub const DEAD_AFTER: Duration = Duration::from_secs(30);

/// The same probing asked of the server for its side of a connection, as connection options
/// (PostgreSQL 12 or later): after a network split the server rolls back the abandoned
/// transaction and releases its row locks within about [`DEAD_AFTER`], instead of keeping them
/// for its default two hours, where a retried batch would wait on them until its statement
/// timeout. On a Unix socket the server ignores them.
pub fn server_side() -> [(&'static str, String); 4] {
    [
        ("tcp_keepalives_idle", KEEPALIVE_IDLE.as_secs().to_string()),
        (
            "tcp_keepalives_interval",
            KEEPALIVE_INTERVAL.as_secs().to_string(),
        ),
        ("tcp_keepalives_count", KEEPALIVE_PROBES.to_string()),
        ("tcp_user_timeout", DEAD_AFTER.as_millis().to_string()),
    ]
}

/// Sets the options on every TCP socket of this process whose peer port is `port`; returns how
/// many sockets lacked some. Other sockets are left untouched. A socket that refuses an option does
/// not keep the other sockets from theirs: the first refusal is returned once all were tried.
#[cfg(target_os = "linux")]
pub fn apply(port: u16) -> io::Result<usize> {
    use std::net::SocketAddr;

    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

    let me = pidfd_open(getpid(), PidfdFlags::empty())?;
    let mut set = 0;
    let mut refused = None;
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
        if peer.is_some_and(|p| p.port() == port) {
            match configure(&socket) {
                Ok(true) => set += 1,
                Ok(false) => {}
                Err(e) => {
                    refused.get_or_insert(e);
                }
            }
        }
    }
    refused.map_or(Ok(set), Err)
}

/// Sets what the socket lacks; whether it lacked anything. `TCP_NODELAY` first and on its own: the
/// scorer's speed depends on it whatever becomes of the rest.
#[cfg(target_os = "linux")]
fn configure(socket: &impl std::os::fd::AsFd) -> io::Result<bool> {
    use rustix::net::sockopt;
    let mut changed = false;
    if !sockopt::tcp_nodelay(socket)? {
        sockopt::set_tcp_nodelay(socket, true)?;
        changed = true;
    }
    if !probes_set(socket)? {
        sockopt::set_socket_keepalive(socket, true)?;
        sockopt::set_tcp_keepidle(socket, KEEPALIVE_IDLE)?;
        sockopt::set_tcp_keepintvl(socket, KEEPALIVE_INTERVAL)?;
        sockopt::set_tcp_keepcnt(socket, KEEPALIVE_PROBES)?;
        sockopt::set_tcp_user_timeout(socket, DEAD_AFTER.as_millis() as u32)?;
        changed = true;
    }
    Ok(changed)
}

#[cfg(target_os = "linux")]
fn probes_set(socket: &impl std::os::fd::AsFd) -> io::Result<bool> {
    use rustix::net::sockopt;
    Ok(sockopt::socket_keepalive(socket)?
        && sockopt::tcp_keepidle(socket)? == KEEPALIVE_IDLE
        && sockopt::tcp_keepintvl(socket)? == KEEPALIVE_INTERVAL
        && sockopt::tcp_keepcnt(socket)? == KEEPALIVE_PROBES
        && sockopt::tcp_user_timeout(socket)? == DEAD_AFTER.as_millis() as u32)
}

#[cfg(not(target_os = "linux"))]
pub fn apply(_port: u16) -> io::Result<usize> {
    Ok(0)
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::{TcpListener, TcpStream};

    use rustix::net::sockopt;

    use super::*;

    #[test]
    fn sets_the_options_on_sockets_to_the_port_and_only_those() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("socket");
        let other = TcpListener::bind("127.0.0.1:0").expect("socket");
        let to_db = TcpStream::connect(listener.local_addr().expect("socket")).expect("socket");
        let elsewhere = TcpStream::connect(other.local_addr().expect("socket")).expect("socket");
        assert!(!sockopt::tcp_nodelay(&to_db).expect("socket"));
        assert!(!probes_set(&to_db).expect("socket"));

        let set = apply(listener.local_addr().expect("socket").port()).expect("socket");

        assert_eq!(set, 1);
        assert!(sockopt::tcp_nodelay(&to_db).expect("socket"));
        assert!(sockopt::socket_keepalive(&to_db).expect("socket"));
        assert_eq!(
            sockopt::tcp_keepidle(&to_db).expect("socket"),
            KEEPALIVE_IDLE
        );
        let last_probe = KEEPALIVE_IDLE
            + sockopt::tcp_keepintvl(&to_db).expect("socket")
                * (sockopt::tcp_keepcnt(&to_db).expect("socket") - 1);
        assert!(
            last_probe < DEAD_AFTER,
            "a probe is out when the user timeout comes"
        );
        assert_eq!(sockopt::tcp_user_timeout(&to_db).expect("socket"), 30_000);
        assert!(!sockopt::tcp_nodelay(&elsewhere).expect("socket"));
        assert!(!sockopt::socket_keepalive(&elsewhere).expect("socket"));
        assert_eq!(
            apply(listener.local_addr().expect("socket").port()).expect("socket"),
            0
        );
    }
}
