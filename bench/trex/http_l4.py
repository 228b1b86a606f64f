# TRex ASTF profile: HTTP/1.1 GET with a small fixed response, through an L4
# proxy under test (the data plane, Envoy, HAProxy, nginx stream).
# How to run the whole comparison on real NICs: bench/REAL-NICS.md.
#
#   TRex port 0 (client side)            proxy under test              TRex port 1 (server side)
#   16.0.0.0/16 --SYN--> LISTEN_IP:LISTEN_PORT          proxy --SYN--> UPSTREAM_IP:UPSTREAM_PORT
#   ip 10.10.1.2, default_gw 10.10.1.1   10.10.1.1 | 10.10.2.1         ip 10.10.2.2, default_gw 10.10.2.1
#
# TRex's two sides are independent TCP stacks (the ASTF manual's "DUT is TCP
# proxy" case): the client side opens connections from --client_start ..
# --client_end to the proxy's listener (--server_start .. --server_end,
# port --dport), and the server side accepts whatever connection arrives on
# TRex port 1 with destination port --upstream_port, whatever its IPs (it
# answers with the addresses reversed; the server side matches on the
# destination port only), and plays the HTTP server.
#
# What to configure:
# - /etc/trex_cfg.yaml, port_info: port 0 `ip: 10.10.1.2, default_gw: 10.10.1.1`
#   (the proxy's listen address), port 1 `ip: 10.10.2.2, default_gw: 10.10.2.1`
#   (the proxy's upstream-side address). TRex resolves each gateway by ARP and
#   sends everything of that side to its MAC; it answers ARP for its own ip.
# - the proxy: listen on 10.10.1.1:8080, forward to 10.10.2.2:80 (TRex port 1's
#   own address: on-link, so no route is needed for it; any address routed to
#   TRex port 1 works too, e.g. 48.0.0.1 with `ip route add 48.0.0.0/16 via 10.10.2.2`).
# - the proxy host must route the client range back to TRex port 0:
#   kernel proxies: `ip route add 16.0.0.0/16 via 10.10.1.2`;
#   the data plane: `gateway: 10.10.1.2` on its client-side port.
#
# Tunables (batch: `-t name=value,name=value`; interactive console:
# `start -f bench/trex/http_l4.py -t --name value ...`):
#   client_start, client_end  client source addresses     (16.0.0.0 .. 16.0.255.255)
#   server_start, server_end  addresses the clients connect to = the proxy's
#                             listen address(es)          (10.10.1.1 .. 10.10.1.1)
#   dport                     the proxy's listen port     (8080)
#   upstream_port             the port the proxy forwards to; TRex's server
#                             side serves connections to it (80)
#   requests                  GET requests per connection (1 = a new connection
#                             per request: a connection-rate test; >1: keep-alive)
#   body                      response body bytes          (100)
#   cps                       connections per second at -m 1 (1; so -m N = N conn/s)
#
# Closing order: TRex's server side closes first (after the last response),
# the client waits for that close. So the proxy's upstream socket is closed
# passively and holds no TIME_WAIT: a kernel proxy reaching one upstream
# address:port from one source address would otherwise run out of ephemeral
# ports at about 28k / 60 s = 470 connections/s. (The TIME_WAIT goes to the
# proxy's client-side sockets, which differ by client address and port.)

import argparse
import os

from trex.astf.api import *


def http_request(keep_alive):
    return ('GET / HTTP/1.1\r\n'
            'Host: bench\r\n'
            'User-Agent: trex-astf\r\n'
            + ('' if keep_alive else 'Connection: close\r\n')
            + '\r\n')


def http_response(body, keep_alive):
    return ('HTTP/1.1 200 OK\r\n'
            'Server: trex\r\n'
            'Content-Type: text/plain\r\n'
            'Content-Length: {0}\r\n'.format(body)
            + ('' if keep_alive else 'Connection: close\r\n')
            + '\r\n'
            + 'x' * body)


class Prof1():
    def __init__(self):
        pass  # tunables come through get_profile

    def get_profile(self, tunables, **kwargs):
        parser = argparse.ArgumentParser(description='Argparser for {}'.format(os.path.basename(__file__)),
                                         formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        parser.add_argument('--client_start', type=str, default='16.0.0.0',
                            help='first client (source) address')
        parser.add_argument('--client_end', type=str, default='16.0.255.255',
                            help='last client (source) address')
        parser.add_argument('--server_start', type=str, default='10.10.1.1',
                            help="first address clients connect to: the proxy's listen address")
        parser.add_argument('--server_end', type=str, default='10.10.1.1',
                            help='last address clients connect to')
        parser.add_argument('--dport', type=int, default=8080,
                            help="the proxy's listen port")
        parser.add_argument('--upstream_port', type=int, default=80,
                            help='port the proxy forwards to (served by TRex port 1)')
        parser.add_argument('--requests', type=int, default=1,
                            help='GET requests per connection (1: connection-rate test)')
        parser.add_argument('--body', type=int, default=100,
                            help='response body size in bytes')
        parser.add_argument('--cps', type=float, default=1.0,
                            help='connections per second at -m 1')
        args = parser.parse_args(tunables)
        if args.requests < 1:
            parser.error('--requests must be >= 1')
        if args.body < 0:
            parser.error('--body must be >= 0')

        keep_alive = args.requests > 1
        req = http_request(keep_alive)
        resp = http_response(args.body, keep_alive)

        # Client: connect, then (GET, read the whole response) x requests, then
        # wait for the server side to close. recv() counts bytes cumulatively
        # over the connection, so inside a loop each recv clears its counter.
        prog_c = ASTFProgram()
        prog_s = ASTFProgram()
        if args.requests == 1:
            prog_c.send(req)
            prog_c.recv(len(resp))
            prog_s.recv(len(req))
            prog_s.send(resp)
        else:
            prog_c.set_var('n', args.requests)
            prog_c.set_label('req:')
            prog_c.send(req)
            prog_c.recv(len(resp), clear=True)
            prog_c.jmp_nz('n', 'req:')

            prog_s.set_var('n', args.requests)
            prog_s.set_label('resp:')
            prog_s.recv(len(req), clear=True)
            prog_s.send(resp)
            prog_s.jmp_nz('n', 'resp:')
        prog_c.wait_for_peer_close()
        # The server program ends here: TRex closes its side (FIN) first.

        ip_gen_c = ASTFIPGenDist(ip_range=[args.client_start, args.client_end], distribution='seq')
        ip_gen_s = ASTFIPGenDist(ip_range=[args.server_start, args.server_end], distribution='seq')
        # ip_offset is added to the ranges for each further pair of TRex ports;
        # this setup uses one pair (ports 0/1) and fixed proxy addresses, so 0.
        ip_gen = ASTFIPGen(glob=ASTFIPGenGlobal(ip_offset='0.0.0.0'),
                           dist_client=ip_gen_c,
                           dist_server=ip_gen_s)

        temp_c = ASTFTCPClientTemplate(program=prog_c, ip_gen=ip_gen, port=args.dport, cps=args.cps)
        # The server side picks this template for SYNs to upstream_port (the
        # default association would be port 80 whatever dport is).
        temp_s = ASTFTCPServerTemplate(program=prog_s, assoc=ASTFAssociationRule(port=args.upstream_port))
        template = ASTFTemplate(client_template=temp_c, server_template=temp_s)

        return ASTFProfile(default_ip_gen=ip_gen, templates=template)


def register():
    return Prof1()
