// Package netnstest keeps tests that multicast (mDNS) out of the machine's
// root network namespace, where multicast would leave through the real
// network card.
//
// A test that multicasts starts with
//
//	if !netnstest.Run(t, netnstest.Opts{}) {
//		return // the parent: the test ran in a child process, in a fresh netns
//	}
//	... the scenario, now inside a private network namespace ...
//
// Run re-executes the test binary for that one test (or benchmark) under
// `unshare -n` (or `ip netns exec NAME` for namespaces the test made with
// NewHosts), with an environment marker. The child checks that its network
// namespace is not the one of PID 1 (it fails loudly if it is), brings lo up
// with the MULTICAST flag and a 224.0.0.0/4 route, and runs the scenario.
// Where no namespace can be made (not root), Run skips the test with a
// message that says so.
package netnstest
