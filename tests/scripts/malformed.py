#!/usr/bin/python3
"""Send malformed frames at the data plane, for the end-to-end tests.

usage: malformed.py IFACE DST_MAC COUNT

Each kind below is sent COUNT times through a raw AF_PACKET socket, byte for
byte as built here (scapy only builds them). Prints, as JSON, the counter each
kind must raise in the data plane. Runs with Debian's python3 (scapy lives there).
"""
import json
import socket
import sys

from scapy.all import ARP, ICMP, IP, UDP, Ether, Raw, raw  # noqa: E402

iface, dst, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
src = "02:00:00:00:aa:01"
me, peer = "10.10.1.1", "10.10.1.2"
eth = Ether(dst=dst, src=src)
echo = ICMP(type=8, id=7, seq=1) / Raw(b"x" * 32)


def patch(b, at, value):
    b = bytearray(b)
    b[at : at + len(value)] = value
    return bytes(b)


good_echo = raw(eth / IP(src=peer, dst=me) / echo)
kinds = {
    # name of the counter it must raise -> frame
    "ipv4_bad_checksum": patch(good_echo, 24, b"\xde\xad"),
    "ipv4_malformed": raw(eth / IP(src=peer, dst=me, ihl=4) / echo),
    "ipv4_fragment": raw(eth / IP(src=peer, dst=me, flags="MF") / echo),
    "icmp_bad_checksum": patch(good_echo, 36, b"\x00\x01"),
    "icmp_malformed": raw(eth / IP(src=peer, dst=me, proto=1, len=24) / Raw(b"\x08\x00\x00\x00")),
    "ipv4_bad_version": raw(eth / IP(src=peer, dst=me, version=6) / echo),
    "ipv4_unsupported_protocol": raw(eth / IP(src=peer, dst=me) / UDP(sport=1, dport=2) / Raw(b"u")),
    "ipv4_not_for_us": raw(eth / IP(src=peer, dst="10.10.1.77") / echo),
    "ipv4_bad_source": raw(eth / IP(src="255.255.255.255", dst=me) / echo),
    "arp_malformed": raw(Ether(dst="ff:ff:ff:ff:ff:ff", src=src, type=0x0806) / Raw(b"\x00\x01\x08\x00\x06\x04")),
    "arp_bad_sender": raw(
        Ether(dst="ff:ff:ff:ff:ff:ff", src=src) / ARP(op=1, hwsrc=src, psrc="192.0.2.9", pdst=me)
    ),
    "eth_unsupported_type": raw(Ether(dst=dst, src=src, type=0x88B5) / Raw(bytes(range(46)))),
    "eth_not_for_us": raw(Ether(dst="02:00:00:00:bb:bb", src=src) / IP(src=peer, dst=me) / echo),
    "eth_bad_source": raw(Ether(dst=dst, src="01:00:5e:00:00:01") / IP(src=peer, dst=me) / echo),
}
# One more "ipv4_malformed": total length far past the frame.
long_len = raw(eth / IP(src=peer, dst=me, len=1400) / echo)

s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind((iface, 0))
expected = {}
for name, frame in kinds.items():
    for _ in range(count):
        s.send(frame)
    expected[name] = expected.get(name, 0) + count
for _ in range(count):
    s.send(long_len)
expected["ipv4_malformed"] += count
print(json.dumps(expected))
