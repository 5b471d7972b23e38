#!/usr/bin/env python3
"""Userspace stand-in for `tc qdisc ... netem delay D [J] loss P%` on kernels built without
sch_netem (CONFIG_NET_SCH_NETEM unset).

Run inside a node's network namespace after an iptables rule sends the packets to shape to
NFQUEUE number QUEUE (with --queue-bypass, so packets pass untouched when this program is not
running). Every queued packet is held for DELAY_MS (plus a uniform jitter of +-JITTER_MS), then
accepted, or dropped with probability LOSS_PERCENT/100. Order is kept (like netem without
reordering). Only the Python standard library is used: NFQUEUE is spoken over a raw netlink
socket.

usage: netem.py QUEUE DELAY_MS JITTER_MS LOSS_PERCENT
"""

import heapq
import os
import random
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQA_CFG_QUEUE_MAXLEN = 3
NFQA_CFG_MASK = 4
NFQA_CFG_FLAGS = 5
NFQA_CFG_F_FAIL_OPEN = 1
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST = 1
NLM_F_ACK = 4
NLMSG_ERROR = 2
NF_DROP = 0
NF_ACCEPT = 1


def align(n):
    return (n + 3) & ~3


def attr(kind, payload):
    hdr = struct.pack("=HH", 4 + len(payload), kind)
    return hdr + payload + b"\0" * (align(len(payload) + 4) - len(payload) - 4)


class Queue:
    def __init__(self, num):
        self.num = num
        self.seq = 0
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        self.sock.bind((0, 0))

    def send(self, msg_type, attrs, ack=False):
        self.seq += 1
        body = struct.pack("!BBH", socket.AF_UNSPEC, 0, self.num) + b"".join(attrs)
        flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
        kind = (NFNL_SUBSYS_QUEUE << 8) | msg_type
        self.sock.send(struct.pack("=IHHII", 16 + len(body), kind, flags, self.seq, 0) + body)
        if ack:
            data = self.sock.recv(65536)
            _, t, _, _, _ = struct.unpack_from("=IHHII", data)
            if t == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, 16)
                if err != 0:
                    raise OSError(-err, os.strerror(-err))

    def bind(self):
        self.send(NFQNL_MSG_CONFIG, [attr(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0))], True)
        self.send(NFQNL_MSG_CONFIG, [attr(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))], True)
        self.send(NFQNL_MSG_CONFIG, [attr(NFQA_CFG_QUEUE_MAXLEN, struct.pack("!I", 65536))], True)
        self.send(
            NFQNL_MSG_CONFIG,
            [
                attr(NFQA_CFG_MASK, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)),
                attr(NFQA_CFG_FLAGS, struct.pack("!I", NFQA_CFG_F_FAIL_OPEN)),
            ],
            True,
        )

    def verdict(self, packet_id, verdict):
        self.send(NFQNL_MSG_VERDICT, [attr(NFQA_VERDICT_HDR, struct.pack("!II", verdict, packet_id))])

    def packets(self, data):
        """Yields the packet ids of the NFQUEUE packet messages in one datagram."""
        off = 0
        while off + 16 <= len(data):
            length, kind, _, _, _ = struct.unpack_from("=IHHII", data, off)
            if length < 16:
                break
            if kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                a = off + 20
                end = off + length
                while a + 4 <= end:
                    alen, akind = struct.unpack_from("=HH", data, a)
                    if alen < 4:
                        break
                    if (akind & 0x7FFF) == NFQA_PACKET_HDR:
                        (pid,) = struct.unpack_from("!I", data, a + 4)
                        yield pid
                        break
                    a += align(alen)
            off += align(length)


def main():
    num, delay_ms, jitter_ms, loss = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
    q = Queue(num)
    q.bind()
    print("netem.py: bound to queue %d" % num, flush=True)
    pending = []  # heap of (due, seq, packet id, verdict)
    seq = 0
    last_due = 0.0
    while True:
        timeout = None
        if pending:
            timeout = max(0.0, pending[0][0] - time.monotonic())
        ready, _, _ = select.select([q.sock], [], [], timeout)
        if ready:
            try:
                data = q.sock.recv(1 << 20)
            except OSError:  # ENOBUFS: the kernel dropped messages; keep going
                data = b""
            now = time.monotonic()
            for pid in q.packets(data):
                due = now + max(0.0, delay_ms + random.uniform(-jitter_ms, jitter_ms)) / 1000.0
                due = max(due, last_due)  # no reordering
                last_due = due
                verdict = NF_DROP if random.random() * 100.0 < loss else NF_ACCEPT
                seq += 1
                heapq.heappush(pending, (due, seq, pid, verdict))
        now = time.monotonic()
        while pending and pending[0][0] <= now:
            _, _, pid, verdict = heapq.heappop(pending)
            q.verdict(pid, verdict)


if __name__ == "__main__":
    main()
