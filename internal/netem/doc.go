// Package netem makes weak networks for tests: real packet loss and delay
// between network namespaces, on one machine, with no tc netem (this
// kernel has none).
//
// A Topology is three namespaces in a line: the server side (A), a router
// (M) and the client side (B), joined by veth pairs on 10.200.1.0/24 and
// 10.200.2.0/24. The router sends every packet through a TUN device to a
// small forwarder of ours (PacketDelay) that holds it for half the round
// trip, and an nftables rule in the router (`numgen random mod 100 < P
// drop`) drops P% of the packets in each direction. TCP between a client in
// B and a server in A therefore sees the real round trip and real loss, with
// the kernel's own retransmissions and timeouts.
//
// Servers and clients run in the namespaces as child processes (`ip netns
// exec`, see Namespace.Command); Namespace.Do, Listen and Dial make sockets
// inside a namespace from this process. DelayProxy is a userspace TCP proxy
// that only delays (no root needed).
//
// Everything here needs root, `ip` (iproute2), `nft` (Debian package
// nftables) and /dev/net/tun, except DelayProxy and PacketDelay on a device
// of the caller's; Check says what is missing, and Require skips a test
// then. Only the topology's own namespaces are touched, and Close (or the
// test cleanup Require registers) removes them.
package netem
