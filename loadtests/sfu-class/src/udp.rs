//! The raw UDP send ceiling of this machine: what one thread can push through the kernel with
//! `sendto` (one datagram per call) and `sendmmsg` (32 per call) to loopback sockets that another
//! thread drains (waiting in epoll, as the load generator's subscribers do), in datagrams per
//! CPU-second of the sending thread.

use crate::proc::thread_cpu_secs;
use anyhow::{Context, Result};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

const SINKS: usize = 64;
const BATCH: usize = 32;

/// Datagrams per CPU-second of one sending thread.
pub struct Ceiling {
    pub sendto_per_cpu_sec: f64,
    pub sendmmsg_per_cpu_sec: f64,
    /// `sendmsg` with UDP GSO: runs of 2 and of 4 equal datagrams to one destination per call.
    pub gso2_per_cpu_sec: f64,
    pub gso4_per_cpu_sec: f64,
}

pub fn ceiling(size: usize, duration: Duration) -> Result<Ceiling> {
    let sinks: Vec<UdpSocket> = (0..SINKS)
        .map(|_| UdpSocket::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("binding sink sockets")?;
    let addrs: Vec<SocketAddr> = sinks
        .iter()
        .map(UdpSocket::local_addr)
        .collect::<std::io::Result<_>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    // The sinks are read the way the load generator reads its subscribers' sockets: one thread
    // waiting in epoll (mio) until a socket is readable, then reading it dry. A datagram that
    // reaches a socket whose reader waits costs the sender an epoll callback and a wake-up in
    // the kernel's delivery path (softirq, charged to the sending thread on loopback); the SFU
    // pays exactly that for every datagram to a subscriber, so the ceiling must pay it too.
    // (Until this run the sinks were polled without epoll, every 200 µs, and that cost was
    // charged to the SFU only.)
    let mut poll = mio::Poll::new().context("epoll for the sinks")?;
    let mut sinks: Vec<mio::net::UdpSocket> = sinks
        .into_iter()
        .map(|s| {
            s.set_nonblocking(true)?;
            Ok(mio::net::UdpSocket::from_std(s))
        })
        .collect::<std::io::Result<_>>()?;
    for (i, s) in sinks.iter_mut().enumerate() {
        poll.registry()
            .register(s, mio::Token(i), mio::Interest::READABLE)?;
    }
    let drain = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 2048];
            let mut events = mio::Events::with_capacity(SINKS);
            while !stop.load(Relaxed) {
                if poll
                    .poll(&mut events, Some(Duration::from_millis(50)))
                    .is_err()
                {
                    continue;
                }
                for ev in events.iter() {
                    let s = &sinks[ev.token().0];
                    while s.recv(&mut buf).is_ok() {}
                }
            }
        })
    };
    let sender = UdpSocket::bind("127.0.0.1:0")?;
    let payload = vec![0x80u8; size];

    let start_cpu = thread_cpu_secs();
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration {
        for a in &addrs {
            if sender.send_to(&payload, a).is_ok() {
                sent += 1;
            }
        }
    }
    let sendto = sent as f64 / (thread_cpu_secs() - start_cpu).max(1e-9);

    let start_cpu = thread_cpu_secs();
    let start = Instant::now();
    let mut sent = 0u64;
    let mut next = 0usize;
    while start.elapsed() < duration {
        sent += sendmmsg(&sender, &payload, &addrs, &mut next) as u64;
    }
    let sendmmsg = sent as f64 / (thread_cpu_secs() - start_cpu).max(1e-9);

    let mut gso = [0.0; 2];
    for (g, segments) in gso.iter_mut().zip([2usize, 4]) {
        let run = payload.repeat(segments);
        let start_cpu = thread_cpu_secs();
        let start = Instant::now();
        let mut sent = 0u64;
        while start.elapsed() < duration {
            for a in &addrs {
                if send_gso(&sender, &run, size, a) {
                    sent += segments as u64;
                }
            }
        }
        *g = sent as f64 / (thread_cpu_secs() - start_cpu).max(1e-9);
    }

    stop.store(true, Relaxed);
    let _ = drain.join();
    Ok(Ceiling {
        sendto_per_cpu_sec: sendto,
        sendmmsg_per_cpu_sec: sendmmsg,
        gso2_per_cpu_sec: gso[0],
        gso4_per_cpu_sec: gso[1],
    })
}

/// One `sendmmsg` of [`BATCH`] copies of `payload` to the next destinations in turn.
fn sendmmsg(socket: &UdpSocket, payload: &[u8], addrs: &[SocketAddr], next: &mut usize) -> usize {
    let mut names: Vec<libc::sockaddr_in> = Vec::with_capacity(BATCH);
    for i in 0..BATCH {
        let SocketAddr::V4(a) = addrs[(*next + i) % addrs.len()] else {
            continue;
        };
        names.push(libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: a.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(*a.ip()).to_be(),
            },
            sin_zero: [0; 8],
        });
    }
    *next = (*next + BATCH) % addrs.len();
    let mut iovs: Vec<libc::iovec> = names
        .iter()
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut libc::c_void,
            iov_len: payload.len(),
        })
        .collect();
    let mut msgs: Vec<libc::mmsghdr> = names
        .iter_mut()
        .zip(iovs.iter_mut())
        .map(|(name, iov)| {
            // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
            let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
            m.msg_hdr.msg_name = (name as *mut libc::sockaddr_in).cast();
            m.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
            m.msg_hdr.msg_iov = iov;
            m.msg_hdr.msg_iovlen = 1;
            m
        })
        .collect();
    // SAFETY: msgs points to msgs.len() initialised headers whose names and iovecs outlive the call.
    let n = unsafe { libc::sendmmsg(socket.as_raw_fd(), msgs.as_mut_ptr(), msgs.len() as u32, 0) };
    n.max(0) as usize
}

/// One `sendmsg` of `run` cut by the kernel into `segment`-byte datagrams (UDP GSO).
fn send_gso(socket: &UdpSocket, run: &[u8], segment: usize, dest: &SocketAddr) -> bool {
    let SocketAddr::V4(a) = dest else {
        return false;
    };
    let mut name = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: a.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*a.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    let mut iov = libc::iovec {
        iov_base: run.as_ptr() as *mut libc::c_void,
        iov_len: run.len(),
    };
    // Room for one cmsg carrying a u16, 8-byte aligned.
    let mut control = [0u64; 4];
    // SAFETY: msghdr is plain data; all-zero is a valid empty header.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut name as *mut libc::sockaddr_in).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE only computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(2) } as usize;
    // SAFETY: the control buffer is large enough for one u16 cmsg; pointers stay valid during
    // the call.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_UDP;
        (*cmsg).cmsg_type = libc::UDP_SEGMENT;
        (*cmsg).cmsg_len = libc::CMSG_LEN(2) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<u16>(), segment as u16);
        libc::sendmsg(socket.as_raw_fd(), &msg, 0) >= 0
    }
}
