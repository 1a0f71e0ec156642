"""
A UDP datagram written as a whole Ethernet frame on an AF_PACKET socket, below every iptables rule: the way out the
frame guard (rules/frame-guard.ts) closes. Used by e2e ways-out and the container suite (test/container/run.sh).

    python3 raw-frame.py HOST PORT PAYLOAD [MARK PRIORITY]

Out of the device the default route (else any route) leaves by, from the address the kernel would pick, to the
MAC address of HOST where it is a known neighbour, else of the default route's gateway where that is one (once
anything went out through it), else to the broadcast address (a host on the link takes it; a router does not
forward it). MARK and PRIORITY are set on the
socket first (what CAP_NET_RAW lets a job set, Linux 5.17+). Exit 0 when sent, 3 when the socket is refused (no
CAP_NET_RAW), 4 when the send is (ENOBUFS: the device's egress hook dropped the frame).
"""
import socket
import struct
import sys

host, port, payload = sys.argv[1], int(sys.argv[2]), sys.argv[3].encode()
routes = [line.split() for line in open('/proc/net/route').read().splitlines()[1:]]
default = next((r for r in routes if r[1] == '00000000'), None)
dev = default[0] if default else routes[0][0]
gateway = socket.inet_ntoa(struct.pack('<I', int(default[2], 16))) if default else None
probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
probe.connect((host, port))  # sends nothing: picks the source address
source = probe.getsockname()[0]
neighbours = {n[0]: n[3] for n in (l.split() for l in open('/proc/net/arp').read().splitlines()[1:]) if n[5] == dev and n[3] != '00:00:00:00:00:00'}
mac = neighbours.get(host) or neighbours.get(gateway)
destination = bytes.fromhex(mac.replace(':', '')) if mac else b'\xff' * 6
try:
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
except PermissionError as e:
    sys.stderr.write('AF_PACKET refused: %s\n' % e)
    sys.exit(3)
s.bind((dev, 0))
if len(sys.argv) > 5:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, struct.pack('I', int(sys.argv[4])))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY, struct.pack('I', int(sys.argv[5])))


def checksum(b):
    total = sum(struct.unpack('!%dH' % (len(b) // 2), b))
    total = (total >> 16) + (total & 0xffff)
    return ~(total + (total >> 16)) & 0xffff


udp = struct.pack('!HHHH', 40000, port, 8 + len(payload), 0) + payload
ip = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, socket.inet_aton(source), socket.inet_aton(host))
ip = ip[:10] + struct.pack('!H', checksum(ip)) + ip[12:]
try:
    s.send(destination + s.getsockname()[4] + b'\x08\x00' + ip + udp)
except OSError as e:
    # The device's egress hook dropped it (NET_XMIT_DROP reaches the sender as ENOBUFS).
    sys.stderr.write('send refused: %s\n' % e)
    sys.exit(4)
