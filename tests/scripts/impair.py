#!/usr/bin/python3
"""Seeded L2 network impairment forwarder (a tiny netem stand-in).

usage: impair.py --a IFACE --b IFACE [--seed N] [--drop P] [--dup P]
                 [--reorder P] [--delay-ms D] [--jitter-ms J] [--stats FILE]

Runs inside a network namespace (`scripts/topology.sh up --impair` builds
PREFIX-imp with imp-c and imp-d) and bridges the two interfaces at layer 2
with one AF_PACKET raw socket each, both directions, in one thread. Only
IPv4 TCP frames (ethertype 0x0800, IP protocol 6) are impaired; everything
else (ARP, ...) is passed straight through, immediately.

Per TCP frame, in each direction, with the same probabilities (0..1):
  drop     P   the frame is not forwarded
  dup      P   the frame is sent twice (back to back, or both copies after
               the same delay)
  reorder  P   the frame is held back and released after the next 1-3 TCP
               frames in that direction have gone ahead (or after 5 ms if
               none come)
  delay-ms D, jitter-ms J
               every TCP frame waits D +- J ms (uniform, at least 0) in a
               time queue; with jitter, frames may leave in another order

Decisions come from random.Random(SEED) and every TCP frame consumes the
same number of draws, so a run is reproducible given the same arrival order.

Prints "ready" on stdout once both sockets listen. On SIGTERM/SIGINT writes
JSON counters per direction ("a_to_b", "b_to_a") to --stats (if given) and
to stderr, and exits 0. Counters:
  forwarded       TCP frames sent on (a duplicated frame counts once)
  dropped         TCP frames dropped on purpose
  duplicated      TCP frames sent twice
  reordered       TCP frames held back to be overtaken
  delayed         TCP frames that went through the delay queue
  passed_non_tcp  other frames passed straight through
  oversize        frames longer than 1514 bytes (offloads left on? GRO/GSO
                  hand AF_PACKET coalesced frames); still forwarded
  tx_errors       sends the kernel refused (e.g. larger than the MTU)
  pending_at_exit TCP frames still held or queued when the signal came
  rx_socket_drops frames the kernel dropped because this script's receive
                  buffer was full (unintended loss: the forwarder too slow)
Frames the forwarder itself transmitted (sll_pkttype PACKET_OUTGOING) are
never read back. Offloads on the bridged interfaces should be off
(topology.sh does it); this script does not change interface settings.
"""
import argparse
import heapq
import json
import os
import random
import select
import signal
import socket
import struct
import sys
import time

ETH_P_ALL = 0x0003
PACKET_OUTGOING = 4
PACKET_IGNORE_OUTGOING = 23  # linux/if_packet.h, kernel >= 4.20
SOL_PACKET = 263  # not exported by the socket module
MAX_PLAIN = 1514  # 1500 MTU + Ethernet header
REORDER_TIMEOUT = 0.005
BATCH = 64  # frames read per socket per poll wake-up
COUNTERS = ("forwarded", "dropped", "duplicated", "reordered", "delayed",
            "passed_non_tcp", "oversize", "tx_errors", "pending_at_exit",
            "rx_socket_drops")
PACKET_STATISTICS = 6  # struct tpacket_stats {tp_packets, tp_drops}


def probability(text):
    v = float(text)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is not a probability in 0..1")
    return v


def milliseconds(text):
    v = float(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"{text}: must be >= 0")
    return v


def parse_args():
    title, _usage, rest = __doc__.split("\n\n", 2)
    p = argparse.ArgumentParser(
        description=title + "\n\n" + rest,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--a", required=True, metavar="IFACE", help="first interface")
    p.add_argument("--b", required=True, metavar="IFACE", help="second interface")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--drop", type=probability, default=0.0, metavar="P",
                   help="probability a TCP frame is dropped")
    p.add_argument("--dup", type=probability, default=0.0, metavar="P",
                   help="probability a TCP frame is sent twice")
    p.add_argument("--reorder", type=probability, default=0.0, metavar="P",
                   help="probability a TCP frame is held back behind the next 1-3")
    p.add_argument("--delay-ms", type=milliseconds, default=0.0, metavar="D",
                   help="delay every TCP frame by D ms")
    p.add_argument("--jitter-ms", type=milliseconds, default=0.0, metavar="J",
                   help="add uniform -J..+J ms to the delay (never below 0)")
    p.add_argument("--stats", metavar="FILE", help="write the JSON counters here on exit")
    return p.parse_args()


def is_ipv4_tcp(frame):
    # Ethernet (14) + the IPv4 header up to the protocol byte (offset 23).
    return (len(frame) >= 34 and frame[12] == 0x08 and frame[13] == 0x00
            and (frame[14] >> 4) == 4 and frame[23] == 6)


def open_socket(iface):
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    try:
        s.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    except OSError:
        pass  # older kernel: the pkttype check below does the job
    for opt in (33, socket.SO_RCVBUF):  # SO_RCVBUFFORCE (root), else capped
        try:
            s.setsockopt(socket.SOL_SOCKET, opt, 8 << 20)
            break
        except OSError:
            pass
    s.bind((iface, ETH_P_ALL))
    s.setblocking(False)
    return s


class Direction:
    def __init__(self, name, rx, rx_iface, tx, args, rng, clock):
        self.name, self.rx, self.rx_iface, self.tx = name, rx, rx_iface, tx
        self.args, self.rng, self.clock = args, rng, clock
        self.stats = dict.fromkeys(COUNTERS, 0)
        self.held = []  # [frames_left, deadline, frame, copies, delay_s]
        self.queue = []  # heap of (release_time, seq, frame, copies)
        self.seq = 0
        self.delaying = args.delay_ms > 0 or args.jitter_ms > 0

    def send(self, frame, copies=1):
        for _ in range(copies):
            try:
                self.tx.send(frame)
            except OSError:
                self.stats["tx_errors"] += 1

    def emit(self, frame, copies, delay, now):
        """Past the reorder stage: into the delay queue, or out."""
        self.stats["forwarded"] += 1
        if self.delaying:
            self.stats["delayed"] += 1
            t = now + delay
            self.seq += 1
            heapq.heappush(self.queue, (t, self.seq, frame, copies))
        else:
            self.send(frame, copies)

    def frame_in(self, frame, now):
        st, a, rng = self.stats, self.args, self.rng
        if len(frame) > MAX_PLAIN:
            st["oversize"] += 1
        if not is_ipv4_tcp(frame):
            st["passed_non_tcp"] += 1
            self.send(frame)
            return
        # Always the same five draws per TCP frame: reproducible sequences.
        r_drop, r_dup, r_reo = rng.random(), rng.random(), rng.random()
        n_ahead = rng.randint(1, 3)
        # The frame's own delay, drawn now even if it is held back first.
        delay = max(a.delay_ms + rng.uniform(-a.jitter_ms, a.jitter_ms), 0.0) / 1000.0
        if r_drop < a.drop:
            st["dropped"] += 1
            return
        copies = 1
        if r_dup < a.dup:
            st["duplicated"] += 1
            copies = 2
        # This frame goes ahead of the ones already held: count it for them.
        released = []
        if self.held:
            still = []
            for h in self.held:
                h[0] -= 1
                (released if h[0] <= 0 else still).append(h)
            self.held = still
        if r_reo < a.reorder:
            st["reordered"] += 1
            self.held.append([n_ahead, now + REORDER_TIMEOUT, frame, copies, delay])
        else:
            self.emit(frame, copies, delay, now)
        for h in released:
            self.emit(h[2], h[3], h[4], now)

    def timers(self, now):
        if self.held:
            due = [h for h in self.held if h[1] <= now]
            if due:
                self.held = [h for h in self.held if h[1] > now]
                for h in due:
                    self.emit(h[2], h[3], h[4], now)
        q = self.queue
        while q and q[0][0] <= now:
            _, _, frame, copies = heapq.heappop(q)
            self.send(frame, copies)

    def next_deadline(self):
        t = [h[1] for h in self.held]
        if self.queue:
            t.append(self.queue[0][0])
        return min(t) if t else None

    def drain(self):
        """Read what is queued on rx (at most BATCH frames)."""
        now = None
        for _ in range(BATCH):
            try:
                frame, addr = self.rx.recvfrom(65536)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # e.g. ENETDOWN while an interface flaps: keep going
            # addr: (ifname, proto, pkttype, hatype, hwaddr)
            if len(addr) > 2 and addr[2] == PACKET_OUTGOING:
                continue
            if addr and addr[0] != self.rx_iface:
                continue  # queued before bind() narrowed the socket
            if not frame:
                continue
            if now is None:
                now = self.clock()
            self.frame_in(frame, now)


def main():
    args = parse_args()
    if args.a == args.b:
        sys.exit("impair: --a and --b must differ")
    rng = random.Random(args.seed)
    clock = time.monotonic
    try:
        sa, sb = open_socket(args.a), open_socket(args.b)
    except OSError as e:
        sys.exit(f"impair: cannot open --a {args.a} / --b {args.b}: {e}")
    dirs = {sa.fileno(): Direction("a_to_b", sa, args.a, sb, args, rng, clock),
            sb.fileno(): Direction("b_to_a", sb, args.b, sa, args, rng, clock)}

    # Signals wake poll() through a pipe; the loop then exits cleanly.
    rfd, wfd = os.pipe()
    os.set_blocking(rfd, False)
    os.set_blocking(wfd, False)
    signal.set_wakeup_fd(wfd, warn_on_full_buffer=False)
    stop = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.append(1))

    poller = select.poll()
    for fd in dirs:
        poller.register(fd, select.POLLIN)
    poller.register(rfd, select.POLLIN)

    print("ready", flush=True)
    while not stop:
        now = clock()
        deadlines = [t for t in (d.next_deadline() for d in dirs.values()) if t is not None]
        timeout = None
        if deadlines:
            timeout = max(0.0, min(deadlines) - now) * 1000.0
            timeout = int(timeout) + (1 if timeout % 1 else 0)  # round up: never spin early
        try:
            events = poller.poll(timeout)
        except InterruptedError:
            events = []
        for fd, ev in events:
            if fd == rfd:
                try:
                    os.read(rfd, 512)
                except OSError:
                    pass
            elif fd in dirs:
                dirs[fd].drain()
        now = clock()
        for d in dirs.values():
            d.timers(now)

    out = {}
    for d in dirs.values():
        d.stats["pending_at_exit"] = len(d.held) + len(d.queue)
        try:
            _, drops = struct.unpack("II", d.rx.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
            d.stats["rx_socket_drops"] = drops
        except OSError:
            pass
        out[d.name] = d.stats
    out["a"], out["b"], out["seed"] = args.a, args.b, args.seed
    text = json.dumps(out, sort_keys=True)
    if args.stats:
        with open(args.stats, "w") as f:
            f.write(text + "\n")
    print(text, file=sys.stderr, flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
