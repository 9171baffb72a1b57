// Package mdns is the discovery backend for one machine or one LAN
// (--resolver mdns): every sidecar announces its instance with multicast
// DNS (RFC 6762, DNS-SD records of service type _meshd._tcp) and listens to
// everyone else's announcements, continuously.
//
// An instance is a PTR _meshd._tcp.local. → {app}-{random}._meshd._tcp.local.,
// an SRV and A record, and a TXT record that carries what callers use:
//
//	v=1 app=orders ns=default addr=10.0.0.5:50002 health=1
//
// Resolution never sends a packet: the Cache is fed by what the socket
// hears. Timing (TTL 5s by default, see Config):
//   - a new sidecar queries at start (everyone answers at once) and
//     announces itself at 0, 250ms and 1s, so callers see it within
//     milliseconds (2s at worst, with losses);
//   - it re-announces every TTL/3; a caller that has not heard from an
//     instance for 80% of the TTL asks it directly once;
//   - a graceful shutdown sends a goodbye (TTL 0), twice: callers drop the
//     instance at once;
//   - an instance that dies silently is dropped when its TTL runs out (5s);
//     the caller's outlier ejection takes it out earlier on the first
//     refused connection;
//   - the local app's health (discovery.LocalHealthSetter, fed by the app
//     health checker) is the TXT health flag; callers keep unhealthy
//     instances out of their pickers (the app stays known: Pick answers
//     "no healthy endpoint" when none is left).
//
// Namespace-aware: the target is (app, ns) from the TXT record. Records
// that do not validate are ignored. IPv4 only (group 224.0.0.251, port
// 5353, shared with other mDNS speakers via SO_REUSEPORT).
//
// Multicast must be available on at least one selected interface; if not,
// Build fails with ErrNoMulticast and a hint (on Linux:
// ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo).
// Importing the package registers the backend under the name "mdns".
package mdns
