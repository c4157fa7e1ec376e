"""Address classification (net/url_policy.h) against Python's ipaddress module and the C
library's inet_aton, on random and boundary IPv4 addresses, their IPv4-mapped IPv6 forms
and their decimal, hex and octal spellings."""
import ipaddress
import random
import socket

from conftest import run, tool

# Ranges whose edges are worth probing.
SPECIAL = ["0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
           "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.168.0.0/16", "198.18.0.0/15",
           "198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4"]
# We refuse all of 192.0.0.0/24 (IETF protocol assignments); Python marks only parts of
# it non-global. Python calls multicast "global"; we refuse it.
EXTRA_REFUSED = [ipaddress.ip_network("192.0.0.0/24")]


def reference_allowed(a: ipaddress.IPv4Address) -> bool:
    if a.is_multicast or any(a in n for n in EXTRA_REFUSED):
        return False
    return a.is_global


def sample_addresses(rng):
    addrs = set()
    for net in map(ipaddress.ip_network, SPECIAL):
        lo, hi = int(net.network_address), int(net.broadcast_address)
        for v in (lo - 1, lo, lo + 1, hi - 1, hi, hi + 1):
            if 0 <= v < 2**32:
                addrs.add(v)
        for _ in range(100):
            addrs.add(rng.randint(lo, hi))
    for _ in range(3000):
        addrs.add(rng.getrandbits(32))
    return sorted(addrs)


def classify(lines):
    out = run([tool("pm_addr_tool")], input="\n".join(lines) + "\n").stdout.splitlines()
    assert len(out) == len(lines)
    return [(x.split(" ")[1], x.split(" ")[2] == "1") for x in out]


def test_ipv4_and_mapped_match_ipaddress():
    rng = random.Random(1234)
    values = sample_addresses(rng)
    dotted = [str(ipaddress.IPv4Address(v)) for v in values]
    mapped = ["::ffff:" + d for d in dotted]
    got = classify(dotted + mapped)
    n = len(values)
    for i, v in enumerate(values):
        a = ipaddress.IPv4Address(v)
        want = reference_allowed(a)
        assert got[i][1] == want, (dotted[i], got[i])
        assert got[n + i] == got[i], (mapped[i], got[n + i], got[i])  # mapped = embedded v4
        if a.is_loopback:
            assert got[i][0] == "loopback"
        if a.is_link_local:
            assert got[i][0] == "link-local"
        if a.is_multicast:
            assert got[i][0] == "multicast"


def test_numeric_spellings_match_inet_aton():
    rng = random.Random(99)
    values = [rng.getrandbits(32) for _ in range(500)] + [0x7F000001, 0xA9FEA9FE, 0x0A000001]
    spellings = []
    for v in values:
        b = v.to_bytes(4, "big")
        spellings += [str(v), hex(v), "0" + oct(v)[2:],
                      f"{b[0]}.{(v & 0xFFFFFF)}", f"{hex(b[0])}.{b[1]}.{(v & 0xFFFF)}",
                      ".".join("0" + oct(x)[2:] if x else "0" for x in b)]
    got = classify(spellings)
    for s, (cls, ok) in zip(spellings, got):
        dotted = socket.inet_ntoa(socket.inet_aton(s))  # the C library's reading
        assert ok == reference_allowed(ipaddress.IPv4Address(dotted)), (s, dotted, cls)
