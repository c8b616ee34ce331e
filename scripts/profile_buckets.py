#!/usr/bin/env python3
"""Buckets the samples of `perf script -F comm,tid,ip,sym` by kind of work (scripts/profile.sh).

A sample belongs to the bucket of the first frame, from the leaf up, that matches a pattern below
(so malloc called from serde_json counts as allocation, serde_json's own code as JSON, and a
kernel TCP frame under ureq as socket I/O). Prints a Markdown table of shares and the top leaf
symbols.
"""
import collections
import re
import sys

# (bucket, pattern on a frame's symbol), tried per frame in this order.
BUCKETS = [
    ("fsync (kernel: ext4, jbd2, block)", r"fdatasync|fsync|ext4_|jbd2|blk_|nvme|submit_bio|file_write_and_wait"),
    ("allocation (malloc, free)", r"^(__libc_)?malloc|^(__libc_)?free$|^cfree|_int_malloc|_int_free|realloc|malloc_consolidate|^__rust_(alloc|dealloc|realloc)|alloc::raw_vec"),
    ("memory copies", r"^__memmove|^__memcpy|^memcpy|^__memset|^memset"),
    ("peer MAC (HMAC-SHA256)", r"sha2::|hmac::|sha256"),
    ("base64", r"base64::"),
    ("JSON (serde_json)", r"serde_json::|serde::"),
    ("pool kicker", r"pool_kick"),
    ("HTTP server (tiny_http)", r"tiny_http::"),
    ("HTTP client (ureq)", r"ureq::"),
    ("WAL (encode, write)", r"raftlabkv::storage::"),
    ("state machine (apply, reads)", r"raftlabkv::kv::"),
    ("Raft core", r"raftlabkv::raft::"),
    ("metrics", r"prometheus_client::|raftlabkv::server::metrics"),
    ("thread hand-offs (futex, wake, schedule)", r"futex|crossbeam_channel::|parking_lot|__schedule|schedule$|try_to_wake_up|pthread_cond|syscall$"),
    ("socket I/O (kernel TCP, loopback)", r"tcp_|inet_|sock_|__sys_(send|recv|accept|connect)|sendto|recvfrom|__x64_sys_(read|write|sendto|recvfrom|accept|connect|close|poll|epoll)|loopback|ip_|__dev_queue|net_rx|__netif|skb"),
    ("syscalls, other kernel", r"entry_SYSCALL|do_syscall|__x64_sys_|syscall_exit|ret_from_fork"),
    ("our server glue", r"raftlabkv::"),
    ("std, other", r"std::|core::"),
]
COMPILED = [(name, re.compile(p)) for name, p in BUCKETS]


def samples(path):
    frames, comm = [], None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if comm is not None:
                    yield comm, frames
                frames, comm = [], None
            elif not line.startswith((" ", "\t")):
                comm = line.split()[0]
            else:
                parts = line.strip().split(None, 1)
                frames.append(parts[1] if len(parts) > 1 else "[unknown]")
    if comm is not None:
        yield comm, frames


def bucket_of(frames):
    for sym in frames:
        for name, rx in COMPILED:
            if rx.search(sym):
                return name
    return "unresolved"


def main():
    counts = collections.Counter()
    leaves = collections.Counter()
    total = 0
    for _comm, frames in samples(sys.argv[1]):
        total += 1
        counts[bucket_of(frames)] += 1
        leaves[re.sub(r"\+0x[0-9a-f]+$", "", frames[0]) if frames else "[none]"] += 1
    if total == 0:
        print("no samples (is perf allowed here? try as root)")
        return
    print(f"| kind of work | share of {total:,} samples |")
    print("|---|---|")
    for name, n in counts.most_common():
        print(f"| {name} | {100 * n / total:.1f}% |")
    print()
    print("Top leaf symbols:")
    print()
    for sym, n in leaves.most_common(25):
        print(f"- {100 * n / total:.1f}% {sym[:120]}")


if __name__ == "__main__":
    main()
